"""`slipway monitor serve --restricted-api`: the real monitor (CLI in a subprocess) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from benchmarks import monitoring as bench
from slipway.cli.monitor import monitor_group

from .conftest import RunningMonitor, Split, binary_headers, start, v2_request

SECRET = "m0nitor:s3cret=x"
KEY = {"X-Monitor-Key": SECRET}
EXPECTED = "This API is restricted, expecting header 'x-monitor-key'"


@pytest.fixture(scope="module")
def restricted_monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMonitor]:
    """Feedback and admin behind a key; ingest, health and metrics left open. Logs at info (checked last)."""
    running = start(
        tmp_path_factory.mktemp("restricted") / "data",
        extra=["--restricted-api", f"feedback,admin:X-Monitor-Key={SECRET}", "--log-level", "info"],
    )
    yield running
    bench.stop_monitor(running.proc)  # type: ignore[arg-type]


@pytest.fixture
def monitor_client(restricted_monitor: RunningMonitor) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=restricted_monitor.url, timeout=30) as c:
        yield c


def test_feedback_refused_without_the_key_accepted_with_it(monitor_client: httpx.Client) -> None:
    feedback = {"id": "inf-1", "labels": [3]}
    for headers in ({}, {"X-Monitor-Key": "wrong"}, {"X-Monitor-Key": SECRET + "x"}):
        refused = monitor_client.post("/v1/feedback", json=feedback, headers=headers)
        assert refused.status_code == 403
        assert refused.json() == {"error": "Forbidden", "message": EXPECTED}
    accepted = monitor_client.post("/v1/feedback", json=feedback, headers={"x-monitor-key": SECRET})
    assert accepted.status_code == 200 and accepted.json()["stored"] == 1


def test_ingest_stays_open_when_not_listed(monitor_client: httpx.Client, digits: Split) -> None:
    x = digits.pool_x[:2]
    event = monitor_client.post("/events", content=json.dumps(v2_request(x)), headers=binary_headers("inf-2"))
    assert event.status_code == 200 and event.json()["stored"] == 1
    batch = monitor_client.post("/v1/batches", json=[{"id": "inf-3", **v2_request(x)}])
    assert batch.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/events"),
        ("GET", "/v1/variants?model=digits"),
        ("POST", "/v1/drift/run"),
        ("GET", "/v1/window?size=2"),
        ("GET", "/v1/reference"),
        ("GET", "/reports"),
        ("GET", "/reports/some-report"),
    ],
)
def test_admin_routes_need_the_key(monitor_client: httpx.Client, method: str, path: str) -> None:
    refused = monitor_client.request(method, path)
    assert refused.status_code == 403 and refused.json()["message"] == EXPECTED
    admitted = monitor_client.request(method, path, headers=KEY)
    assert admitted.status_code != 403  # the handler answers (200, or 404 for no reference / no such report)


def test_health_and_metrics_stay_open_and_count_refusals(monitor_client: httpx.Client) -> None:
    assert monitor_client.get("/healthz").status_code == 200
    assert monitor_client.post("/v1/feedback", json={"id": "inf-9", "labels": [1]}).status_code == 403
    metrics = monitor_client.get("/metrics")
    assert metrics.status_code == 200
    assert 'slipway_monitor_events_rejected_total{status="403"}' in metrics.text


def test_the_value_is_never_logged(restricted_monitor: RunningMonitor) -> None:
    """Runs after the other tests of this monitor: it stops the monitor to read everything it logged."""
    proc = restricted_monitor.proc
    proc.terminate()  # type: ignore[attr-defined]
    proc.wait(timeout=15)  # type: ignore[attr-defined]
    log = " ".join(proc.stderr.read().decode().split())  # type: ignore[attr-defined]
    assert "restricted --restricted-api: feedback,admin need header x-monitor-key" in log
    assert SECRET not in log and "m0nitor" not in log


def test_open_by_default(client: httpx.Client) -> None:
    """The shared module monitor has no --restricted-api: feedback and admin answer without a key."""
    assert client.post("/v1/feedback", json={"id": "inf-open", "labels": [1]}).status_code == 200
    assert client.get("/reports").status_code == 200


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("feedback", "expected GROUP[,GROUP...]:KEY=VALUE"),
        ("feedbacks:k=TOPSECRET", "unknown group 'feedbacks'; expected one of ingest, feedback, admin"),
        ("feedback:k=v", "group 'feedback' is named in more than one --restricted-api"),
    ],
)
def test_cli_bad_value_exits_2_naming_the_flag(tmp_path: Path, value: str, message: str) -> None:
    args = ["serve", "--data-dir", str(tmp_path), "--restricted-api", value]
    if "more than one" in message:
        args += ["--restricted-api", "admin,feedback:k2=v2"]
    result = CliRunner().invoke(monitor_group, args)
    assert result.exit_code == 2, result.output
    assert "error: --restricted-api: " in result.output and message in result.output
    assert "TOPSECRET" not in result.output
