"""The Slipway inference client and the `serve`/`smoke` commands, against a live local server."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from serving_helpers import images

from slipway.cli.serve import serve, smoke
from slipway.core.errors import NotFoundError, SlipwayError
from slipway.serving.client import InferenceClient, smoke_test
from slipway.serving.server import ServerHandle, free_port, start_server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_infer_equals_onnxruntime(
    server: ServerHandle, reference: ort.InferenceSession, protocol: str
) -> None:
    url = server.url if protocol == "http" else server.grpc_url
    x = images(7, seed=9)
    with InferenceClient(url, protocol) as client:  # type: ignore[arg-type]
        assert client.is_live() and client.is_ready() and client.is_model_ready("pair")
        out = client.infer("pair", x)
        assert client.config("pair")["max_batch_size"] == 16
        assert client.metadata("pair")["inputs"][0]["shape"] == [-1, 1, 8, 8]
    np.testing.assert_allclose(out, reference.run(["logits"], {"input": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_smoke_test_reports_and_fails_clearly(server: ServerHandle, protocol: str) -> None:
    url = server.url if protocol == "http" else server.grpc_url
    report = smoke_test(url, "digits", protocol)  # type: ignore[arg-type]
    assert (
        report["output_shape"] == [1, 10] and report["max_batch_size"] == 64 and report["versions"] == ["1"]
    )
    with pytest.raises(NotFoundError, match="nope"):
        smoke_test(url, "nope", protocol, timeout_s=2)  # type: ignore[arg-type]


def test_client_reports_unreachable_server() -> None:
    with pytest.raises(SlipwayError, match="not ready within"):
        smoke_test(f"127.0.0.1:{free_port()}", "digits", "http", timeout_s=0.5)


def test_smoke_command(server: ServerHandle) -> None:
    result = CliRunner().invoke(smoke, ["--url", server.grpc_url, "--model", "direct", "--protocol", "grpc"])
    assert result.exit_code == 0, result.output
    assert '"output_shape": [\n    1,\n    10\n  ]' in result.output
    result = CliRunner().invoke(smoke, ["--url", server.url, "--model", "nope", "--timeout-s", "1"])
    assert result.exit_code != 0 and "smoke test failed" in result.output


def test_serve_command_serves_and_stops_on_sigterm(model_repo: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "slipway", "serve", str(model_repo), "--http-port", str(http_port)]
    argv += ["--metrics-port", str(free_port())]  # not Triton's default 8002: it may be taken here
    proc = subprocess.Popen([*argv, "--grpc-port", str(grpc_port), "--threads", "1"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert smoke_test(f"127.0.0.1:{grpc_port}", "digits", "grpc")["output_shape"] == [1, 10]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{http_port}/v2/health/live")


def test_serve_command_refuses_bad_repository(tmp_path: Path) -> None:
    result = CliRunner().invoke(serve, [str(tmp_path)])
    assert result.exit_code != 0 and "holds no model" in result.output


def test_start_server_context_manager_stops(model_repo: Path) -> None:
    with start_server(model_repo, threads=1) as handle:
        assert httpx.get(f"{handle.url}/v2/health/ready").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/v2/health/ready")


def test_urls_keep_their_path_prefix_and_scheme() -> None:
    """A model behind an ingress path (or a revision URL with a path) is reached at that path over HTTP."""
    from slipway.serving.client import _split_url

    assert _split_url("http://127.0.0.1:8000") == ("127.0.0.1:8000", False)
    assert _split_url("https://models.example/team-a/") == ("models.example:443/team-a", True)
    assert _split_url("127.0.0.1:8001") == ("127.0.0.1:8001", False)
