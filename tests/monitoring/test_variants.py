"""Per-variant numbers for A/B experiments over the real monitor: two versions of one model, feedback labels and
scores joined by inference id, `GET /v1/variants` checked field by field against counts worked out by hand."""

from __future__ import annotations

import time

import httpx
import numpy as np
import orjson
import pytest

from slipway.core.errors import EventError
from slipway.monitoring import events as ev
from slipway.monitoring.events import decode_payload
from slipway.monitoring.store import iter_records_newest_first
from slipway.monitoring.variants import predicted_classes, variant_summary
from slipway.serving.payload_logger import encode

from .conftest import RunningMonitor

MODEL = "ab-digits"


def post_event(
    client: httpx.Client, kind: str, event_id: str, model: str, version: str, arr: np.ndarray
) -> None:
    """One event as `slipway serve`'s payload logger sends it: binary tensors, model and version named."""
    field, name = ("inputs", "input") if kind == "request" else ("outputs", "probs")
    body, header_length = encode(event_id, model, version, field, {name: arr})
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": f"http://127.0.0.1/slipway-serve/v2/models/{model}/versions/{version}/infer",
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(header_length),
    }
    r = client.post("/events", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text


def post_inference(
    client: httpx.Client, event_id: str, version: str, outputs: list | None, rows: int, model: str = MODEL
) -> None:
    """A request of `rows` rows and, unless `outputs` is None, its response."""
    post_event(client, "request", event_id, model, version, np.ones((rows, 4), np.float32))
    if outputs is not None:
        out = np.asarray(outputs)
        out = out.astype(np.int64 if out.dtype.kind == "i" else np.float32)
        post_event(client, "response", event_id, model, version, out)


def feedback(client: httpx.Client, body: dict | list) -> None:
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 200 and r.json()["stored"] >= 1, r.text


def test_two_versions_counted_and_joined(client: httpx.Client, monitor: RunningMonitor) -> None:
    # Version 1. a1: predicts [1, 0], labels [1, 1] -> 1 correct of 2; scores 1 and 0.
    post_inference(client, "a1", "1", [[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], rows=2)
    feedback(client, {"id": "a1", "labels": [1, 1], "scores": [1.0, 0.0]})
    # a2: predicts 2, label 2 -> correct; one score for a one-row inference.
    post_inference(client, "a2", "1", [[0.2, 0.3, 0.5]], rows=1)
    feedback(client, {"id": "a2", "label": 2, "score": 0.5})
    # a3: a response but no feedback: rows, not labelled.
    post_inference(client, "a3", "1", [[1, 0, 0]] * 3, rows=3)
    # a4: labelled but no response: nothing to compare, not labelled.
    post_inference(client, "a4", "1", None, rows=1)
    feedback(client, {"id": "a4", "labels": [0]})
    # a5: feedback stored first, then the response, then the request: joined all the same. Predicts 2 = label.
    feedback(client, {"id": "a5", "labels": [2]})
    post_event(client, "response", "a5", MODEL, "1", np.asarray([[0.0, 0.0, 1.0]], np.float32))
    post_event(client, "request", "a5", MODEL, "1", np.ones((1, 4), np.float32))

    # Version 2. b1: the output is one class id per row, [2, 0]; labels [2, 1] -> 1 correct of 2; scores 2, 4.
    post_inference(client, "b1", "2", [2, 0], rows=2)
    feedback(client, [{"id": "b1", "labels": [2, 1], "scores": [2.0, 4.0]}])
    # b2: scores only (an experiment judged on a score has no class labels).
    post_inference(client, "b2", "2", [[0.6, 0.4, 0.0]], rows=1)
    feedback(client, {"id": "b2", "scores": [3.0]})
    # b3: three labels for two rows: not joined.
    post_inference(client, "b3", "2", [[1.0, 0.0], [0.0, 1.0]], rows=2)
    feedback(client, {"id": "b3", "labels": [0, 1, 1]})

    # Another model with the same versions and perfect labels: never counted.
    post_inference(client, "o1", "1", [[0.0, 1.0]], rows=1, model="other-model")
    feedback(client, {"id": "o1", "labels": [1], "scores": [100.0]})

    r = client.get("/v1/variants", params={"model": MODEL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL and body["since"] == 0 and body["truncated"] is False
    assert body["records_scanned"] > 0
    assert set(body["variants"]) == {"1", "2"}
    v1, v2 = body["variants"]["1"], body["variants"]["2"]
    assert v1["requests"] == 5  # a1..a5
    assert v1["rows"] == 2 + 1 + 3 + 1 + 1
    assert v1["responses"] == 4  # not a4
    assert v1["labelled"] == 2 + 1 + 1  # a1, a2, a5
    assert v1["correct"] == 1 + 1 + 1
    assert v1["accuracy"] == 3 / 4
    assert v1["scored"] == 2 + 1
    assert v1["score_sum"] == 1.0 + 0.0 + 0.5
    assert v1["score_sumsq"] == 1.0 + 0.0 + 0.25
    assert v1["score_mean"] == 1.5 / 3

    assert v2["requests"] == 3
    assert v2["rows"] == 2 + 1 + 2
    assert v2["responses"] == 3
    assert v2["labelled"] == 2  # b1 only
    assert v2["correct"] == 1
    assert v2["accuracy"] == 1 / 2
    assert v2["scored"] == 2 + 1
    assert v2["score_sum"] == 2.0 + 4.0 + 3.0
    assert v2["score_sumsq"] == 4.0 + 16.0 + 9.0
    assert v2["score_mean"] == 9.0 / 3

    other = client.get("/v1/variants", params={"model": "other-model"}).json()["variants"]
    assert other["1"]["labelled"] == 1 and other["1"]["score_sum"] == 100.0
    assert client.get("/v1/variants", params={"model": "nobody"}).json()["variants"] == {}

    client.get("/v1/variants", params={"model": MODEL})
    metrics = client.get("/metrics").text
    for line in (
        f'slipway_monitor_variant_labelled_rows{{model="{MODEL}",version="1"}} 4.0',
        f'slipway_monitor_variant_labelled_rows{{model="{MODEL}",version="2"}} 2.0',
        f'slipway_monitor_variant_accuracy{{model="{MODEL}",version="1"}} 0.75',
        f'slipway_monitor_variant_accuracy{{model="{MODEL}",version="2"}} 0.5',
    ):
        assert line in metrics, line

    # The scan is bounded: a cap below the store's size says so.
    capped = variant_summary(monitor.data_dir, MODEL, 0.0, max_records=3)
    assert capped["truncated"] is True and capped["records_scanned"] == 3


def test_since_excludes_older_requests(client: httpx.Client) -> None:
    post_inference(client, "s1", "1", [[0.0, 1.0]], rows=1, model="ab-since")
    feedback(client, {"id": "s1", "labels": [1]})
    cut = time.time()
    time.sleep(0.01)
    post_inference(client, "s2", "2", [[0.0, 1.0]], rows=1, model="ab-since")
    feedback(client, {"id": "s2", "labels": [0]})

    everything = client.get("/v1/variants", params={"model": "ab-since"}).json()
    assert set(everything["variants"]) == {"1", "2"}
    recent = client.get("/v1/variants", params={"model": "ab-since", "since": f"{cut:.6f}"}).json()
    assert recent["since"] == pytest.approx(cut, abs=1e-6)
    assert list(recent["variants"]) == ["2"]
    assert recent["variants"]["2"] == {
        "requests": 1,
        "rows": 1,
        "responses": 1,
        "labelled": 1,
        "correct": 0,
        "scored": 0,
        "score_sum": 0.0,
        "score_sumsq": 0.0,
        "accuracy": 0.0,
        "score_mean": None,
    }
    metrics = client.get("/metrics").text  # the version gone from the range lost its series
    assert 'slipway_monitor_variant_accuracy{model="ab-since",version="2"} 0.0' in metrics
    assert 'model="ab-since",version="1"' not in metrics


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, "model"),
        ({"since": "5"}, "model"),
        ({"model": ""}, "model"),
        ({"model": "a\x01b"}, "model"),
        ({"model": "m" * 300}, "model"),
        ({"model": MODEL, "since": "-1"}, "since"),
        ({"model": MODEL, "since": "yesterday"}, "since"),
        ({"model": MODEL, "since": "1e3"}, "since"),
        ({"model": MODEL, "since": "inf"}, "since"),
        ({"model": MODEL, "since": "nan"}, "since"),
        ({"model": MODEL, "since": "²"}, "since"),
        ({"model": MODEL, "since": "9" * 5000}, "since"),
    ],
)
def test_bad_queries_are_400_naming_the_field(client: httpx.Client, params: dict, named: str) -> None:
    r = client.get("/v1/variants", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(f"{named}:"), r.json()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"id": "bad-1", "labels": [1], "scores": [1.0, 2.0]}, "body.scores"),
        ({"id": "bad-2", "scores": "high"}, "body.scores"),
        ({"id": "bad-3", "scores": [True]}, "body.scores"),
        ({"id": "bad-4", "scores": []}, "body.scores"),
        ({"id": "bad-5", "scores": [1e16]}, "body.scores"),
        ({"id": "bad-6", "scores": [None]}, "body.scores"),
        ({"id": "bad-7", "score": "high"}, "body.score"),
        ({"id": "bad-8", "labels": [1, 2], "score": 1.0}, "body.score"),
        ([{"id": "bad-9", "labels": [1]}, {"id": "bad-10", "scores": [1, "x"]}], "body[1].scores"),
        ({"id": "bad-11", "labels": [1.5], "scores": [1.0]}, "body.labels"),
        ({"id": "bad-12"}, "body.labels"),
    ],
)
def test_bad_feedback_scores_are_400_naming_the_field(client: httpx.Client, body: object, named: str) -> None:
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith(f"{named}:"), r.json()
    listed = {e["id"] for e in client.get("/v1/events", params={"limit": 10000}).json()["events"]}
    assert not any(i.startswith("bad-") for i in listed)  # nothing of a refused body is stored


def test_infinite_score_is_refused_as_json(client: httpx.Client) -> None:
    r = client.post(
        "/v1/feedback",
        content=b'{"id": "inf", "scores": [1e400]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["message"].startswith("body:")


def test_stored_feedback_keeps_labels_and_adds_scores_only_when_given(
    client: httpx.Client, monitor: RunningMonitor
) -> None:
    feedback(client, [{"id": "st-1", "labels": [0]}, {"id": "st-2", "labels": [1, 1], "scores": [1, 0.5]}])
    feedback(client, {"id": "st-3", "score": 3})
    records = {r.key: decode_payload(r.payload)[0] for r in iter_records_newest_first(monitor.data_dir)}
    assert records["feedback:st-1"]["labels"] == [0] and "scores" not in records["feedback:st-1"]
    assert records["feedback:st-2"]["labels"] == [1, 1] and records["feedback:st-2"]["scores"] == [1.0, 0.5]
    assert records["feedback:st-3"]["labels"] == [] and records["feedback:st-3"]["scores"] == [3.0]


def test_feedback_parsing_with_scores() -> None:
    items = ev.parse_feedback(
        orjson.dumps([{"id": "a", "labels": [1, 2], "scores": [0.5, 2]}, {"id": "b", "score": 3}])
    )
    assert [(f.key, f.labels, f.scores) for f in items] == [
        ("feedback:a", (1, 2), (0.5, 2.0)),
        ("feedback:b", (), (3.0,)),
    ]
    (plain,) = ev.parse_feedback(b'{"id": "c", "label": 4}')
    assert plain.scores is None and orjson.loads(plain.to_payload())["labels"] == [4]
    with pytest.raises(EventError, match=r"^body\.scores: expected a list of finite numbers, one per row"):
        ev.parse_feedback(b'{"id": "a", "labels": [1], "scores": [1, 2]}')


@pytest.mark.parametrize(
    ("shape", "data", "expected"),
    [
        ([2, 3], [0.1, 0.7, 0.2, 0.5, 0.2, 0.3], [1, 0]),  # probabilities or logits: argmax per row
        ([2], [3, 0], [3, 0]),  # one value per row: class ids
        ([2, 1], [1, 2], [1, 2]),
        ([3, 1], [0.7, -1, 2.0], [-1, -1, 2]),  # not a class id: nothing to compare
        ([2, 2, 2], [0, 1, 0, 0, 0, 0, 5, 0], [1, 2]),  # argmax over the whole row
        ([0, 3], [], []),
        ([2**31 - 1, 0], [], []),  # no values: nothing to compare, and no list of 2**31 rows
    ],
)
def test_predicted_classes(shape: list[int], data: list[float], expected: list[int]) -> None:
    assert predicted_classes({"shape": shape, "data": data}) == expected
