"""Triton's metrics port on `slipway serve`: `nv_inference_*` with Triton's names, types and labels, equal to the
statistics extension's numbers, beside the `slipway_*` series.

A real server is started (`start_server`), driven with tritonclient (HTTP and gRPC), and its metrics port scraped
and parsed with prometheus_client's own parser, as Prometheus would read Triton's `:8002/metrics`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from serving_helpers import images
from tritonclient.utils import InferenceServerException

from slipway.core.errors import ModelExecutionError, OverloadedError, RequestTimeoutError, SlipwayError
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.stats import FAILURE_REASONS, ModelStats, TritonMetrics, failure_reason

# Triton's per-model counters (all labelled model + version); the duration counters in microseconds.
COUNTERS = {
    "nv_inference_request_success": lambda s: s["inference_stats"]["success"]["count"],
    "nv_inference_count": lambda s: s["inference_count"],
    "nv_inference_exec_count": lambda s: s["execution_count"],
    "nv_inference_request_duration_us": lambda s: s["inference_stats"]["success"]["ns"] // 1000,
    "nv_inference_queue_duration_us": lambda s: s["inference_stats"]["queue"]["ns"] // 1000,
    "nv_inference_compute_input_duration_us": lambda s: s["inference_stats"]["compute_input"]["ns"] // 1000,
    "nv_inference_compute_infer_duration_us": lambda s: s["inference_stats"]["compute_infer"]["ns"] // 1000,
    "nv_inference_compute_output_duration_us": lambda s: s["inference_stats"]["compute_output"]["ns"] // 1000,
}
MODELS = ["digits", "direct", "pair"]


@pytest.fixture(scope="module")
def running(model_repo: Path) -> Iterator[ServerHandle]:
    """A server of this module's own, so that the counts below are only this module's requests."""
    options = ServerOptions(max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)
    with start_server(model_repo, threads=1, options=options) as handle:
        yield handle


def http_infer(client: triton_http.InferenceServerClient, model: str, rows: int, **kwargs: Any) -> None:
    x = images(rows)
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(model, [tensor], **kwargs)


def grpc_infer(client: triton_grpc.InferenceServerClient, model: str, rows: int) -> None:
    x = images(rows)
    tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(model, [tensor])


def scrape(handle: ServerHandle) -> tuple[str, dict[str, Any]]:
    """The metrics port's text and its families by name (counters keyed without `_total`, as the parser does)."""
    assert handle.metrics_url is not None
    response = httpx.get(handle.metrics_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text, {f.name: f for f in text_string_to_metric_families(response.text)}


def settled(handle: ServerHandle) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    """A scrape between two equal statistics answers: nothing ran in between, so both must agree exactly."""
    deadline = time.monotonic() + 10
    while True:
        before = httpx.get(f"{handle.url}/v2/models/stats").json()["model_stats"]
        text, families = scrape(handle)
        after = httpx.get(f"{handle.url}/v2/models/stats").json()["model_stats"]
        if before == after:
            return text, families, {s["name"]: s for s in after}
        assert time.monotonic() < deadline, "statistics never settled"
        time.sleep(0.05)


def samples(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}


def test_metrics_port_is_triton_shaped_and_agrees_with_statistics(running: ServerHandle) -> None:
    assert running.metrics_port not in (None, 0, running.http_port, running.grpc_port)
    http = triton_http.InferenceServerClient(running.url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(running.grpc_url)
    for rows in (1, 3, 5):
        http_infer(http, "digits", rows)
        grpc_infer(grpc, "digits", rows)
    for rows in (2, 8):
        http_infer(http, "direct", rows)
    # One request that cannot finish within its own timeout (Triton's `timeout`, 1 us): refused, REJECTED.
    with pytest.raises(InferenceServerException):
        http_infer(http, "pair", 1, timeout=1)

    text, families, stats = settled(running)
    for name in COUNTERS:
        assert families[name].type == "counter", name
        by_labels = samples(families, name)
        assert set(by_labels) == {(("model", m), ("version", "1")) for m in MODELS}, name
        for model in MODELS:
            assert by_labels[(("model", model), ("version", "1"))] == COUNTERS[name](stats[model]), (
                name,
                model,
            )
            # Triton's exposition: counters without a `_total` suffix, labels model and version.
            assert f'{name}{{model="{model}",version="1"}} ' in text
    assert stats["digits"]["inference_stats"]["success"]["count"] == 6
    assert stats["digits"]["inference_count"] == 18
    assert stats["direct"]["inference_count"] == stats["direct"]["execution_count"] * 5 == 10  # no batching

    failures = samples(families, "nv_inference_request_failure")
    assert families["nv_inference_request_failure"].type == "counter"
    assert set(failures) == {
        (("model", m), ("reason", r), ("version", "1")) for m in MODELS for r in FAILURE_REASONS
    }
    for model in MODELS:
        total = sum(failures[(("model", model), ("reason", r), ("version", "1"))] for r in FAILURE_REASONS)
        assert total == stats[model]["inference_stats"]["fail"]["count"]
    assert failures[(("model", "pair"), ("reason", "REJECTED"), ("version", "1"))] == 1
    assert failures[(("model", "digits"), ("reason", "REJECTED"), ("version", "1"))] == 0

    pending = samples(families, "nv_inference_pending_request_count")
    assert families["nv_inference_pending_request_count"].type == "gauge"
    assert pending == {(("model", m), ("version", "1")): 0.0 for m in MODELS}

    # The slipway_* series are on the metrics port too, and the HTTP port's /metrics is unchanged.
    assert 'slipway_inference_requests_total{model="digits",protocol="grpc"} 3.0' in text
    http_text = httpx.get(f"{running.url}/metrics").text
    assert 'slipway_inference_requests_total{model="digits",protocol="http"} 3.0' in http_text
    assert "nv_inference" not in http_text


def test_metrics_port_serves_only_metrics(running: ServerHandle) -> None:
    base = f"http://{running.metrics_host}:{running.metrics_port}"
    assert httpx.get(f"{base}/v2/health/ready").status_code == 404
    assert httpx.post(f"{base}/metrics").status_code == 405


def test_unloaded_model_series_go_and_a_reload_restarts_them(model_repo: Path) -> None:
    with start_server(
        model_repo, threads=1, model_control_mode="explicit", load_models=["digits", "direct"]
    ) as handle:
        http = triton_http.InferenceServerClient(handle.url.removeprefix("http://"))
        http_infer(http, "direct", 2)
        _, families = scrape(handle)
        assert samples(families, "nv_inference_count")[(("model", "direct"), ("version", "1"))] == 2
        http.unload_model("direct")
        text, families = scrape(handle)
        assert 'model="direct"' not in text.split("# HELP slipway_")[0]  # Triton drops an unloaded model's
        assert {labels for labels in samples(families, "nv_inference_count")} == {
            (("model", "digits"), ("version", "1"))
        }
        http.load_model("direct")  # statistics start from zero with each load, and so do the series
        _, families = scrape(handle)
        assert samples(families, "nv_inference_count")[(("model", "direct"), ("version", "1"))] == 0


def test_metrics_off_and_flags(model_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_server(model_repo, threads=1, metrics_port=None) as handle:
        assert handle.metrics_port is None and handle.metrics_url is None
        assert httpx.get(f"{handle.url}/v2/health/ready").status_code == 200

    import slipway.serving.server as server_module
    from slipway.cli.serve import serve

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server_module, "run_server", lambda *args, **kwargs: calls.append(kwargs))
    for argv, expected in (
        ([], (8002, None)),  # Triton's default port, bound to --host
        (["--metrics-port", "9102", "--metrics-address", "0.0.0.0"], (9102, "0.0.0.0")),
        (["--allow-metrics", "false"], (None, None)),
        (["--allow-metrics=false", "--metrics-port", "9102"], (None, None)),
    ):
        result = CliRunner().invoke(serve, [str(model_repo), *argv])
        assert result.exit_code == 0, result.output
        assert (calls[-1]["metrics_port"], calls[-1]["metrics_host"]) == expected, argv
    result = CliRunner().invoke(serve, [str(model_repo), "--allow-metrics", "maybe"])
    assert result.exit_code != 0 and "--allow-metrics" in result.output


def test_a_taken_metrics_port_refuses_the_start(model_repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SlipwayError, match=f"metrics port 127.0.0.1:{port}: cannot listen"):
            start_server(model_repo, threads=1, metrics_port=port, startup_timeout_s=30)


def test_subprocess_server_takes_the_metrics_flags(model_repo: Path) -> None:
    with start_server(model_repo, threads=1, subprocess_mode=True) as handle:
        _, families = scrape(handle)
        assert (("model", "digits"), ("version", "1")) in samples(families, "nv_inference_request_success")


def test_failure_reasons_follow_triton() -> None:
    assert failure_reason(OverloadedError("queue full")) == "REJECTED"
    assert failure_reason(RequestTimeoutError("timed out")) == "REJECTED"
    assert failure_reason(ModelExecutionError("ORT failed")) == "BACKEND"
    assert failure_reason(SlipwayError("other")) == "OTHER"
    import asyncio

    assert failure_reason(asyncio.CancelledError()) == "CANCELED"


def test_render_is_triton_text_exposition() -> None:
    stats = ModelStats('we"ird', "3")
    stats.record_request(True, 2_500_999, rows=4)
    stats.record_request(False, 1_000, reason="BACKEND")
    stats.record_batch(rows=4, requests=1, queue_ns=1_999, input_ns=10_000, infer_ns=2_000_000, output_ns=500)
    text = TritonMetrics(lambda: [(stats, 2)]).render().decode()
    assert "# TYPE nv_inference_request_success counter\n" in text
    for line in (
        'nv_inference_request_success{model="we\\"ird",version="3"} 1',
        'nv_inference_count{model="we\\"ird",version="3"} 4',
        'nv_inference_exec_count{model="we\\"ird",version="3"} 1',
        'nv_inference_request_duration_us{model="we\\"ird",version="3"} 2500',
        'nv_inference_queue_duration_us{model="we\\"ird",version="3"} 1',
        'nv_inference_compute_input_duration_us{model="we\\"ird",version="3"} 10',
        'nv_inference_compute_infer_duration_us{model="we\\"ird",version="3"} 2000',
        'nv_inference_compute_output_duration_us{model="we\\"ird",version="3"} 0',
        'nv_inference_request_failure{model="we\\"ird",reason="BACKEND",version="3"} 1',
        'nv_inference_request_failure{model="we\\"ird",reason="REJECTED",version="3"} 0',
        'nv_inference_pending_request_count{model="we\\"ird",version="3"} 2',
    ):
        assert line + "\n" in text, line
    assert "# TYPE nv_inference_pending_request_count gauge\n" in text
    assert list(text_string_to_metric_families(text))  # parses
