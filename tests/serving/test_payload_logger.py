"""`slipway serve --logger-url`: every inference reaches the drift monitor as KServe's logger would send it.

A real server (in a subprocess, as users run it) posts to a real `slipway monitor serve` on 127.0.0.1; clients
are tritonclient over HTTP (binary and JSON tensors) and gRPC. An unreachable sink never fails a request.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_helpers import images

from benchmarks import monitoring as bench
from slipway.serving.server import free_port, start_server
from slipway.serving.service import ServerOptions


def _events(monitor: str, expected: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = httpx.get(f"{monitor}/v1/events", params={"limit": 1000}, timeout=10).json()["events"]
        if len(events) >= expected:
            return events
        time.sleep(0.2)
    raise AssertionError(f"fewer than {expected} events captured within 30 s: {events}")


def _infer_all_ways(http_url: str, grpc_url: str, x: np.ndarray) -> list[np.ndarray]:
    outputs = []
    with httpclient.InferenceServerClient(http_url.removeprefix("http://")) as client:
        for binary, request_id in ((True, "bin-1"), (False, "json-1")):
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs.append(client.infer("digits", [tensor], request_id=request_id).as_numpy("logits"))
    client = grpcclient.InferenceServerClient(grpc_url.removeprefix("grpc://"))
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs.append(client.infer("digits", [tensor], request_id="grpc-1").as_numpy("logits"))
    client.close()
    return outputs


def test_every_inference_is_captured_with_its_id_model_and_tensors(model_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    monitor_proc = bench.start_monitor(tmp_path / "data", port, ["--drift-every", "0"])
    monitor = f"http://127.0.0.1:{port}"
    x = images(3, seed=5)
    try:
        options = ServerOptions(logger_url=f"{monitor}/events")
        with start_server(model_repo, options=options, subprocess_mode=True) as server:
            outputs = _infer_all_ways(server.url, server.grpc_url, x)
            events = _events(monitor, 6)
            metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        window = httpx.get(f"{monitor}/v1/window", params={"size": 9}, timeout=10)
    finally:
        bench.stop_monitor(monitor_proc)
    kinds = sorted((e["id"], e["kind"]) for e in events)
    assert kinds == sorted((i, k) for i in ("bin-1", "json-1", "grpc-1") for k in ("request", "response"))
    assert {(e["model_name"], e["model_version"]) for e in events} == {("digits", "1")}
    assert 'slipway_logger_events_total{outcome="sent"} 6.0' in metrics
    import io

    with np.load(io.BytesIO(window.content)) as w:  # the tensors arrived intact, joined by id
        np.testing.assert_allclose(w["x"], np.concatenate([x, x, x]), rtol=1e-6)
        np.testing.assert_allclose(w["probs"], np.concatenate(outputs), rtol=1e-5)


def test_an_unreachable_sink_drops_events_and_never_fails_a_request(model_repo: Path) -> None:
    options = ServerOptions(logger_url=f"http://127.0.0.1:{free_port()}/events")
    with start_server(model_repo, options=options, subprocess_mode=True) as server:
        outputs = _infer_all_ways(server.url, server.grpc_url, images(2, seed=6))
        assert all(o.shape == (2, 10) for o in outputs)
        deadline = time.monotonic() + 30
        while 'slipway_logger_events_total{outcome="dropped"} 6.0' not in (
            metrics := httpx.get(f"{server.url}/metrics", timeout=10).text
        ):
            assert time.monotonic() < deadline, metrics[-2000:]
            time.sleep(0.2)
