"""A guardrail breach stops the experiment and keeps the champion: `slipway experiment status --watch` in a
subprocess watches a real `slipway serve` (explicit mode, payload logger on a real `slipway monitor serve`) whose
challenger fails on about 20% of inputs (ONNX Runtime refuses them at run time), sees B's error rate over the
limit, stops the experiment keeping A, and exits 3. Traffic goes through tritonclient over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from serving_helpers import INPUT_SHAPE, digits_cnn, images
from torch import nn

from benchmarks.loop import start_process
from slipway.compression.onnx_export import export_onnx
from slipway.core.config import TritonConfig
from slipway.serving.server import ServerHandle, free_port, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.triton_repository import write_model

SLIPWAY = Path(sys.executable).with_name("slipway")
FAIL_ABOVE = 0.8416  # the standard normal's 80th percentile: about 1 input in 5 has its first pixel above


class FailsSometimes(nn.Module):
    """The digits CNN, except that ONNX Runtime fails (an out-of-range gather) on an input whose first pixel is
    above FAIL_ABOVE: a broken challenger that answers most requests and errs on about 20%."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("zero", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = (x.flatten(1)[:, 0] > FAIL_ABOVE).long() * 1000
        return self.base(x) + self.zero[index].unsqueeze(1)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guardrail")
    config = TritonConfig(max_batch_size=8, preferred_batch_sizes=[], dynamic_batching=False)
    export_onnx(digits_cnn(), INPUT_SHAPE, root / "good.onnx")
    export_onnx(FailsSometimes(digits_cnn()), INPUT_SHAPE, root / "broken.onnx")
    write_model(root / "repo", "digits", root / "good.onnx", config, version=1)
    write_model(root / "repo", "digits", root / "broken.onnx", config, version=2)
    return root / "repo"


@pytest.fixture(scope="module")
def served(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerHandle, str]]:
    port = free_port()
    monitor = f"http://127.0.0.1:{port}"
    data = tmp_path_factory.mktemp("monitor")
    command = [
        str(SLIPWAY),
        "monitor",
        "serve",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--drift-every",
        "0",
    ]
    proc = start_process(command, data, dict(os.environ), f"{monitor}/healthz")
    options = ServerOptions(logger_url=f"{monitor}/events", shutdown_grace_s=1.0)
    try:
        with start_server(
            repo, options=options, model_control_mode="explicit", load_models=["digits"], threads=1
        ) as server:
            yield server, monitor
    finally:
        proc.terminate()
        proc.wait(30)


def experiment(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SLIPWAY), "experiment", *args], capture_output=True, text=True, timeout=180, check=False
    )
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
    return done


def send(url: str, x: np.ndarray, prefix: str) -> list[tuple[str, bool]]:
    """One image per request with an id; (answering version or "", succeeded) per request."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    outcomes = []
    for i in range(len(x)):
        tensor = httpclient.InferInput("input", [1, *INPUT_SHAPE], "FP32")
        tensor.set_data_from_numpy(x[i : i + 1])
        try:
            result = client.infer("digits", [tensor], request_id=f"{prefix}-{i}")
            outcomes.append((result.get_response()["model_version"], True))
        except InferenceServerException:
            outcomes.append(("", False))
    return outcomes


def test_a_challenger_erring_on_a_fifth_of_requests_is_stopped_and_the_champion_kept(
    served: tuple[ServerHandle, str], repo: Path
) -> None:
    server, monitor = served
    urls = ("--url", server.url, "--monitor-url", monitor)
    started = experiment("start", "digits", "--a", "1", "--b", "2", "--name", "guard", "--url", server.url)
    assert started.returncode == 0
    x = images(400, seed=5)
    outcomes = send(server.url, x, "guard")
    broken = x.reshape(len(x), -1)[:, 0] > FAIL_ABOVE
    failed = np.array([not ok for _, ok in outcomes])
    assert failed.any() and not (failed & ~broken).any()  # only B fails, only on the inputs it cannot take

    watched = experiment(
        "status", "digits", *urls, "--watch", "--poll-interval", "0.5s", "--timeout", "60s", "-o", "json"
    )
    assert watched.returncode == 3, watched.returncode
    document: dict[str, Any] = json.loads(watched.stdout)
    decision, health = document["decision"], document["health"]
    assert decision["verdict"] == "guardrail_breached" and decision["final"], decision
    assert health["a"]["errors"] == 0 and health["b"]["errors"] == int(failed.sum())
    assert health["b"]["errors"] / health["b"]["requests"] > 0.1, health
    assert document["stopped"]["kept"]["version"] == "1", document["stopped"]

    metadata = httpx.get(f"{server.url}/v2/models/digits", timeout=10).json()
    assert metadata["versions"] == ["1"]
    assert httpx.get(f"{server.url}/v2/models/digits/experiment", timeout=10).status_code == 404
    assert not (repo / "digits" / "2").exists()  # the losing, newer version left the served repository
    after = send(server.url, x[broken][:20], "after")
    assert all(ok and version == "1" for version, ok in after)  # the inputs B failed on: A answers them all
