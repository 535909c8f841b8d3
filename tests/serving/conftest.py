"""Shared fixtures: a small Triton repository exported with the project's own exporter, and a running server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest
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
