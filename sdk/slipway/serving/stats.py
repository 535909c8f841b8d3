"""What the server counts: Triton's statistics extension per model, and Prometheus metrics for scraping.

Statistics are plain integers updated on the event loop thread (no locks on the hot path); the Prometheus
children are resolved once per (model, protocol) so a request costs a few dict lookups, and model labels come
only from models that were loaded, at startup or by a load request (an unknown name is counted as "_unknown", so
fuzzed names cannot grow the registry). The series are per model name: they continue across a reload.

During an A/B experiment, `slipway_experiment_*` count the requests assigned to each variant (what the
experiment's guardrails read: requests, errors by code, a latency histogram fine enough for a p99); their
experiment and variant labels come from specs the server accepted, never from requests.

`TritonMetrics` renders Triton's own series (`nv_inference_*`, labels `model` and `version`) for the metrics
port, read at scrape time from the same `ModelStats` the statistics extension answers with, so the two always
agree and the chart's dashboard and alerts (written for Triton in KServe) read a local server too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slipway.core.errors import ModelExecutionError, OverloadedError

UNKNOWN_MODEL = "_unknown"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# 1-1.5-2-3-4-5-7.5 per decade from 1 ms to 10 s (and 0.5 ms below): a bucket's bounds differ by at most 1.5x,
# so a p99 interpolated within one is close enough to judge a guardrail such as "p99 <= 50 ms".
EXPERIMENT_LATENCY_BUCKETS = (
    0.0005,
    *(round(m * 10.0**e, 6) for e in range(-3, 1) for m in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5)),
    10.0,
)


# Triton's `reason` label of nv_inference_request_failure (Triton 24.x and later), each series present from the
# model's load on, at 0.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def failure_reason(err: BaseException) -> str:
    """Triton's reason for a failed request: REJECTED (queue full, timed out in the queue, shutting down),
    CANCELED (the caller went away), BACKEND (the model's execution failed), OTHER (anything else)."""
    if isinstance(err, OverloadedError):
        return "REJECTED"
    if isinstance(err, ModelExecutionError):
        return "BACKEND"
    if isinstance(err, asyncio.CancelledError):
        return "CANCELED"
    return "OTHER"


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class _BatchStats:
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)


@dataclass
class ModelStats:
    """Triton's per-model statistics (statistics extension): counts and cumulative nanoseconds."""

    name: str
    version: str
    last_inference_ms: int = 0
    inference_count: int = 0
    execution_count: int = 0
    success: _Duration = field(default_factory=_Duration)
    fail: _Duration = field(default_factory=_Duration)
    queue: _Duration = field(default_factory=_Duration)
    compute_input: _Duration = field(default_factory=_Duration)
    compute_infer: _Duration = field(default_factory=_Duration)
    compute_output: _Duration = field(default_factory=_Duration)
    batches: dict[int, _BatchStats] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))

    def record_request(self, ok: bool, duration_ns: int, rows: int = 0, reason: str = "OTHER") -> None:
        """One answered request; a failed one is counted under its Triton `reason` (see `failure_reason`)."""
        if ok:
            self.success.add(duration_ns)
            self.inference_count += rows
            self.last_inference_ms = time.time_ns() // 1_000_000
        else:
            self.fail.add(duration_ns)
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def record_batch(
        self, rows: int, requests: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int
    ):
        """One model execution of `rows` rows gathered from `requests` requests."""
        self.execution_count += 1
        self.queue.add(queue_ns, requests)
        self.compute_input.add(input_ns, requests)
        self.compute_infer.add(infer_ns, requests)
        self.compute_output.add(output_ns, requests)
        per_batch = self.batches.setdefault(rows, _BatchStats())
        per_batch.compute_input.add(input_ns)
        per_batch.compute_infer.add(infer_ns)
        per_batch.compute_output.add(output_ns)

    def as_dict(self) -> dict[str, Any]:
        """JSON shaped like Triton's `GET /v2/models/<m>/stats` entry (and ModelStatistics protobuf fields)."""
        zero = _Duration().as_dict()
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": zero,
                "cache_miss": zero,
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
        }


class ServerMetrics:
    """Prometheus metrics in a registry of their own (several servers may live in one test process)."""

    def __init__(self, models: list[str]) -> None:
        self.registry = CollectorRegistry()
        self._models = set(models)
        self.requests = Counter(
            "slipway_inference_requests",
            "Inference requests received",
            ["model", "protocol"],
            registry=self.registry,
        )
        self.failures = Counter(
            "slipway_inference_failures",
            "Inference requests that failed, by status code",
            ["model", "protocol", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "slipway_inference_latency_seconds",
            "End-to-end request latency inside the server",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "slipway_batch_size",
            "Rows per model execution",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "slipway_queue_depth", "Requests waiting in the model's queue", ["model"], registry=self.registry
        )
        self.experiment_requests = Counter(
            "slipway_experiment_requests",
            "Inference requests assigned to a variant of an A/B experiment, by status code",
            ["model", "experiment", "variant", "code"],
            registry=self.registry,
        )
        self.experiment_latency = Histogram(
            "slipway_experiment_request_duration_seconds",
            "End-to-end latency inside the server of the requests assigned to a variant",
            ["model", "experiment", "variant"],
            buckets=EXPERIMENT_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._experiment_children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def add_model(self, model: str) -> None:
        """A model loaded after startup (model control) is counted under its own name from now on."""
        self._models.add(model)

    def label(self, model: str) -> str:
        return model if model in self._models else UNKNOWN_MODEL

    def observe_request(self, model: str, protocol: str, seconds: float, code: int) -> None:
        key = (self.label(model), protocol)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if code != 200:
            self.failures.labels(key[0], protocol, str(code)).inc()

    def observe_experiment(
        self, model: str, experiment: str, variant: str, seconds: float, code: int
    ) -> None:
        """One request assigned to a variant: counted by its status code ("200" or the error's)."""
        key = (model, experiment, variant, code)
        children = self._experiment_children.get(key)
        if children is None:
            children = (
                self.experiment_requests.labels(model, experiment, variant, str(code)),
                self.experiment_latency.labels(model, experiment, variant),
            )
            self._experiment_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_queue(self, model: str, depth: Callable[[], int]) -> None:
        """The queue depth is read at scrape time, so enqueueing costs nothing."""
        self.queue_depth.labels(model).set_function(depth)

    def unwatch_queue(self, model: str) -> None:
        """An unloaded model's queue gauge goes away (and stops holding the unloaded batcher)."""
        with contextlib.suppress(KeyError):
            self.queue_depth.remove(model)


# Triton's per-model counters with Triton's help texts; durations are the statistics extension's cumulative
# nanoseconds in whole microseconds (Triton adds ns // 1000 per request, so its sums can be a few us lower).
_TRITON_COUNTERS: tuple[tuple[str, str, Callable[[ModelStats], int]], ...] = (
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
)
_FAILURE_HELP = "Number of failed inference requests, all batch sizes"
_PENDING_HELP = "Instantaneous number of pending requests awaiting execution per-model."
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

# (statistics of one served model version, its requests waiting in the queue)
ServedStats = Callable[[], Iterable[tuple[ModelStats, int]]]


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class TritonMetrics:
    """Triton's metrics endpoint: `nv_inference_*` per served model version, then the `slipway_*` series.

    Read at scrape time from `served()` (on the event loop, so a scrape sees every counter of a request or
    none): nothing is counted twice, and `/v2/models/stats` and these series cannot disagree. Counters keep
    Triton's names without a `_total` suffix (Triton's exposition), which is why they are rendered here rather
    than by prometheus_client. A version's series start at zero when it is loaded and go when it is unloaded,
    as Triton's do.
    """

    def __init__(self, served: ServedStats, extra: CollectorRegistry | None = None) -> None:
        self._served = served
        self._extra = extra

    def render_triton(self) -> str:
        """Triton's text exposition of the served versions: counters, failures by reason, pending requests."""
        served = [
            (s, pending, f'model="{_label_value(s.name)}"', f'version="{_label_value(s.version)}"')
            for s, pending in self._served()
        ]
        lines: list[str] = []

        def family(name: str, help_text: str, kind: str, samples: Iterable[str]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

        for name, help_text, value in _TRITON_COUNTERS:
            family(name, help_text, "counter", (f"{name}{{{m},{v}}} {value(s)}" for s, _, m, v in served))
        family(
            "nv_inference_request_failure",
            _FAILURE_HELP,
            "counter",
            (
                f'nv_inference_request_failure{{{m},reason="{reason}",{v}}} {count}'
                for s, _, m, v in served
                for reason, count in sorted(s.failures.items())
            ),
        )
        family(
            "nv_inference_pending_request_count",
            _PENDING_HELP,
            "gauge",
            (f"nv_inference_pending_request_count{{{m},{v}}} {pending}" for _, pending, m, v in served),
        )
        return "\n".join(lines) + "\n"

    def render(self) -> bytes:
        """The metrics port's body: Triton's series, then the `slipway_*` registry (when given)."""
        body = self.render_triton().encode()
        return body + generate_latest(self._extra) if self._extra is not None else body

    def app(self) -> Any:
        """The ASGI app of the metrics port: `GET /metrics` and nothing else, as Triton's metrics port."""
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def metrics(request: Request) -> Response:
            return Response(self.render(), 200, media_type=PROMETHEUS_TEXT)

        return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
