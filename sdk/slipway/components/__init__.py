"""KFP components: one module per step, each a thin wrapper that calls one function of `slipway.steps`.

Imports `slipway.steps` (inside component bodies, which KFP runs in the task) and `slipway.core`; nothing else.
"""
