"""Parse and validate what KServe's payload logger sends, and plain Open Inference Protocol v2 batches.

KServe's logger posts one CloudEvent per request and one per response (binary content mode: `ce-*` headers,
JSON body). `ce-id` is the inference id shared by a request and its response; `ce-type` says which one it is.
Structured mode (`application/cloudevents+json`) is accepted too. Every rejection is a SlipwayError whose
message names the offending field, so a server maps it to 400/415 and never to 500.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from slipway.core.errors import EventError, UnsupportedMediaTypeError
from slipway.serving.datatypes import V2_TO_NUMPY

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_KINDS: dict[str, Literal["request", "response"]] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
MAX_TENSORS = 16
MAX_RANK = 8
MAX_ID_CHARS = 256
MAX_BATCH_ITEMS = 1024
JSON_TYPES = ("application/json",)
STRUCTURED_TYPES = ("application/cloudevents+json",)


@dataclass(frozen=True)
class Tensor:
    """One named v2 tensor, data flattened in row-major order."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: np.ndarray

    def to_numpy(self) -> np.ndarray:
        """The tensor in its declared shape."""
        return self.data.reshape(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "datatype": self.datatype, "data": self.data}


@dataclass(frozen=True)
class InferenceEvent:
    """A request or response of one inference, correlated by `event_id`."""

    event_id: str
    kind: Literal["request", "response"]
    tensors: tuple[Tensor, ...]
    source: str = ""
    received_at: float = 0.0
    raw_body: bytes | None = None  # the validated v2 JSON as received: stored as is, not re-encoded

    @property
    def key(self) -> str:
        """Dedupe key: request and response share the inference id, so the kind is part of it."""
        return f"{self.kind}:{self.event_id}"

    @property
    def rows(self) -> int:
        return self.tensors[0].shape[0] if self.tensors and self.tensors[0].shape else 1

    def to_payload(self) -> bytes:
        """Serialize for the store: a JSON header line, then the v2 body (raw bytes when we have them)."""
        header = orjson.dumps(
            {"k": self.kind, "id": self.event_id, "t": self.received_at, "src": self.source}
        )
        if self.raw_body is not None:
            return header + b"\n" + self.raw_body
        key = "inputs" if self.kind == "request" else "outputs"
        body = orjson.dumps({key: [t.to_json() for t in self.tensors]}, option=orjson.OPT_SERIALIZE_NUMPY)
        return header + b"\n" + body


@dataclass(frozen=True)
class Feedback:
    """Ground-truth labels for the rows of one inference, sent later by the application."""

    event_id: str
    labels: tuple[int, ...]
    received_at: float = 0.0

    @property
    def key(self) -> str:
        return f"feedback:{self.event_id}"

    def to_payload(self) -> bytes:
        header = {"k": "feedback", "id": self.event_id, "t": self.received_at, "labels": self.labels}
        return orjson.dumps(header) + b"\n"


def decode_payload(payload: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split a stored record into its header (kind, id, time, ...) and its v2 body (None for feedback)."""
    head, _, body = payload.partition(b"\n")
    return orjson.loads(head), (orjson.loads(body) if body else None)


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def loads(body: bytes | str, where: str = "body") -> Any:
    """Parse JSON or raise a 400 that says where."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"{where}: not valid JSON ({exc})") from exc


def _check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        raise EventError(
            f"{field}: expected a non-empty printable string of at most {MAX_ID_CHARS} characters"
        )
    return value


def parse_tensor(obj: Any, field: str) -> Tensor:
    """Validate one v2 tensor (`name`, `shape`, `datatype`, `data`) and convert its data to numpy."""
    if not isinstance(obj, dict):
        raise EventError(f"{field}: expected an object with name, shape, datatype, data")
    name = obj.get("name")
    if not isinstance(name, str) or not name or len(name) > 256:
        raise EventError(f"{field}.name: expected a non-empty string")
    shape = obj.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        raise EventError(f"{field}.shape: expected 1..{MAX_RANK} non-negative integers, got {shape!r:.80}")
    datatype = obj.get("datatype")
    if datatype not in V2_TO_NUMPY:
        raise EventError(f"{field}.datatype: expected one of {sorted(V2_TO_NUMPY)}, got {datatype!r:.40}")
    data = obj.get("data")
    if not isinstance(data, list):
        raise EventError(f"{field}.data: expected a JSON array (binary tensor data is not supported)")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise EventError(f"{field}.data: not a rectangular array of numbers ({exc})") from exc
    if arr.size and arr.dtype.kind not in "biuf":
        raise EventError(f"{field}.data: expected numbers, got {arr.dtype.kind!r} values")
    arr = arr.reshape(-1)
    if arr.size != math.prod(shape):
        raise EventError(f"{field}: data has {arr.size} values but shape {shape} needs {math.prod(shape)}")
    target = V2_TO_NUMPY[datatype]
    if arr.size and target.kind in "iu":
        info = np.iinfo(target)  # type: ignore[type-var]
        if arr.dtype.kind == "f" or arr.min() < info.min or arr.max() > info.max:
            raise EventError(f"{field}.data: values are not {datatype} integers in [{info.min}, {info.max}]")
    try:
        with np.errstate(over="raise", invalid="raise"):
            arr = arr.astype(target)
    except (OverflowError, FloatingPointError, ValueError) as exc:
        raise EventError(f"{field}.data: values do not fit {datatype}") from exc
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise EventError(f"{field}.data: NaN or infinite values")
    return Tensor(name, tuple(shape), datatype, arr)


def parse_tensors(body: Any, key: str, where: str) -> tuple[Tensor, ...]:
    """Validate the `inputs` or `outputs` list of a v2 payload."""
    if not isinstance(body, dict):
        raise EventError(f"{where}: expected a JSON object with '{key}'")
    items = body.get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_TENSORS:
        raise EventError(f"{where}.{key}: expected a list of 1..{MAX_TENSORS} tensors")
    tensors = tuple(parse_tensor(t, f"{where}.{key}[{i}]") for i, t in enumerate(items))
    rows = {t.shape[0] for t in tensors}
    if len(rows) != 1:
        raise EventError(f"{where}.{key}: tensors disagree on the batch dimension {sorted(rows)}")
    return tensors


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> InferenceEvent:
    """Parse one payload-logger CloudEvent (binary or structured mode) with the cloudevents package."""
    from cloudevents.http import from_http

    lowered = {k.lower(): v for k, v in headers.items()}
    mtype = media_type(lowered.get("content-type"))
    binary = "ce-specversion" in lowered
    if binary and mtype and mtype not in JSON_TYPES:  # absent: datacontenttype defaults to JSON
        raise UnsupportedMediaTypeError(
            f"content-type: binary-mode events must be application/json, got {mtype!r:.60}"
        )
    if not binary and mtype not in STRUCTURED_TYPES:
        if mtype in JSON_TYPES:
            raise EventError(
                "ce-specversion: header missing (binary mode) and body is not a structured event"
            )
        raise UnsupportedMediaTypeError(
            f"content-type: expected application/json (binary) or application/cloudevents+json, got {mtype!r:.60}"
        )
    try:
        event = from_http(lowered, body, data_unmarshaller=lambda raw: raw)
    except Exception as exc:  # the parser's failures are the sender's: report them as 400, never 500
        raise EventError(f"cloudevent: {type(exc).__name__}: {str(exc)[:200]}") from exc
    attrs = event.get_attributes()
    event_id = _check_id(attrs.get("id"), "ce-id")
    ce_type = attrs.get("type")
    if ce_type not in EVENT_KINDS:
        raise EventError(f"ce-type: expected {REQUEST_TYPE} or {RESPONSE_TYPE}, got {ce_type!r:.80}")
    kind = EVENT_KINDS[ce_type]
    data = event.get_data()
    raw: bytes | None = None
    if isinstance(data, bytes | bytearray | str):
        raw = bytes(data) if isinstance(data, bytearray) else data.encode() if isinstance(data, str) else data
        payload = loads(raw, "data")
    elif data is None:
        raise EventError("data: the event has no body")
    else:
        payload = data
    tensors = parse_tensors(payload, "inputs" if kind == "request" else "outputs", "data")
    source = attrs.get("source")
    if not isinstance(payload, dict):
        raise EventError("data: expected a JSON object")
    return InferenceEvent(event_id, kind, tensors, str(source)[:256] if source else "", time.time(), raw)


def _items(body: bytes, what: str) -> list[tuple[str, Any]]:
    """A JSON body holding one object or a list of 1..MAX_BATCH_ITEMS: (where, item) pairs for error messages."""
    payload = loads(body)
    if not isinstance(payload, list):
        return [("body", payload)]
    if not 1 <= len(payload) <= MAX_BATCH_ITEMS:
        raise EventError(f"body: expected 1..{MAX_BATCH_ITEMS} {what}")
    return [(f"body[{i}]", item) for i, item in enumerate(payload)]


def parse_batch(body: bytes, id_factory: Any) -> list[InferenceEvent]:
    """Parse a plain v2 batch: one object or a list of objects with `inputs`, optional `outputs` and `id`.

    Without an `id` a fresh one is generated (`id_factory()`), so such a batch cannot be deduplicated.
    """
    now = time.time()
    events: list[InferenceEvent] = []
    for where, item in _items(body, "v2 requests"):
        if not isinstance(item, dict):
            raise EventError(f"{where}: expected a JSON object with 'inputs'")
        event_id = _check_id(item["id"], f"{where}.id") if "id" in item else str(id_factory())
        events.append(
            InferenceEvent(event_id, "request", parse_tensors(item, "inputs", where), "v2-batch", now)
        )
        if "outputs" in item:
            outputs = parse_tensors(item, "outputs", where)
            if outputs[0].shape[0] != events[-1].rows:
                raise EventError(f"{where}.outputs: batch dimension differs from inputs")
            events.append(InferenceEvent(event_id, "response", outputs, "v2-batch", now))
    return events


def parse_feedback(body: bytes) -> list[Feedback]:
    """Parse `{"id": ..., "labels": [..]}` or a list of those: labels for the rows of an inference id."""
    now = time.time()
    out: list[Feedback] = []
    for where, item in _items(body, "feedback objects"):
        if not isinstance(item, dict):
            raise EventError(f"{where}: expected an object with 'id' and 'labels'")
        event_id = _check_id(item.get("id"), f"{where}.id")
        labels = item.get("labels", [item["label"]] if "label" in item else None)
        if (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= 1_000_000
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in labels)
        ):
            raise EventError(f"{where}.labels: expected a list of non-negative integer class labels")
        out.append(Feedback(event_id, tuple(labels), now))
    return out
