"""Fixtures shared by every test level: a tiny config, digits splits, a real MLflow SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# The fuzz tests draw the same examples on every run, so the suite fails for a bug, never for a draw; explore new
# examples on purpose with `HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest -k fuzz`.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A config that trains in seconds: enough to exercise every code path, not to reach the demo's accuracy.
FAST = [
    "train.epochs=3",
    "train.patience=3",
    "distill.epochs=3",
    "distill.patience=3",
    "evaluate.warmup=2",
    "evaluate.latency_iterations=20",
    "evaluate.throughput_iterations=3",
    "evaluate.repeats=2",
    "export.parity_samples=64",
    "data.reference_samples=100",
    "compress.prune.finetune.epochs=2",
    "compress.search.enabled=false",  # on in the preset; tests/unit/test_search.py and the search tests run it
    "explain.samples=24",  # every method still runs; tests/unit/test_explain.py checks the numbers
    "explain.steps=8",
    "explain.examples=1",
]


@pytest.fixture(autouse=True)
def no_leaked_mlflow_environment():
    """A test that leaves $MLFLOW_* set would point every later local run at its store: fail it instead."""
    before = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    after = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    assert after == before, (
        f"this test leaked MLflow environment variables: {set(after.items()) ^ set(before.items())}"
    )


@pytest.fixture
def fast_overrides() -> list[str]:
    return list(FAST)


@pytest.fixture
def fast_config(tmp_path: Path):
    """The quickstart preset, shrunk, with its own SQLite MLflow store under tmp_path."""
    from slipway.core.config import load_config
    from slipway.registry import local_store

    uri, artifacts = local_store(tmp_path / "store")
    return load_config(
        "quickstart", [*FAST, f"registry.tracking_uri={uri}", f"registry.artifact_location={artifacts}"]
    )


@pytest.fixture(scope="session")
def digits_splits():
    from slipway.core.config import DataConfig
    from slipway.core.data import load_dataset

    return load_dataset(DataConfig(), seed=0)


@pytest.fixture
def signal_npz(tmp_path: Path) -> Path:
    """A learnable 1D signal dataset (N, 1, L): class k is a bump at position k."""
    rng = np.random.default_rng(0)
    n, length, classes = 300, 32, 3
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, 1, length)).astype(np.float32)
    for i, k in enumerate(y):
        x[i, 0, 4 + 10 * k : 10 + 10 * k] += 2.0
    path = tmp_path / "signals.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def tabular_npz(tmp_path: Path) -> Path:
    """A learnable tabular dataset (N, F) with a separate test split."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=400, n_features=12, n_informative=6, n_classes=3, class_sep=2.0, random_state=0
    )
    path = tmp_path / "tabular.npz"
    np.savez(path, x=x[:320].astype(np.float32), y=y[:320], x_test=x[320:].astype(np.float32), y_test=y[320:])
    return path
