"""Evaluation: quality and latency metrics of a model in one runtime, and the release gate that judges them.

A domain package: imports slipway.core (and sibling domain packages); never steps, pipelines or cli.
"""
