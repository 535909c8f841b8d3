"""Helpers shared by the serving tests and fixtures (a module of its own: test dirs have no __init__)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from slipway.core.config import TritonConfig
from slipway.serving.triton_repository import write_model

INPUT_SHAPE = (1, 8, 8)


def digits_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    ).eval()


def make_repo(root: Path, onnx_model: Path) -> Path:
    """digits: dynamic batching; direct: batched, no dynamic_batching; pair: two instances."""
    repo = root / "repo"
    write_model(repo, "digits", onnx_model, TritonConfig(max_batch_size=64, max_queue_delay_us=2000))
    write_model(
        repo,
        "direct",
        onnx_model,
        TritonConfig(max_batch_size=8, preferred_batch_sizes=[], dynamic_batching=False),
    )
    write_model(
        repo,
        "pair",
        onnx_model,
        TritonConfig(max_batch_size=16, preferred_batch_sizes=[4, 8], instance_count=2),
    )
    return repo


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)
