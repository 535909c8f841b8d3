"""Shared fixtures: digits and tabular splits with an honest model, and a real monitor on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression

from benchmarks import monitoring as bench
from slipway.monitoring.window import Samples, save_samples
from slipway.serving.server import free_port


@dataclass
class Split:
    """A model trained on its own split, a reference set, and a disjoint pool to draw windows from."""

    model: LogisticRegression
    ref_x: np.ndarray
    ref_y: np.ndarray
    pool_x: np.ndarray
    pool_y: np.ndarray

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x.reshape(len(x), -1)).astype(np.float32)


@pytest.fixture(scope="session")
def digits() -> Split:
    """sklearn digits as 1x8x8 images: 400 train the model, 700 are the reference, 697 the window pool."""
    data = load_digits()
    x = data.images[:, None].astype(np.float32)
    y = data.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(y))
    tr, ref, pool = idx[:400], idx[400:1100], idx[1100:]
    model = LogisticRegression(max_iter=2000).fit(x[tr].reshape(len(tr), -1), y[tr])
    return Split(model, x[ref], y[ref], x[pool], y[pool])


@pytest.fixture(scope="session")
def tabular() -> Split:
    """make_classification, 10 features: 2,000 train, 5,000 reference, 10,000 pool (20 disjoint windows)."""
    x, y = make_classification(n_samples=17_000, n_features=10, n_informative=5, n_classes=3, random_state=0)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=2000).fit(x[:2000], y[:2000])
    return Split(model, x[2000:7000], y[2000:7000], x[7000:], y[7000:])


@pytest.fixture(scope="session")
def digits_reference(digits: Split, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "reference.npz"
    return save_samples(Samples(digits.ref_x, digits.ref_y, digits.probs(digits.ref_x)), path)


@dataclass
class RunningMonitor:
    url: str
    port: int
    data_dir: Path
    proc: object


def start(data_dir: Path, reference: Path | None = None, extra: list[str] | None = None) -> RunningMonitor:
    """Start the real `monitor serve` CLI in a subprocess on a free 127.0.0.1 port."""
    port = free_port()
    args = list(extra or [])
    if reference is not None:
        args += ["--reference", str(reference)]
    proc = bench.start_monitor(data_dir, port, args)
    return RunningMonitor(f"http://127.0.0.1:{port}", port, data_dir, proc)


@pytest.fixture(scope="module")
def monitor(digits_reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMonitor]:
    """One monitor for a test module: digits reference, drift only on demand, 64 KiB body limit."""
    running = start(
        tmp_path_factory.mktemp("monitor") / "data",
        digits_reference,
        ["--drift-every", "0", "--window-size", "200", "--max-body-bytes", "65536"],
    )
    yield running
    bench.stop_monitor(running.proc)  # type: ignore[arg-type]


@pytest.fixture
def client(monitor: RunningMonitor) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=monitor.url, timeout=30) as c:
        yield c


def v2_request(sample: np.ndarray, name: str = "input") -> dict:
    """An Open Inference Protocol v2 request body for a batch of samples."""
    return {
        "inputs": [
            {"name": name, "shape": list(sample.shape), "datatype": "FP32", "data": sample.ravel().tolist()}
        ]
    }


def v2_response(probs: np.ndarray, name: str = "probs") -> dict:
    return {
        "outputs": [
            {"name": name, "shape": list(probs.shape), "datatype": "FP32", "data": probs.ravel().tolist()}
        ]
    }


def triton_request(x: np.ndarray, request_id: str = "", name: str = "input") -> tuple[bytes, int]:
    """A binary request body exactly as tritonclient builds it, and its JSON header's length."""
    tensor = triton_http.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [tensor], request_id=request_id
    )
    assert header_length is not None and header_length < len(body)
    return body, header_length


def binary_headers(event_id: str, kind: str = "request") -> dict[str, str]:
    """Headers KServe's payload logger sends in binary content mode."""
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": "digits",
        "ce-namespace": "default",
        "ce-component": "predictor",
        "ce-endpoint": "default",
    }
