"""The real monitor over real HTTP on 127.0.0.1: ingest, feedback, drift, metrics, reports, bad input."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipway.monitoring.window import collect_window, export_window, load_samples

from .conftest import RunningMonitor, Split, binary_headers, v2_request, v2_response


def test_healthz(client: httpx.Client) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["reference_loaded"] is True


def test_ingest_feedback_drift_reports_metrics(
    client: httpx.Client, monitor: RunningMonitor, digits: Split, tmp_path
) -> None:
    """Payload-logger events (binary requests, structured responses), feedback, then a drift run."""
    x = np.clip(digits.pool_x[:240] * 1.2, 0, 16)  # brightened traffic: must alarm
    probs = digits.probs(x)
    for i in range(0, 240, 4):
        rid = f"inf-{i}"
        r = client.post("/events", content=json.dumps(v2_request(x[i : i + 4])), headers=binary_headers(rid))
        assert r.status_code == 200 and r.json()["stored"] == 1
        attrs = {"type": "org.kubeflow.serving.inference.response", "source": "http://isvc/", "id": rid}
        headers, body = to_structured(CloudEvent(attrs, v2_response(probs[i : i + 4])))
        assert client.post("/events", content=body, headers=headers).status_code == 200
        labels = digits.pool_y[i : i + 4].tolist()
        assert client.post("/v1/feedback", json={"id": rid, "labels": labels}).status_code == 200
    retry = client.post("/events", content=json.dumps(v2_request(x[:4])), headers=binary_headers("inf-0"))
    assert retry.json() == {"stored": 0, "duplicates": 1, "id": "inf-0", "kind": "request"}

    window = collect_window(monitor.data_dir, 200)
    assert window.x.shape == (200, 1, 8, 8) and window.probs is not None and window.y is not None
    np.testing.assert_allclose(window.x, x[40:240])
    np.testing.assert_allclose(window.probs, probs[40:240], rtol=1e-6)
    path = export_window(monitor.data_dir, tmp_path / "window.npz", 200)
    assert load_samples(path).x.shape == (200, 1, 8, 8)

    result = client.post("/v1/drift/run").json()
    assert result["drift_detected"] is True and result["current_rows"] == 200
    assert result["labelled_rows"] == 200 and result["accuracy"] is not None

    listing = client.get("/reports").json()["reports"]
    assert listing[0]["id"] == result["report_id"]
    html = client.get(f"/reports/{result['report_id']}")
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert client.get(f"/reports/{result['report_id']}.json").json()["report_id"] == result["report_id"]
    assert client.get("/reports/nope").status_code == 404
    assert client.get("/reports/..%2Fsegments").status_code in {400, 404}

    metrics = client.get("/metrics").text
    for name in (
        'slipway_monitor_events_ingested_total{kind="request"} 60.0',
        'slipway_monitor_events_ingested_total{kind="response"} 60.0',
        "slipway_monitor_events_duplicate_total 1.0",
        "slipway_drift_share_of_drifted_columns",
        'slipway_drift_score{feature="c0_mean"}',
        "slipway_drift_detected 1.0",
        "slipway_drift_window_age_seconds",
    ):
        assert name in metrics, name


def test_plain_v2_batch(client: httpx.Client, digits: Split) -> None:
    x = digits.pool_x[:3]
    body = [{"id": "batch-1", **v2_request(x), **v2_response(digits.probs(x))}]
    r = client.post("/v1/batches", json=body)
    assert r.status_code == 200 and r.json()["stored"] == 2 and r.json()["ids"] == ["batch-1"]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/events", binary_headers("a"), b"{bad json", 400),
        ("/events", binary_headers("a"), b'{"inputs": [{"name": "x"}]}', 400),
        ("/events", {**binary_headers("a"), "ce-type": "nope"}, b'{"inputs": []}', 400),
        ("/events", {**binary_headers("a"), "content-type": "text/csv"}, b"1,2", 415),
        ("/events", {"content-type": "application/octet-stream"}, b"\x00\x01", 400),  # no ce-* headers
        ("/events", {"content-type": "application/xml"}, b"<a/>", 415),
        ("/events", binary_headers("a"), b"x" * 70_000, 413),
        ("/v1/batches", {"content-type": "text/plain"}, b"{}", 415),
        ("/v1/batches", {}, b"{}", 415),
        ("/v1/batches", {"content-type": "application/json"}, b'{"inputs": "no"}', 400),
        ("/v1/feedback", {"content-type": "application/json"}, b'{"id": 3}', 400),
    ],
)
def test_bad_requests_are_4xx_and_service_stays_up(
    client: httpx.Client, path: str, headers: dict, body: bytes, status: int
) -> None:
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    assert "message" in r.json()
    assert client.get("/healthz").status_code == 200


def test_rejections_are_counted(client: httpx.Client) -> None:
    client.post("/events", content=b"{", headers=binary_headers("z"))
    assert 'slipway_monitor_events_rejected_total{status="400"}' in client.get("/metrics").text


_headers = st.dictionaries(
    st.sampled_from(
        [
            "content-type",
            "ce-specversion",
            "ce-id",
            "ce-type",
            "ce-source",
            "ce-time",
            "inference-header-content-length",
            "x-junk",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    max_size=6,
)
_json_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
_tensorish = st.fixed_dictionaries(
    {
        "inputs": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.text(max_size=5),
                    "shape": st.lists(st.integers(-2, 5), max_size=4),
                    "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "UINT64", "FP16", "BOOL", "x"]),
                    "data": st.lists(
                        st.integers(-300, 300) | st.floats(allow_nan=False) | st.text(max_size=2), max_size=12
                    ),
                }
            ),
            max_size=2,
        )
    }
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/events", "/v1/batches", "/v1/feedback"]),
    headers=_headers,
    body=st.binary(max_size=200)
    | _json_bodies.map(json.dumps).map(str.encode)
    | _tensorish.map(json.dumps).map(str.encode),
    binary_ce=st.booleans(),
)
def test_fuzz_never_500(
    monitor: RunningMonitor, path: str, headers: dict, body: bytes, binary_ce: bool
) -> None:
    if binary_ce:
        headers = {**binary_headers("fuzz"), **headers}
    with httpx.Client(base_url=monitor.url, timeout=30) as c:
        r = c.post(path, content=body, headers=headers)
    assert r.status_code < 500 or r.status_code == 503, (r.status_code, r.text)
