"""Event parsing: CloudEvents built with the cloudevents package, in binary and structured content modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from slipway.core.errors import EventError, UnsupportedMediaTypeError
from slipway.monitoring import events as ev

from .conftest import v2_request, v2_response


def _event(kind: str, data: dict, event_id: str = "inf-1") -> CloudEvent:
    attrs = {
        "type": f"org.kubeflow.serving.inference.{kind}",
        "source": "http://localhost:9081/",
        "id": event_id,
    }
    return CloudEvent(attrs, data)


@pytest.mark.parametrize("mode", [to_binary, to_structured])
def test_request_event_both_modes(mode) -> None:
    sample = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    headers, body = mode(_event("request", v2_request(sample)))
    event = ev.parse_cloudevent(headers, body)
    assert event.kind == "request" and event.event_id == "inf-1" and event.key == "request:inf-1"
    np.testing.assert_array_equal(event.tensors[0].to_numpy(), sample)
    assert event.rows == 1


def test_response_event_correlates_by_id() -> None:
    probs = np.full((2, 10), 0.1, dtype=np.float32)
    headers, body = to_binary(_event("response", v2_response(probs), "inf-9"))
    event = ev.parse_cloudevent(headers, body)
    assert event.kind == "response" and event.key == "response:inf-9" and event.rows == 2
    header, stored = ev.decode_payload(event.to_payload())
    assert header["id"] == "inf-9" and stored is not None
    assert np.allclose(np.asarray(stored["outputs"][0]["data"]).reshape(2, 10), probs)


def test_structured_payload_roundtrip() -> None:
    headers, body = to_structured(_event("request", v2_request(np.ones((1, 3), np.float32))))
    header, stored = ev.decode_payload(ev.parse_cloudevent(headers, body).to_payload())
    assert header["k"] == "request" and stored is not None and stored["inputs"][0]["shape"] == [1, 3]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda h, b: (dict(h, **{"ce-type": "com.example.other"}), b), "ce-type"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "ce-id"}, b), "cloudevent"),
        (lambda h, b: (h, b"{not json"), "data"),
        (lambda h, b: (h, b"[1, 2]"), "data"),
        (lambda h, b: (h, json.dumps({"inputs": []}).encode()), "data.inputs"),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]}
                ).encode(),
            ),
            "data.inputs[0]",
        ),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}
                ).encode(),
            ),
            "datatype",
        ),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}
                ).encode(),
            ),
            "data",
        ),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}
                ).encode(),
            ),
            "shape",
        ),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}]}
                ).encode(),
            ),
            "data",
        ),
        (
            lambda h, b: (
                h,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [1000]}]}
                ).encode(),
            ),
            "INT8",
        ),
    ],
)
def test_bad_events_name_the_field(mutate, field: str) -> None:
    headers, body = to_binary(_event("request", v2_request(np.ones((1, 2), np.float32))))
    headers, body = mutate(headers, body)
    with pytest.raises(EventError, match=field.replace("[", r"\[").replace("]", r"\]")) as info:
        ev.parse_cloudevent(headers, body)
    assert info.value.http_status == 400


def test_wrong_content_type_is_415() -> None:
    headers, body = to_binary(_event("request", v2_request(np.ones((1, 2), np.float32))))
    headers["content-type"] = "text/plain"
    with pytest.raises(UnsupportedMediaTypeError) as info:
        ev.parse_cloudevent(headers, body)
    assert info.value.http_status == 415
    with pytest.raises(UnsupportedMediaTypeError):
        ev.parse_cloudevent({"content-type": "application/xml"}, b"<a/>")


def test_plain_json_without_ce_headers_is_400() -> None:
    with pytest.raises(EventError, match="ce-specversion"):
        ev.parse_cloudevent({"content-type": "application/json"}, b"{}")


def test_batch_with_outputs_and_generated_ids() -> None:
    body = json.dumps(
        [
            {"id": "a", **v2_request(np.ones((2, 4), np.float32)), **v2_response(np.full((2, 3), 1 / 3))},
            v2_request(np.ones((1, 4), np.float32)),
        ]
    ).encode()
    events = ev.parse_batch(body, lambda: "generated")
    assert [(e.kind, e.event_id, e.rows) for e in events] == [
        ("request", "a", 2),
        ("response", "a", 2),
        ("request", "generated", 1),
    ]


def test_feedback_parsing() -> None:
    items = ev.parse_feedback(b'[{"id": "a", "labels": [1, 2]}, {"id": "b", "label": 3}]')
    assert [(f.key, f.labels) for f in items] == [("feedback:a", (1, 2)), ("feedback:b", (3,))]
    with pytest.raises(EventError, match="labels"):
        ev.parse_feedback(b'{"id": "a", "labels": [1.5]}')
    with pytest.raises(EventError, match=r"body\.id"):
        ev.parse_feedback(b'{"labels": [1]}')
