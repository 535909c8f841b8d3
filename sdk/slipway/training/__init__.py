"""Training: the seeded, resumable training and distillation loop, and DDP plumbing (torchrun, gloo/nccl).

A domain package: imports slipway.core only (and its sibling domain packages); never steps, pipelines or cli.
"""
