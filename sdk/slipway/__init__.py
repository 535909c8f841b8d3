"""Slipway: take a PyTorch model from training to a gated, monitored Triton service, locally or on Kubeflow."""

__version__ = "0.1.0"
