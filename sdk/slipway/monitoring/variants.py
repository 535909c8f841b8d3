"""Per-variant numbers for A/B experiments: what each version of one model served, and how well.

The variant of an inference is the model version its request names (an experiment maps versions to A and B).
The store is read newest first back to `since`; responses and feedback are joined to requests by inference id
in whichever order they were stored. A row is `labelled` when feedback gave it a class label and its response
an output to compare with: the argmax of the response's first output tensor over the row, or, when that
output holds one value per row, the value itself as a class id. A row is `scored` when feedback gave it a
score. Only headers are decoded for records that cannot count, so a scan costs little beyond its own model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from slipway.core.errors import DataError
from slipway.monitoring.store import iter_records_newest_first

logger = logging.getLogger(__name__)

MAX_SCAN_RECORDS = 2_000_000
# Records are stamped when parsed but stored in commit order, so one may be a little older than a record stored
# before it: the scan reads this many seconds past `since` before it stops (older requests are not counted).
ORDER_SLACK_S = 10.0
UNKNOWN_VERSION = ""  # the key of requests that named no version


@dataclass
class VariantStats:
    """Counts of one version's requests and rows, joined with responses and feedback."""

    requests: int = 0
    rows: int = 0
    responses: int = 0  # requests whose response was captured
    labelled: int = 0  # rows with a feedback label and a response output to compare it with
    correct: int = 0  # labelled rows whose predicted class equals the label
    scored: int = 0  # rows with a feedback score
    score_sum: float = 0.0
    score_sumsq: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The counts plus `accuracy` and `score_mean` (null when there is nothing to divide by)."""
        return {
            "requests": self.requests,
            "rows": self.rows,
            "responses": self.responses,
            "labelled": self.labelled,
            "correct": self.correct,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "scored": self.scored,
            "score_sum": self.score_sum,
            "score_sumsq": self.score_sumsq,
            "score_mean": self.score_sum / self.scored if self.scored else None,
        }


@dataclass
class _Feedback:
    labels: list[int]  # empty when only scores were sent
    scores: list[float] | None


@dataclass
class _Request:
    """A counted request whose response or feedback has not been read yet (stored before it, or never)."""

    stats: VariantStats
    rows: int
    responded: bool = False
    predictions: list[int] | None = None  # class per row, -1 where the output gives none
    feedback: _Feedback | None = None

    def complete(self) -> bool:
        return self.responded and self.feedback is not None

    def finish(self) -> None:
        """Add what was joined to the variant's counts."""
        stats, rows, fb = self.stats, self.rows, self.feedback
        stats.responses += self.responded
        if fb is None:
            return
        pred = self.predictions  # plain lists: rows are few per request, numpy's per-call cost would dominate
        if pred is not None and len(pred) == rows and len(fb.labels) == rows:
            for predicted, label in zip(pred, fb.labels, strict=True):
                if predicted >= 0:
                    stats.labelled += 1
                    stats.correct += predicted == label
        if fb.scores is not None and len(fb.scores) == rows:
            stats.scored += rows
            stats.score_sum += sum(fb.scores)
            stats.score_sumsq += sum(score * score for score in fb.scores)


def predicted_classes(tensor: dict[str, Any]) -> list[int]:
    """Class per row of a v2 output tensor: argmax over the row, or the value itself when a row has one value
    (class ids; -1 where that value is not a non-negative integer). Empty when the tensor holds no values."""
    shape = tensor["shape"]
    rows = int(shape[0]) if shape else 1
    values = np.asarray(tensor["data"], dtype=np.float64)
    if rows == 0 or values.size == 0:  # e.g. shape [2**31 - 1, 0]: never a list per declared row
        return []
    per_row = values.reshape(rows, -1)
    if per_row.shape[1] > 1:
        return per_row.argmax(axis=1).tolist()  # type: ignore[no-any-return]
    ids = per_row[:, 0]
    is_class = (ids >= 0) & (ids < 2**31) & (ids == np.floor(ids))
    return np.where(is_class, ids, -1).astype(np.int64).tolist()  # type: ignore[no-any-return]


class _Join:
    """Requests of one model joined with their responses and feedback by inference id, in either order."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.variants: dict[str, VariantStats] = {}
        self.responses: dict[str, list[int] | None] = {}  # read before their request (the usual order)
        self.feedback: dict[str, _Feedback] = {}
        self.waiting: dict[str, _Request] = {}
        self.unreadable = 0

    def add_feedback(self, event_id: str, header: dict[str, Any]) -> None:
        labels, scores = header["labels"], header.get("scores")
        if not isinstance(labels, list) or not (scores is None or isinstance(scores, list)):
            raise TypeError("feedback labels and scores must be lists")
        fb = _Feedback(labels, scores)
        pending = self.waiting.get(event_id)
        if pending is None or pending.feedback is not None:
            self.feedback.setdefault(event_id, fb)
            return
        pending.feedback = fb
        if pending.complete():
            self.waiting.pop(event_id).finish()

    def add_response(self, event_id: str, header: dict[str, Any], body: memoryview) -> None:
        pending = self.waiting.get(event_id)
        if pending is None and header.get("model_name") not in (self.model, None):
            return  # another model's: not decoded
        predictions: list[int] | None
        try:
            predictions = predicted_classes(orjson.loads(body)["outputs"][0])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            predictions, self.unreadable = None, self.unreadable + 1  # captured, but nothing to compare
        if pending is None or pending.responded:
            self.responses.setdefault(event_id, predictions)
            return
        pending.responded, pending.predictions = True, predictions
        if pending.complete():
            self.waiting.pop(event_id).finish()

    def add_request(self, event_id: str, header: dict[str, Any], body: memoryview) -> None:
        shape = orjson.loads(body)["inputs"][0]["shape"]
        rows = int(shape[0]) if shape else 1
        version = header.get("model_version") or UNKNOWN_VERSION
        stats = self.variants.setdefault(str(version), VariantStats())
        stats.requests += 1
        stats.rows += rows
        request = _Request(stats, rows, feedback=self.feedback.pop(event_id, None))
        if event_id in self.responses:
            request.responded, request.predictions = True, self.responses.pop(event_id)
        if request.complete():
            request.finish()
            return
        previous = self.waiting.pop(event_id, None)  # an id reused by an older request: it keeps what it has
        if previous is not None:
            previous.finish()
        self.waiting[event_id] = request

    def finish(self) -> dict[str, dict[str, Any]]:
        for request in self.waiting.values():
            request.finish()
        self.waiting.clear()
        return {version: self.variants[version].to_json() for version in sorted(self.variants)}


def variant_summary(
    data_dir: str | Path, model: str, since: float, max_records: int = MAX_SCAN_RECORDS
) -> dict[str, Any]:
    """Counts per version of `model` for requests stored at or after `since` (unix seconds).

    Reads at most `max_records` records, newest first; `truncated` says the scan stopped there before reaching
    `since`, so the oldest requests in range are missing. Requests of other models are skipped; so are
    responses that name another model (those naming none are joined by id).
    """
    if not model:
        raise DataError("model: expected a model name")
    if not since >= 0:
        raise DataError(f"since: expected unix seconds >= 0, got {since!r}")
    if max_records < 1:
        raise DataError(f"max_records: expected at least 1, got {max_records}")
    join = _Join(model)
    stop_at = since - ORDER_SLACK_S
    scanned = 0
    truncated = False
    for record in iter_records_newest_first(Path(data_dir)):
        payload = memoryview(record.payload)
        newline = record.payload.find(b"\n")
        head, body = (payload[:newline], payload[newline + 1 :]) if newline >= 0 else (payload, payload[:0])
        try:
            header = orjson.loads(head)
            kind, event_id, stamped = header["k"], header["id"], float(header["t"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            kind, event_id, stamped = None, "", since
        if stamped < stop_at:
            break
        if scanned >= max_records:
            truncated = True
            break
        scanned += 1
        if kind is None:
            join.unreadable += 1
            continue
        try:
            if kind == "feedback":
                join.add_feedback(event_id, header)
            elif kind == "response":
                join.add_response(event_id, header, body)
            elif kind == "request" and header.get("model_name") == model and stamped >= since:
                join.add_request(event_id, header, body)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
            join.unreadable += 1
    variants = join.finish()
    if join.unreadable:
        logger.warning("variants: unreadable records skipped", extra={"records": join.unreadable})
    return {
        "model": model,
        "since": since,
        "truncated": truncated,
        "records_scanned": scanned,
        "variants": variants,
    }
