"""Parse and validate what KServe's payload logger sends, and plain Open Inference Protocol v2 batches.

KServe's logger posts one CloudEvent per request and one per response (binary content mode: `ce-*` headers,
the inference body as received). `ce-id` is the inference id shared by a request and its response; `ce-type`
says which one it is. Structured mode (`application/cloudevents+json`) is accepted too. A body is plain v2
JSON or uses Triton's binary tensor extension (a JSON header, then raw tensor bytes), which tritonclient and
Slipway's own client send. Every rejection is a SlipwayError whose message names the offending field, so a
server maps it to 400/415 and never to 500.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import numpy as np
import orjson

from slipway.core.errors import EventError, UnsupportedMediaTypeError
from slipway.serving.datatypes import V2_TO_NUMPY
from slipway.serving.http_body import HEADER_LENGTH, REQUEST_TYPE, RESPONSE_TYPE, json_header_size

EVENT_KINDS: dict[str, Literal["request", "response"]] = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
MAX_TENSORS = 16
MAX_RANK = 8
MAX_ID_CHARS = 256
MAX_BATCH_ITEMS = 1024
MAX_NAME_CHARS = 256
MAX_FEEDBACK_ROWS = 1_000_000
MAX_ABS_SCORE = 1e15  # squares summed over millions of rows stay finite
JSON_TYPES = ("application/json",)
BINARY_TYPES = ("application/octet-stream",)
STRUCTURED_TYPES = ("application/cloudevents+json",)
V2_PATH_RE = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/infer)?/?$")
ISVC_ATTR = "inferenceservicename"  # the CloudEvent extension KServe's logger names the InferenceService with


class ModelRef(NamedTuple):
    """Which model (and version) an event belongs to; None where the sender did not say."""

    name: str | None = None
    version: str | None = None

    def or_else(self, other: ModelRef) -> ModelRef:
        """Fill what this one lacks from `other` (a less authoritative source)."""
        return ModelRef(
            self.name if self.name is not None else other.name,
            self.version if self.version is not None else other.version,
        )


NO_MODEL = ModelRef()


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
    model_name: str | None = None
    model_version: str | None = None

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
            {
                "k": self.kind,
                "id": self.event_id,
                "t": self.received_at,
                "src": self.source,
                "model_name": self.model_name,
                "model_version": self.model_version,
            }
        )
        if self.raw_body is not None:
            return header + b"\n" + self.raw_body
        key = "inputs" if self.kind == "request" else "outputs"
        body = orjson.dumps({key: [t.to_json() for t in self.tensors]}, option=orjson.OPT_SERIALIZE_NUMPY)
        return header + b"\n" + body


@dataclass(frozen=True)
class Feedback:
    """Ground truth for the rows of one inference, sent later by the application: class labels, and/or a
    score per row (a business metric such as a click or a rating, for experiments without class labels).

    `labels` is empty when only scores were sent; `scores` is None when none were sent."""

    event_id: str
    labels: tuple[int, ...]
    received_at: float = 0.0
    scores: tuple[float, ...] | None = None

    @property
    def key(self) -> str:
        return f"feedback:{self.event_id}"

    def to_payload(self) -> bytes:
        """Header-only record; `labels` is always there (empty for scores only) as window readers expect."""
        header: dict[str, Any] = {
            "k": "feedback",
            "id": self.event_id,
            "t": self.received_at,
            "labels": self.labels,
        }
        if self.scores is not None:
            header["scores"] = self.scores
        return orjson.dumps(header) + b"\n"


def decode_payload(payload: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split a stored record into its header (kind, id, time, ...) and its v2 body (None for feedback)."""
    head, _, body = payload.partition(b"\n")
    return orjson.loads(head), (orjson.loads(body) if body else None)


def record_info(payload: bytes) -> dict[str, Any]:
    """What a stored record says about its event, without decoding the tensors.

    Records written before model fields existed have no `model_name`/`model_version`: they read as null, so an
    older store opens and reads unchanged (no rewrite)."""
    header = orjson.loads(payload.partition(b"\n")[0])
    return {
        "id": header.get("id"),
        "kind": header.get("k"),
        "received_at": header.get("t"),
        "source": header.get("src", ""),
        "model_name": header.get("model_name"),
        "model_version": header.get("model_version"),
    }


def media_type(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def loads(body: bytes | str | memoryview, where: str = "body") -> Any:
    """Parse JSON or raise a 400 that says where."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"{where}: not valid JSON ({exc})") from exc


def split_body(body: bytes, header_length: str | None, where: str) -> tuple[Any, memoryview]:
    """The JSON part of a v2 body and the binary tensor data after it (empty for plain JSON).

    The JSON part is `header_length` bytes when the sender gives it (Triton's binary tensor extension), else
    the whole body when that is JSON, else the JSON value the body starts with: KServe's payload logger
    forwards a binary body without the `Inference-Header-Content-Length` header.
    """
    view = memoryview(body)
    if header_length is not None:
        size = json_header_size(header_length, len(body))
        return loads(view[:size], f"{where} (JSON header)"), view[size:]
    try:
        return orjson.loads(body), view[len(view) :]
    except orjson.JSONDecodeError as exc:
        error = exc
    try:  # latin-1 maps each byte to one character, so the end index is the header's size in bytes
        _, end = json.JSONDecoder().raw_decode(body.decode("latin-1"))
    except (ValueError, RecursionError):
        raise EventError(
            f"{where}: not valid JSON, nor a JSON header followed by binary tensor data ({error})"
        ) from None
    return loads(view[:end], f"{where} (JSON header)"), view[end:]


class _BinaryData:
    """The bytes after a body's JSON header, handed out in the order tensors declare `binary_data_size`."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.offset = 0
        self.claimed = False

    def take(self, size: Any, field: str) -> memoryview:
        where = f"{field}.parameters.binary_data_size"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise EventError(f"{where}: expected a non-negative integer, got {size!r:.40}")
        left = len(self.data) - self.offset
        if size > left:
            raise EventError(f"{where}: {size} bytes, but only {left} binary bytes follow the JSON header")
        self.claimed = True
        self.offset += size
        return self.data[self.offset - size : self.offset]

    def check_consumed(self, where: str) -> None:
        """Bytes no tensor claimed mean the sender's sizes are wrong: refuse rather than guess."""
        extra = len(self.data) - self.offset
        if extra:
            raise EventError(
                f"{where}: {extra} binary bytes after the JSON header belong to no tensor "
                "(parameters.binary_data_size)"
            )


def _check_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS or not value.isprintable():
        raise EventError(
            f"{field}: expected a non-empty printable string of at most {MAX_ID_CHARS} characters"
        )
    return value


def _check_name(value: Any, field: str) -> str | None:
    """A model name or version given explicitly (None when absent; versions may be integers)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise EventError(
            f"{field}: expected a non-empty printable string of at most {MAX_NAME_CHARS} characters"
        )
    return value


def _derived_name(value: Any) -> str | None:
    """A name read from event metadata: an unusable one is dropped, it never refuses the event."""
    try:
        return _check_name(value, "")
    except EventError:
        return None


def model_from_fields(fields: Mapping[str, Any], where: str) -> ModelRef:
    """`model_name` / `model_version` given explicitly: v2 response or batch fields, query parameters."""
    return ModelRef(
        _check_name(fields.get("model_name"), f"{where}.model_name"),
        _check_name(fields.get("model_version"), f"{where}.model_version"),
    )


def model_from_cloudevent(attrs: Mapping[str, Any]) -> ModelRef:
    """A v2 path (`/v2/models/{name}/versions/{v}/infer`) in `source`, else KServe's InferenceService name."""
    try:
        path = urlsplit(str(attrs.get("source") or "")).path
    except ValueError:
        path = ""
    match = V2_PATH_RE.search(path)
    ref = ModelRef()
    if match:
        version = match["version"]
        ref = ModelRef(
            _derived_name(unquote(match["name"])), _derived_name(unquote(version)) if version else None
        )
    return ref.or_else(ModelRef(_derived_name(attrs.get(ISVC_ATTR))))


def _from_json(data: Any, shape: list[int], datatype: str, field: str) -> np.ndarray:
    if not isinstance(data, list):
        raise EventError(
            f"{field}.data: expected a JSON array (or parameters.binary_data_size with binary tensor data)"
        )
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
    return arr


def _from_binary(raw: memoryview, shape: list[int], datatype: str, field: str) -> np.ndarray:
    """Raw tensor bytes (row-major, little-endian, as Triton sends them) to a flat array of the datatype."""
    dtype = V2_TO_NUMPY[datatype]
    need = math.prod(shape) * dtype.itemsize
    if len(raw) != need:
        raise EventError(
            f"{field}.parameters.binary_data_size: {len(raw)} bytes, but shape {shape} of {datatype} "
            f"needs {need}"
        )
    if dtype.kind == "b":
        arr = np.frombuffer(raw, dtype=np.uint8) != 0
    else:  # astype copies: the array is aligned, native-endian and independent of the request body
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise EventError(f"{field}: NaN or infinite values in the binary data")
    return arr


def parse_tensor(obj: Any, field: str, binary: _BinaryData | None = None) -> Tensor:
    """Validate one v2 tensor (`name`, `shape`, `datatype`, then `data` or binary data) as a numpy array."""
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
    if not isinstance(datatype, str) or datatype not in V2_TO_NUMPY:
        raise EventError(f"{field}.datatype: expected one of {sorted(V2_TO_NUMPY)}, got {datatype!r:.40}")
    params = obj.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise EventError(f"{field}.parameters: expected an object")
    size = params.get("binary_data_size") if params else None
    if size is None:
        return Tensor(name, tuple(shape), datatype, _from_json(obj.get("data"), shape, datatype, field))
    if "data" in obj:
        raise EventError(f"{field}: give either data or parameters.binary_data_size, not both")
    raw = (binary or _BinaryData(memoryview(b""))).take(size, field)
    return Tensor(name, tuple(shape), datatype, _from_binary(raw, shape, datatype, field))


def parse_tensors(body: Any, key: str, where: str, binary: _BinaryData | None = None) -> tuple[Tensor, ...]:
    """Validate the `inputs` or `outputs` list of a v2 payload; binary data comes from `binary`, in order."""
    if not isinstance(body, dict):
        raise EventError(f"{where}: expected a JSON object with '{key}'")
    items = body.get(key)
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_TENSORS:
        raise EventError(f"{where}.{key}: expected a list of 1..{MAX_TENSORS} tensors")
    tensors = tuple(parse_tensor(t, f"{where}.{key}[{i}]", binary) for i, t in enumerate(items))
    rows = {t.shape[0] for t in tensors}
    if len(rows) != 1:
        raise EventError(f"{where}.{key}: tensors disagree on the batch dimension {sorted(rows)}")
    return tensors


def parse_cloudevent(
    headers: Mapping[str, str], body: bytes, defaults: ModelRef = NO_MODEL
) -> InferenceEvent:
    """Parse one payload-logger CloudEvent (binary or structured mode) with the cloudevents package.

    The model is what the v2 body says (`model_name`/`model_version`, in responses), else `defaults` (the
    request's query), else the event's `source` path or InferenceService name.
    """
    from cloudevents.http import from_http

    lowered = {k.lower(): v for k, v in headers.items()}
    mtype = media_type(lowered.get("content-type"))
    binary_mode = "ce-specversion" in lowered
    if binary_mode and mtype and mtype not in JSON_TYPES + BINARY_TYPES:  # absent: the body says what it is
        raise UnsupportedMediaTypeError(
            "content-type: binary-mode events must be application/json or application/octet-stream (binary "
            f"tensor extension), got {mtype!r:.60}"
        )
    if not binary_mode and mtype not in STRUCTURED_TYPES:
        if mtype in JSON_TYPES + BINARY_TYPES:
            raise EventError(
                "ce-specversion: header missing (binary mode) and body is not a structured event"
            )
        raise UnsupportedMediaTypeError(
            "content-type: expected application/json or application/octet-stream (binary mode) or "
            f"application/cloudevents+json, got {mtype!r:.60}"
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
    if data is None:
        raise EventError("data: the event has no body")
    if isinstance(data, bytes | bytearray | str):
        raw = data.encode() if isinstance(data, str) else bytes(data)
        header_length = lowered.get(HEADER_LENGTH) if binary_mode else None
        payload, rest = split_body(raw, header_length, "data")
    else:
        payload, rest = data, memoryview(b"")
    binary = _BinaryData(rest)
    tensors = parse_tensors(payload, "inputs" if kind == "request" else "outputs", "data", binary)
    binary.check_consumed("data")
    if binary.claimed:
        raw = None  # not JSON as a whole: stored re-encoded as plain v2 JSON
    model = model_from_fields(payload, "data").or_else(defaults).or_else(model_from_cloudevent(attrs))
    source = attrs.get("source")
    return InferenceEvent(
        event_id,
        kind,
        tensors,
        str(source)[:256] if source else "",
        time.time(),
        raw,
        model.name,
        model.version,
    )


def _items(payload: Any, what: str) -> list[tuple[str, Any]]:
    """One object or a list of 1..MAX_BATCH_ITEMS: (where, item) pairs for error messages."""
    if not isinstance(payload, list):
        return [("body", payload)]
    if not 1 <= len(payload) <= MAX_BATCH_ITEMS:
        raise EventError(f"body: expected 1..{MAX_BATCH_ITEMS} {what}")
    return [(f"body[{i}]", item) for i, item in enumerate(payload)]


def _has_output_tensors(item: dict[str, Any]) -> bool:
    """Whether `outputs` holds tensors: entries with neither shape nor data only name outputs to return."""
    outputs = item.get("outputs")
    if outputs is None:
        return False
    requested = isinstance(outputs, list) and bool(outputs)
    return not (
        requested and all(isinstance(o, dict) and "shape" not in o and "data" not in o for o in outputs)
    )


def parse_batch(
    body: bytes, id_factory: Any, header_length: str | None = None, defaults: ModelRef = NO_MODEL
) -> list[InferenceEvent]:
    """Parse a plain v2 batch: one object or a list of objects with `inputs`, optional `outputs` and `id`.

    The body is JSON or uses the binary tensor extension (tensor bytes follow the JSON in the order tensors
    appear). Without an `id` a fresh one is generated (`id_factory()`), so such a batch cannot be
    deduplicated.
    An item's `model_name`/`model_version` override `defaults` (the request's query).
    """
    now = time.time()
    payload, rest = split_body(body, header_length, "body")
    binary = _BinaryData(rest)
    events: list[InferenceEvent] = []
    for where, item in _items(payload, "v2 requests"):
        if not isinstance(item, dict):
            raise EventError(f"{where}: expected a JSON object with 'inputs'")
        event_id = _check_id(item["id"], f"{where}.id") if "id" in item else str(id_factory())
        model = model_from_fields(item, where).or_else(defaults)
        inputs = parse_tensors(item, "inputs", where, binary)
        events.append(
            InferenceEvent(event_id, "request", inputs, "v2-batch", now, None, model.name, model.version)
        )
        if _has_output_tensors(item):
            outputs = parse_tensors(item, "outputs", where, binary)
            if outputs[0].shape[0] != events[-1].rows:
                raise EventError(f"{where}.outputs: batch dimension differs from inputs")
            events.append(
                InferenceEvent(
                    event_id, "response", outputs, "v2-batch", now, None, model.name, model.version
                )
            )
    binary.check_consumed("body")
    return events


def _feedback_scores(item: dict[str, Any], field: str) -> tuple[float, ...] | None:
    """`scores` (one finite number per row) or `score` (a one-row inference); None when neither is given."""
    if "scores" not in item and "score" not in item:
        return None
    scores = item["scores"] if "scores" in item else [item["score"]]
    if (
        not isinstance(scores, list)
        or not 1 <= len(scores) <= MAX_FEEDBACK_ROWS
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and abs(v) <= MAX_ABS_SCORE for v in scores
        )
    ):
        what = "a finite number" if field.endswith(".score") else "a list of finite numbers, one per row"
        raise EventError(f"{field}: expected {what} (at most {MAX_ABS_SCORE:g} in magnitude)")
    return tuple(float(v) for v in scores)


def parse_feedback(body: bytes) -> list[Feedback]:
    """Parse `{"id": ..., "labels": [..]}` or a list of those: labels for the rows of an inference id.

    Each item may add a score per row (`scores: [..]`, or `score` for a one-row inference) and may then leave
    the labels out: an experiment judged on a score has no class labels. Labels given with scores must be as
    many as the scores.
    """
    now = time.time()
    out: list[Feedback] = []
    for where, item in _items(loads(body), "feedback objects"):
        if not isinstance(item, dict):
            raise EventError(f"{where}: expected an object with 'id' and 'labels'")
        event_id = _check_id(item.get("id"), f"{where}.id")
        scores_field = f"{where}.scores" if "scores" in item or "score" not in item else f"{where}.score"
        scores = _feedback_scores(item, scores_field)
        labels = item.get("labels", [item["label"]] if "label" in item else None)
        if labels is None and scores is not None:
            out.append(Feedback(event_id, (), now, scores))
            continue
        if (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= MAX_FEEDBACK_ROWS
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in labels)
        ):
            raise EventError(f"{where}.labels: expected a list of non-negative integer class labels")
        if scores is not None and len(scores) != len(labels):
            if scores_field.endswith(".score"):
                raise EventError(
                    f"{scores_field}: one score is for a one-row inference; send `scores`, one per row"
                )
            raise EventError(
                f"{scores_field}: expected a list of finite numbers, one per row ({len(scores)} scores for "
                f"{len(labels)} labels)"
            )
        out.append(Feedback(event_id, tuple(labels), now, scores))
    return out
