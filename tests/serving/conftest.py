"""Shared fixtures: a small Triton repository exported with the project's own exporter, and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
from k8s_double import FakeClock, KServeDouble
from kubernetes import client as k8s
from serving_helpers import INPUT_SHAPE, digits_cnn, make_repo

from slipway.compression.onnx_export import export_onnx
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    export_onnx(digits_cnn(), INPUT_SHAPE, path)
    return path


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory, onnx_model: Path) -> Path:
    return make_repo(tmp_path_factory.mktemp("serving"), onnx_model)


@pytest.fixture(scope="session")
def reference(onnx_model: Path) -> ort.InferenceSession:
    """In-process ONNX Runtime on the same file: what every served result must equal."""
    return ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[ServerHandle]:
    options = ServerOptions(max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)
    with start_server(model_repo, threads=1, options=options) as handle:
        yield handle


# The Kubernetes API double (rollout and experiment tests): time is a FakeClock shared with the waits.
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def double(clock: FakeClock) -> Iterator[KServeDouble]:
    server = KServeDouble(ready_after_s=0.05, clock=clock).start()  # Ready after 3 polls of 0.02 s
    yield server
    server.stop()


@pytest.fixture
def api(double: KServeDouble) -> k8s.CustomObjectsApi:
    """The real kubernetes client, talking HTTP to the double."""
    config = k8s.Configuration()
    config.host = double.url
    return k8s.CustomObjectsApi(k8s.ApiClient(config))
