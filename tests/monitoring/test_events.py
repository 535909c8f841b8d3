"""Event parsing: CloudEvents built with the cloudevents package, in binary and structured content modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from slipway.core.errors import EventError, UnsupportedMediaTypeError
from slipway.monitoring import events as ev
from slipway.serving.datatypes import NUMPY_TO_V2

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


def _binary_body(
    tensors: list[tuple[str, np.ndarray]], key: str = "inputs", **fields: object
) -> tuple[bytes, int]:
    """A v2 body with Triton's binary tensor extension: JSON header, then each tensor's bytes in order."""
    entries = [
        {
            "name": name,
            "shape": list(arr.shape),
            "datatype": NUMPY_TO_V2[arr.dtype.name],
            "parameters": {"binary_data_size": arr.nbytes},
        }
        for name, arr in tensors
    ]
    header = json.dumps({**fields, key: entries}, ensure_ascii=False).encode()
    return header + b"".join(arr.tobytes() for _, arr in tensors), len(header)


@pytest.mark.parametrize(
    "dtype", ["float32", "float16", "float64", "int8", "uint8", "int64", "uint64", "bool"]
)
@pytest.mark.parametrize("explicit_length", [True, False])
def test_binary_tensors_decode_like_json(dtype: str, explicit_length: bool) -> None:
    x = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    body, n = _binary_body([("x", x)])
    headers, _ = to_binary(_event("request", {}))
    headers["content-type"] = "application/octet-stream"
    if explicit_length:
        headers["Inference-Header-Content-Length"] = str(n)
    event = ev.parse_cloudevent(headers, body)
    as_json = {"name": "x", "shape": [2, 3, 4], "datatype": NUMPY_TO_V2[dtype], "data": x.ravel().tolist()}
    json_event = ev.parse_cloudevent(*to_binary(_event("request", {"inputs": [as_json]})))
    tensor = event.tensors[0]
    assert (tensor.shape, tensor.datatype) == ((2, 3, 4), NUMPY_TO_V2[dtype]) and event.raw_body is None
    np.testing.assert_array_equal(tensor.to_numpy(), x)
    np.testing.assert_array_equal(json_event.tensors[0].to_numpy(), x)
    _, stored = ev.decode_payload(event.to_payload())  # stored as plain v2 JSON, readable by the window
    assert stored is not None
    np.testing.assert_array_equal(np.asarray(stored["inputs"][0]["data"], dtype).reshape(x.shape), x)


def test_utf8_header_without_length_header() -> None:
    """The JSON header's end is found in bytes even with non-ASCII UTF-8 names (KServe drops the length)."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, n = _binary_body([("entrée-ü", x)])
    assert n > len('{"inputs": [') and body[:n].decode().count("é") == 1
    event = ev.parse_cloudevent({**to_binary(_event("request", {}))[0], "content-type": ""}, body)
    assert event.tensors[0].name == "entrée-ü"
    np.testing.assert_array_equal(event.tensors[0].to_numpy(), x)


def test_binary_batch_inputs_then_outputs_in_order() -> None:
    x = np.ones((2, 4), np.float32)
    probs = np.full((2, 3), 0.25, np.float32)
    ids = np.array([[7], [9]], np.int64)
    header = {
        "id": "bb",
        "model_name": "digits",
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": d, "parameters": {"binary_data_size": a.nbytes}}
            for n, a, d in (("x", x, "FP32"), ("ids", ids, "INT64"))
        ],
        "outputs": [
            {"name": "probs", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}
        ],
    }
    body = json.dumps(header).encode() + x.tobytes() + ids.tobytes() + probs.tobytes()
    events = ev.parse_batch(body, lambda: "unused", None, ev.ModelRef("query-name", "5"))
    assert [(e.kind, e.event_id, e.model_name, e.model_version) for e in events] == [
        ("request", "bb", "digits", "5"),
        ("response", "bb", "digits", "5"),
    ]
    np.testing.assert_array_equal(events[0].tensors[1].to_numpy(), ids)
    np.testing.assert_array_equal(events[1].tensors[0].to_numpy(), probs)


@pytest.mark.parametrize(
    ("source", "isvc", "body_fields", "query", "expected"),
    [
        ("http://p/v2/models/m%2Fx/versions/4/infer", "isvc", {}, ev.NO_MODEL, ("m/x", "4")),
        ("http://p/v2/models/m/infer", "isvc", {}, ev.NO_MODEL, ("m", None)),
        ("http://localhost:9081/", "isvc", {}, ev.NO_MODEL, ("isvc", None)),
        ("http://localhost:9081/", None, {}, ev.NO_MODEL, (None, None)),
        ("http://[bad", "isvc", {}, ev.ModelRef(None, "q"), ("isvc", "q")),
        ("http://p/v2/models/m/versions/4", "isvc", {}, ev.ModelRef("q", None), ("q", "4")),
        (
            "http://p/v2/models/m/versions/4",
            "isvc",
            {"model_name": "b", "model_version": 2},
            ev.NO_MODEL,
            ("b", "2"),
        ),
    ],
)
def test_model_name_and_version_sources(source, isvc, body_fields, query, expected) -> None:
    """Body fields, then the request's query, then the v2 path in ce-source, then the InferenceService."""
    attrs = {"type": ev.RESPONSE_TYPE, "source": source, "id": "m-1"}
    if isvc:
        attrs[ev.ISVC_ATTR] = isvc
    probs = np.full((1, 2), 0.5, np.float32)
    headers, body = to_binary(CloudEvent(attrs, {**body_fields, **v2_response(probs)}))
    event = ev.parse_cloudevent(headers, body, query)
    assert (event.model_name, event.model_version) == expected
    info = ev.record_info(event.to_payload())
    assert (info["model_name"], info["model_version"]) == expected


def test_record_written_before_model_fields_reads_as_null() -> None:
    old = b'{"k":"request","id":"a","t":1.0,"src":"s"}\n{"inputs":[]}'
    assert ev.record_info(old) == {
        "id": "a",
        "kind": "request",
        "received_at": 1.0,
        "source": "s",
        "model_name": None,
        "model_version": None,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("model_name", ""), ("model_name", ["a"]), ("model_version", True), ("model_name", "a\nb")],
)
def test_bad_model_fields_are_named(field: str, value: object) -> None:
    body = json.dumps({field: value, **v2_request(np.ones((1, 2), np.float32))}).encode()
    with pytest.raises(EventError, match=rf"body\.{field}"):
        ev.parse_batch(body, lambda: "g")
