"""Dynamic batching on the event loop: a bounded queue per model, one worker per ORT session.

A worker takes the oldest request, gathers compatible queued requests until the largest preferred batch size
(or max_batch_size) is reached or the oldest request has waited max_queue_delay (like Triton), except that it
does not wait when there is no sign of concurrent load (the previous batch held one request and no other
request is being received): there, waiting could only add latency and lower throughput. It runs one batch in a thread
(ONNX Runtime releases the GIL) and splits the outputs back. A model without dynamic batching runs each request
alone through the same bounded queue, so load shedding and timeouts behave the same for every model.

`drain` (shutdown, unload, or the old version after a reload) lets the workers finish everything queued and
in flight, then they exit; only what is still there when the grace period ends is failed.

Triton's queue policy (`dynamic_batching.default_queue_policy`): `max_queue_size` caps the queue below the
server's `--max-queue` (a request beyond it is rejected with Triton's "Exceeds maximum queue size": 503 /
UNAVAILABLE), and `default_timeout_microseconds` rejects a request still queued after that long (REJECT, Triton's
"Request timeout expired", 503 / UNAVAILABLE); a request a worker has taken runs to the end. `preserve_ordering`
answers requests in the order they were queued: with one instance that holds by construction (one worker takes
the oldest requests first and answers a batch before it takes the next), with several the answers of a batch
that finishes early wait for those of older requests still running. The loader refuses the rest of the policy
(priorities, DELAY, timeout overrides).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from slipway.core.errors import ModelExecutionError, OverloadedError, RequestTimeoutError, SlipwayError
from slipway.serving.loader import LoadedModel
from slipway.serving.stats import ModelStats, ServerMetrics

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    arrays: dict[str, np.ndarray]
    rows: int
    key: tuple[tuple[int, ...], ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    taken: bool = False  # in a worker's batch: a queue timeout no longer applies
    outcome: tuple[dict[str, np.ndarray] | None, SlipwayError | None] | None = (
        None  # held for preserve_ordering
    )


class ModelBatcher:
    """Queues requests for one model and runs them, batched when the model's config enables it."""

    def __init__(
        self,
        model: LoadedModel,
        stats: ModelStats,
        metrics: ServerMetrics,
        max_queue: int,
        incoming: Callable[[], int] = lambda: 0,
    ) -> None:
        self.model = model
        self._incoming = incoming
        self.stats = stats
        self.metrics = metrics
        self.max_queue = max_queue
        self._queue: deque[_Request] = deque()
        self._arrived = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False  # set by drain: workers exit once nothing is queued
        self._executor = ThreadPoolExecutor(len(model.sessions), thread_name_prefix=f"ort-{model.name}")
        self._output_names = list(model.outputs)
        self._last_requests = 0  # requests in the previous batch: the load signal for waiting
        config = model.config
        self.dynamic = model.dynamic_batching
        preferred = sorted(p for p in config.dynamic_batching.preferred_batch_size if p > 0)
        self.max_rows = model.max_batch_size if self.dynamic else 1
        self.target_rows = preferred[-1] if self.dynamic and preferred else self.max_rows
        self.delay_ns = (
            int(config.dynamic_batching.max_queue_delay_microseconds) * 1000 if self.dynamic else 0
        )
        policy = config.dynamic_batching.default_queue_policy
        self.policy_max_queue = int(policy.max_queue_size)  # 0: no limit but the server's
        self.queue_timeout_s = int(policy.default_timeout_microseconds) / 1e6  # 0: none
        # Answers in queue order; only needed with several workers (one answers in order by construction).
        ordered = config.dynamic_batching.preserve_ordering and len(model.sessions) > 1
        self._in_order: deque[_Request] | None = deque() if ordered else None
        metrics.watch_queue(model.name, self.depth)

    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start one worker per session; must run on the serving event loop."""
        for i, session in enumerate(self.model.sessions):
            self._workers.append(
                asyncio.create_task(self._worker(session), name=f"batcher-{self.model.name}-{i}")
            )

    async def drain(self, grace_s: float) -> None:
        """Finish every queued and running request (within the grace period), then stop the workers.

        Workers exit by themselves once the queue is empty; what is left when the grace period ends gets 503.
        """
        self._closing = True
        self._arrived.set()  # wake idle workers so they see the empty queue and exit
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        while self._queue:
            req = self._queue.popleft()
            if not req.future.done():
                req.future.set_exception(
                    OverloadedError(f"model {self.model.name!r}: server is shutting down")
                )
        self._executor.shutdown(wait=False)  # a run cut off by the grace period must not block the loop

    async def infer(
        self, arrays: dict[str, np.ndarray], rows: int, timeout_s: float
    ) -> dict[str, np.ndarray]:
        """Queue one validated request and wait for its outputs; full queue or timeout -> OverloadedError (503)."""
        if all(task.done() for task in self._workers):
            raise OverloadedError(f"model {self.model.name!r} is not serving (starting or shutting down)")
        if self.policy_max_queue and len(self._queue) >= self.policy_max_queue:
            raise OverloadedError(
                f"model {self.model.name!r}: Exceeds maximum queue size ({self.policy_max_queue} requests "
                "waiting, dynamic_batching.default_queue_policy.max_queue_size); retry later"
            )
        if len(self._queue) >= self.max_queue:
            raise OverloadedError(
                f"model {self.model.name!r}: queue full ({self.max_queue} requests waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        key = tuple(a.shape[1:] for a in arrays.values()) if self.dynamic else ()
        request = _Request(arrays, rows, key, future)
        self._queue.append(request)
        if self.queue_timeout_s:
            expiry = loop.call_later(self.queue_timeout_s, self._expire, request)
            future.add_done_callback(lambda _: expiry.cancel())
        if self._in_order is not None:
            self._in_order.append(request)
            future.add_done_callback(lambda _: self._release_in_order())
        self._arrived.set()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise RequestTimeoutError(
                f"model {self.model.name!r}: no result within {timeout_s:g} s (server busy); retry later"
            ) from None

    def _expire(self, request: _Request) -> None:
        """default_timeout_microseconds passed: reject the request if it is still queued (Triton's REJECT)."""
        if request.taken or request.future.done():
            return
        with contextlib.suppress(ValueError):
            self._queue.remove(request)
        request.future.set_exception(
            RequestTimeoutError(
                f"model {self.model.name!r}: Request timeout expired (queued longer than "
                f"dynamic_batching.default_queue_policy.default_timeout_microseconds = "
                f"{round(self.queue_timeout_s * 1e6)}); retry later"
            )
        )

    def _answer(
        self, req: _Request, result: dict[str, np.ndarray] | None, error: SlipwayError | None = None
    ) -> None:
        """Answer one request now, or, under preserve_ordering, once every older request is answered."""
        if self._in_order is not None:
            req.outcome = (result, error)
            self._release_in_order()
        elif not req.future.done():
            if error is not None:
                req.future.set_exception(error)
            else:
                req.future.set_result(result or {})

    def _release_in_order(self) -> None:
        """Answer held requests from the oldest on, up to the first one still queued or running."""
        order = self._in_order
        assert order is not None
        while order and (order[0].outcome is not None or order[0].future.done()):
            req = order.popleft()
            if req.outcome is not None and not req.future.done():
                result, error = req.outcome
                if error is not None:
                    req.future.set_exception(error)
                else:
                    req.future.set_result(result or {})

    def _pop_live(self) -> _Request | None:
        """The oldest request whose caller still waits (timed-out ones are dropped here); it is taken."""
        while self._queue:
            req = self._queue.popleft()
            if not req.future.done():
                req.taken = True
                return req
        return None

    async def _gather(self, batch: list[_Request]) -> None:
        """Fill `batch` (owned by the worker, so a cancelled worker can answer what it holds); empty -> exit."""
        while True:
            first = self._pop_live()
            if first is not None:
                break
            if self._closing:
                return
            self._arrived.clear()
            await self._arrived.wait()
        batch.append(first)
        rows = first.rows
        if not self.dynamic:
            return
        deadline_ns = first.enqueued_ns + self.delay_ns
        while True:
            while self._queue and rows < self.target_rows:
                nxt = self._queue[0]
                if nxt.future.done():
                    self._queue.popleft()
                    continue
                if nxt.key != first.key or rows + nxt.rows > self.max_rows:
                    return  # cannot join: dispatch now, it heads the next batch
                self._queue.popleft()
                nxt.taken = True
                batch.append(nxt)
                rows += nxt.rows
            remaining_ns = deadline_ns - time.perf_counter_ns()
            if rows >= self.target_rows or remaining_ns <= 0 or self._closing:
                return
            if self._last_requests <= 1 and not self._queue and not self._incoming():
                await asyncio.sleep(0)  # let request tasks that are already scheduled reach the queue
                if not self._queue and not self._incoming():
                    return  # no sign of concurrent load: waiting could only add latency
                continue
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining_ns / 1e9)

    def _run(
        self, session: ort.InferenceSession, batch: list[_Request]
    ) -> tuple[list[np.ndarray], int, int, int]:
        """Runs in the executor thread: concatenate, run, and time each phase."""
        t0 = time.perf_counter_ns()
        if len(batch) == 1:
            feeds = batch[0].arrays
        else:
            feeds = {name: np.concatenate([r.arrays[name] for r in batch]) for name in batch[0].arrays}
        t1 = time.perf_counter_ns()
        outputs = session.run(self._output_names, feeds)
        t2 = time.perf_counter_ns()
        return outputs, t1 - t0, t2 - t1, t2

    async def _worker(self, session: ort.InferenceSession) -> None:
        while True:
            batch: list[_Request] = []
            try:
                await self._gather(batch)
                if not batch:
                    return  # draining and nothing left
                await self._execute(session, batch)
            except asyncio.CancelledError:
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(OverloadedError(f"model {self.model.name!r}: shutting down"))
                raise

    async def _execute(self, session: ort.InferenceSession, batch: list[_Request]) -> None:
        """Run one gathered batch in the executor and answer each request with its rows."""
        self._last_requests = len(batch)
        started_ns = time.perf_counter_ns()
        rows = sum(r.rows for r in batch)
        try:
            outputs, input_ns, infer_ns, done_ns = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run, session, batch
            )
        except Exception as err:  # ORT failure on validated input: report, keep serving
            log.exception("model execution failed model=%s rows=%d", self.model.name, rows)
            failure = ModelExecutionError(f"model {self.model.name!r}: execution failed: {err}")
            for req in batch:
                self._answer(req, None, failure)
            return
        offset = 0
        for req in batch:
            if not req.future.done():
                if len(batch) == 1:
                    self._answer(req, dict(zip(self._output_names, outputs, strict=True)))
                else:
                    sliced = [out[offset : offset + req.rows] for out in outputs]
                    self._answer(req, dict(zip(self._output_names, sliced, strict=True)))
            offset += req.rows
        queue_ns = sum(started_ns - r.enqueued_ns for r in batch)
        output_ns = time.perf_counter_ns() - done_ns
        self.stats.record_batch(rows, len(batch), queue_ns, input_ns, infer_ns, output_ns)
        self.metrics.batch_size.labels(self.model.name).observe(rows)
