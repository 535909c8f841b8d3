"""`slipway monitor serve`: the HTTP endpoint (Starlette on uvicorn) KServe's payload logger posts to.

Ingest is acknowledged only after the events are fsynced (group commit in `store`). Drift runs in a worker
thread every `drift_every` captured rows or on `POST /v1/drift/run`, never on the event loop. Every deliberate
failure is a SlipwayError mapped to its 4xx (503 when the write queue is full), so malformed input never
yields a 500.

`--restricted-api GROUPS:KEY=VALUE` (Triton's restricted-API syntax, serving/restricted.py) puts route groups
behind a header: a request without it gets 403 before its body is read. Unlisted groups stay open.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import re
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from slipway.core.errors import DataError, NotFoundError, SlipwayError, UnsupportedMediaTypeError
from slipway.monitoring import events as ev
from slipway.monitoring.drift import DriftConfig, DriftResult, FeatureSet
from slipway.monitoring.store import AppendOutcome, Record, SegmentStore, StoreConfig
from slipway.serving.http_body import HEADER_LENGTH, read_limited_body
from slipway.serving.restricted import RestrictedGroups

logger = logging.getLogger(__name__)

REPORT_ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z\-]{0,80}$")
OFFLOAD_PARSE_BYTES = 256 * 1024
MAX_WINDOW_ROWS = 100_000
MAX_LISTED_EVENTS = 10_000
SINCE_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{0,9})?")  # plain decimal unix seconds: no sign, exponent, inf
Handler = Callable[[Request], Awaitable[Response]]


class MonitorSettings(BaseModel):
    """Everything `monitor serve` needs; a wrong key is an error that names it."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path
    reference: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    window_size: int = Field(default=500, ge=2)
    drift_every: int | None = Field(
        default=None, ge=0, description="Rows between drift runs; None = window_size, 0 = off"
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    input_name: str | None = None
    output_name: str | None = None
    max_reports: int = Field(default=50, ge=1)
    drift: DriftConfig = DriftConfig()
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    max_segments: int = Field(default=32, ge=2)
    max_age_seconds: float | None = 7 * 24 * 3600.0
    dedupe_ids: int = Field(default=200_000, ge=1)
    fsync: bool = True
    restricted_api: RestrictedGroups = Field(default_factory=RestrictedGroups, repr=False)

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            segment_bytes=self.segment_bytes,
            max_segments=self.max_segments,
            max_age_seconds=self.max_age_seconds,
            dedupe_ids=self.dedupe_ids,
            fsync=self.fsync,
        )


class MonitorMetrics:
    """Prometheus metrics on a registry of their own, so several apps can live in one test process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "slipway_monitor_events_ingested", "Events durably stored, by kind.", ["kind"], registry=r
        )
        self.rows = Counter("slipway_monitor_rows_ingested", "Input rows (samples) stored.", registry=r)
        self.duplicates = Counter(
            "slipway_monitor_events_duplicate",
            "Retried events already stored (not stored again).",
            registry=r,
        )
        self.rejected = Counter(
            "slipway_monitor_events_rejected", "Requests refused, by HTTP status.", ["status"], registry=r
        )
        self.share = Gauge(
            "slipway_drift_share_of_drifted_columns", "Share of drift features whose test failed.", registry=r
        )
        self.score = Gauge(
            "slipway_drift_score",
            "Evidently drift score (p-value; smaller = more drift).",
            ["feature"],
            registry=r,
        )
        self.detected = Gauge(
            "slipway_drift_detected", "1 when the last window raised the drift alarm.", registry=r
        )
        self.target_detected = Gauge(
            "slipway_drift_target_detected", "1 when labels of the last window drifted.", registry=r
        )
        self.accuracy = Gauge(
            "slipway_drift_accuracy", "Accuracy on labelled rows of the last window.", registry=r
        )
        self.window_rows = Gauge("slipway_drift_window_rows", "Rows in the last drift window.", registry=r)
        self.runs = Counter("slipway_drift_runs", "Drift computations, by outcome.", ["outcome"], registry=r)
        self.window_age = Gauge(
            "slipway_drift_window_age_seconds",
            "Seconds since the last drift window was computed (since start if none yet).",
            registry=r,
        )
        self.variant_labelled = Gauge(
            "slipway_monitor_variant_labelled_rows",
            "Rows of a model version with a feedback label and a response, at the last GET /v1/variants.",
            ["model", "version"],
            registry=r,
        )
        self.variant_accuracy = Gauge(
            "slipway_monitor_variant_accuracy",
            "Accuracy of a model version on its labelled rows, at the last GET /v1/variants (NaN: none).",
            ["model", "version"],
            registry=r,
        )
        self.accuracy.set(math.nan)


class Monitor:
    """State of one monitor process: the store, the reference features, drift scheduling and metrics."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.metrics = MonitorMetrics()
        self.reports_dir = settings.data_dir / "reports"
        self.store: SegmentStore | None = None
        self.reference: FeatureSet | None = None
        self.reference_shape: tuple[int, ...] | None = None
        self.reference_columns: list[str] | None = None
        self.started_at = time.time()
        self.last_run_at: float | None = None
        self.last_result: DriftResult | None = None
        self.rows_since_drift = 0
        self._drift_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="slipway-drift")
        self._drift_running = threading.Lock()
        self._scheduled: concurrent.futures.Future[Any] | None = None
        self._variant_series: dict[str, set[str]] = {}  # versions with gauges, per model
        self._variant_lock = threading.Lock()
        self.metrics.window_age.set_function(
            lambda: time.time() - (self.last_run_at if self.last_run_at is not None else self.started_at)
        )

    @property
    def drift_every(self) -> int:
        s = self.settings
        return s.window_size if s.drift_every is None else s.drift_every

    def open(self) -> None:
        """Open (and recover) the store; load the reference and compute its features once."""
        self.store = SegmentStore(self.settings.data_dir, self.settings.store_config())
        if self.settings.reference is not None:
            from slipway.monitoring.drift import build_features
            from slipway.monitoring.window import load_samples

            ref = load_samples(self.settings.reference)
            self.reference = build_features(ref.x, ref.probs, ref.y, ref.column_names)
            self.reference_shape = tuple(ref.x.shape[1:])
            self.reference_columns = ref.column_names
            logger.info(
                "reference loaded", extra={"rows": len(ref), "features": list(self.reference.frame.columns)}
            )

    def close(self) -> None:
        self._drift_pool.shutdown(wait=True, cancel_futures=True)
        if self.store is not None:
            self.store.close()

    async def ingest(self, items: Sequence[ev.InferenceEvent | ev.Feedback]) -> AppendOutcome:
        """Store events durably, count them, and schedule drift once enough new rows arrived."""
        assert self.store is not None
        outcome = await self.store.append_async([Record(i.key, i.to_payload()) for i in items])
        new_rows = 0
        if outcome.stored:
            for item in items:
                kind = item.kind if isinstance(item, ev.InferenceEvent) else "feedback"
                self.metrics.ingested.labels(kind).inc()
                if kind == "request":
                    new_rows += item.rows  # type: ignore[union-attr]
        if outcome.duplicates:
            self.metrics.duplicates.inc(outcome.duplicates)
        if new_rows and outcome.duplicates == 0:
            self.metrics.rows.inc(new_rows)
            self.rows_since_drift += new_rows
            if self.reference is not None and self.drift_every and self.rows_since_drift >= self.drift_every:
                self.schedule_drift()
        return outcome

    def schedule_drift(self) -> None:
        """Start a background drift run unless one is already queued or running."""
        if self._scheduled is not None and not self._scheduled.done():
            return
        self.rows_since_drift = 0
        self._scheduled = self._drift_pool.submit(self._background_drift)

    def _background_drift(self) -> None:
        try:
            self.run_drift()
        except SlipwayError as exc:
            logger.warning("drift run skipped", extra={"reason": str(exc)})
        except Exception:  # a background failure must not kill the worker; it is logged with its traceback
            self.metrics.runs.labels("error").inc()
            logger.exception("drift run failed")

    def run_drift(self) -> DriftResult:
        """Compute drift on the last `window_size` rows (blocking: call from a worker thread)."""
        from slipway.monitoring.drift import build_features, compute_drift
        from slipway.monitoring.window import collect_window

        if self.reference is None:
            raise NotFoundError("no reference configured: start the monitor with --reference PATH")
        with self._drift_running:
            window = collect_window(
                self.settings.data_dir,
                self.settings.window_size,
                self.settings.input_name,
                self.settings.output_name,
                sample_shape=self.reference_shape,
            )
            names = self.reference_columns if window.x.ndim == 2 else None
            current = build_features(window.x, window.probs, window.y, names)
            result = compute_drift(self.reference, current, self.settings.drift, self.reports_dir)
            self._publish(result)
            self._prune_reports()
            return result

    def recent_events(self, limit: int) -> list[dict[str, Any]]:
        """What the newest `limit` records say (id, kind, model, ...), newest first, without their tensors."""
        from itertools import islice

        from slipway.monitoring.store import iter_records_newest_first

        out = []
        for record in islice(iter_records_newest_first(self.settings.data_dir), limit):
            try:
                out.append(ev.record_info(record.payload))
            except ValueError as exc:  # orjson's decode error; checksummed records should never get here
                logger.warning(
                    "events: unreadable record skipped", extra={"key": record.key, "error": str(exc)}
                )
        return out

    def variant_summary(self, model: str, since: float) -> dict[str, Any]:
        """Per-version counts of `model` since `since`, also published as gauges (blocking: run in a thread)."""
        from slipway.monitoring.variants import variant_summary

        summary = variant_summary(self.settings.data_dir, model, since)
        m = self.metrics
        with self._variant_lock:  # a version gone from the range loses its series
            for version in self._variant_series.get(model, set()) - summary["variants"].keys():
                m.variant_labelled.remove(model, version)
                m.variant_accuracy.remove(model, version)
            for version, stats in summary["variants"].items():
                m.variant_labelled.labels(model, version).set(stats["labelled"])
                accuracy = stats["accuracy"]
                m.variant_accuracy.labels(model, version).set(math.nan if accuracy is None else accuracy)
            if summary["variants"]:
                self._variant_series[model] = set(summary["variants"])
            else:  # nothing kept for names that match no traffic: a caller cannot grow this at will
                self._variant_series.pop(model, None)
        return summary

    def window_npz(self, size: int) -> bytes:
        """The newest `size` rows as the NPZ the drift pipeline reads (blocking: run in a worker thread)."""
        from slipway.monitoring.window import collect_window, save_samples

        window = collect_window(
            self.settings.data_dir,
            size,
            self.settings.input_name,
            self.settings.output_name,
            sample_shape=self.reference_shape,
        )
        with tempfile.TemporaryDirectory(prefix="slipway-window-") as tmp:
            return save_samples(window, Path(tmp) / "window.npz").read_bytes()

    def _publish(self, result: DriftResult) -> None:
        m = self.metrics
        m.share.set(result.share_of_drifted_columns)
        m.detected.set(1.0 if result.drift_detected else 0.0)
        m.target_detected.set(1.0 if result.target_drift_detected else 0.0)
        m.accuracy.set(result.accuracy if result.accuracy is not None else math.nan)
        m.window_rows.set(result.current_rows)
        for col in result.columns:
            m.score.labels(col.name).set(col.score)
        m.runs.labels("drift" if result.drift_detected else "ok").inc()
        self.last_run_at = time.time()
        self.last_result = result

    def _prune_reports(self) -> None:
        reports = sorted(self.reports_dir.glob("*.json"))
        for old in reports[: max(0, len(reports) - self.settings.max_reports)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".html").unlink(missing_ok=True)

    def list_reports(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.reports_dir.glob("*.json"), reverse=True):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            out.append(
                {
                    "id": path.stem,
                    "created_at": data.get("created_at"),
                    "drift_detected": data.get("drift_detected"),
                    "share_of_drifted_columns": data.get("share_of_drifted_columns"),
                    "html": f"/reports/{path.stem}" if path.with_suffix(".html").exists() else None,
                    "json": f"/reports/{path.stem}.json",
                }
            )
        return out


async def _parse(fn: Any, *args: Any) -> Any:
    """Parse small bodies inline (fast path) and large ones in a thread so the loop keeps serving."""
    if sum(len(a) for a in args if isinstance(a, bytes)) > OFFLOAD_PARSE_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


def _query_int(request: Request, name: str, default: int, most: int) -> int:
    """A query parameter from 1 to `most`; ASCII digits only, so `int()` can never fail on it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw) or not 1 <= int(raw) <= most:
        raise DataError(f"{name}: expected an integer from 1 to {most}, got {raw!r:.40}")
    return int(raw)


def _query_model(request: Request) -> str:
    """The required `model` query parameter: the model whose versions are compared."""
    raw = request.query_params.get("model")
    if raw is None:
        raise DataError("model: required, the model name whose versions to compare (?model=NAME)")
    if not raw or len(raw) > ev.MAX_NAME_CHARS or not raw.isprintable():
        raise DataError(
            f"model: expected a non-empty printable string of at most {ev.MAX_NAME_CHARS} characters"
        )
    return raw


def _query_since(request: Request) -> float:
    """The optional `since` query parameter: unix seconds >= 0 as plain decimal digits (default 0)."""
    raw = request.query_params.get("since")
    if raw is None:
        return 0.0
    if not SINCE_RE.fullmatch(raw):
        raise DataError(f"since: expected unix seconds >= 0 (digits, optional decimals), got {raw!r:.40}")
    return float(raw)


def _ack(outcome: AppendOutcome, **extra: Any) -> JSONResponse:
    return JSONResponse({"stored": outcome.stored, "duplicates": outcome.duplicates, **extra})


def create_app(settings: MonitorSettings) -> Starlette:
    """Build the monitor's ASGI app (the store opens when the app starts).

    Plain Starlette routes: FastAPI's per-request dependency machinery halved ingest throughput here
    (measured ~2,200 vs ~3,500 empty requests/s on 2 cores) and the endpoints read raw bodies anyway.
    """
    monitor = Monitor(settings)
    limit = settings.max_body_bytes

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(monitor.open)
        logger.info("monitor ready", extra={"host": settings.host, "port": settings.port})
        try:
            yield
        finally:
            await asyncio.to_thread(monitor.close)

    async def slipway_error(_: Request, exc: Exception) -> Response:
        status = getattr(exc, "http_status", 400)
        monitor.metrics.rejected.labels(str(status)).inc()
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=status)

    async def http_error(_: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        monitor.metrics.rejected.labels(str(status)).inc()
        return JSONResponse(
            {"error": "HTTPException", "message": getattr(exc, "detail", "")}, status_code=status
        )

    def require_json(request: Request, binary: bool = False) -> None:
        allowed = ev.JSON_TYPES + (ev.BINARY_TYPES if binary else ())
        if ev.media_type(request.headers.get("content-type")) not in allowed:
            raise UnsupportedMediaTypeError(f"content-type: expected {' or '.join(allowed)}")

    async def post_event(request: Request) -> Response:
        query = ev.model_from_fields(request.query_params, "query")
        body = await read_limited_body(request, limit)
        event = await _parse(ev.parse_cloudevent, dict(request.headers), body, query)
        return _ack(await monitor.ingest([event]), id=event.event_id, kind=event.kind)

    async def post_batch(request: Request) -> Response:
        require_json(request, binary=True)
        query = ev.model_from_fields(request.query_params, "query")
        body = await read_limited_body(request, limit)
        header_length = request.headers.get(HEADER_LENGTH)
        items = await _parse(ev.parse_batch, body, uuid.uuid4, header_length, query)
        return _ack(await monitor.ingest(items), ids=sorted({i.event_id for i in items}))

    async def list_events(request: Request) -> Response:
        size = _query_int(request, "limit", 100, MAX_LISTED_EVENTS)
        return JSONResponse({"events": await asyncio.to_thread(monitor.recent_events, size)})

    async def variants(request: Request) -> Response:
        model, since = _query_model(request), _query_since(request)
        return JSONResponse(await asyncio.to_thread(monitor.variant_summary, model, since))

    async def post_feedback(request: Request) -> Response:
        require_json(request)
        body = await read_limited_body(request, limit)
        items = await _parse(ev.parse_feedback, body)
        return _ack(await monitor.ingest(items))

    async def run_drift(_: Request) -> Response:
        result = await asyncio.get_running_loop().run_in_executor(monitor._drift_pool, monitor.run_drift)
        return JSONResponse(result.model_dump())

    async def window(request: Request) -> Response:
        size = _query_int(request, "size", settings.window_size, MAX_WINDOW_ROWS)
        content = await asyncio.to_thread(monitor.window_npz, size)
        return Response(content, media_type="application/octet-stream")

    async def reference(_: Request) -> Response:
        path = settings.reference
        if path is None:
            raise NotFoundError("no reference configured: start the monitor with --reference PATH")
        content = await asyncio.to_thread(path.read_bytes)
        headers = {"content-disposition": f'attachment; filename="reference{path.suffix}"'}
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def healthz(_: Request) -> Response:
        store = monitor.store
        alive = store is not None and store._writer.is_alive()
        body = {
            "status": "ok" if alive else "unavailable",
            "records_written": store.records_written if store else 0,
            "reference_loaded": monitor.reference is not None,
            "last_drift": monitor.last_result.report_id if monitor.last_result else None,
        }
        return JSONResponse(body, status_code=200 if alive else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(monitor.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def reports(_: Request) -> Response:
        return JSONResponse({"reports": await asyncio.to_thread(monitor.list_reports)})

    async def report(request: Request) -> Response:
        report_id = str(request.path_params["report_id"])
        as_json = report_id.endswith(".json")
        rid = report_id.removesuffix(".json")
        if not REPORT_ID_RE.match(rid):
            raise DataError("report id: letters, digits and '-' only")
        path = monitor.reports_dir / f"{rid}.{'json' if as_json else 'html'}"
        if not path.is_file():
            raise NotFoundError(f"report {rid!r} not found: GET /reports lists them")
        content = await asyncio.to_thread(path.read_bytes)
        if as_json:
            return Response(content, media_type="application/json")
        return HTMLResponse(content)

    def restricted(group: str, handler: Handler) -> Handler:
        """`handler` behind its group's header when `--restricted-api` names the group (403 without it)."""
        restriction = settings.restricted_api.restriction(group)
        if restriction is None:
            return handler

        async def check(request: Request) -> Response:
            if restriction.admits(request.headers.get(restriction.header)):
                return await handler(request)
            monitor.metrics.rejected.labels("403").inc()
            return JSONResponse({"error": "Forbidden", "message": restriction.http_message}, status_code=403)

        return check

    # (path, handler, method, restricted-API group: ingest, feedback, admin, health, metrics)
    table: list[tuple[str, Handler, str, str]] = [
        ("/events", post_event, "POST", "ingest"),
        ("/v1/batches", post_batch, "POST", "ingest"),
        ("/v1/feedback", post_feedback, "POST", "feedback"),
        ("/v1/events", list_events, "GET", "admin"),
        ("/v1/variants", variants, "GET", "admin"),
        ("/v1/drift/run", run_drift, "POST", "admin"),
        ("/v1/window", window, "GET", "admin"),
        ("/v1/reference", reference, "GET", "admin"),
        ("/healthz", healthz, "GET", "health"),
        ("/metrics", metrics, "GET", "metrics"),
        ("/reports", reports, "GET", "admin"),
        ("/reports/{report_id}", report, "GET", "admin"),
    ]
    app = Starlette(
        routes=[
            Route(path, restricted(group, handler), methods=[method])
            for path, handler, method, group in table
        ],
        exception_handlers={SlipwayError: slipway_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.monitor = monitor
    return app


def serve(settings: MonitorSettings) -> None:
    """Run the monitor with uvicorn until interrupted (default bind 127.0.0.1:8081)."""
    import uvicorn

    np.seterr(all="ignore")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
