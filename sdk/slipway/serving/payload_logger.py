"""KServe's payload logger for `slipway serve --logger-url`: every inference's request and response, as
CloudEvents, to the drift monitor's `/events`, so that the local loop captures what a cluster would.

As KServe's logger does (mode `all`): one event per request and one per response, sharing `ce-id` (the
request's `id`, else a fresh uuid), sent after the response from a bounded queue, never delaying or failing
the inference. Bodies use Triton's binary tensor extension (whatever protocol the client spoke) and name the
model and version. A full queue or an unreachable sink drops events, counted in
`slipway_logger_events_total{outcome}` and logged: capture is best effort, serving is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

import httpx
import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter

from slipway.serving.datatypes import NUMPY_TO_V2
from slipway.serving.http_body import HEADER_LENGTH, REQUEST_TYPE, RESPONSE_TYPE

log = logging.getLogger(__name__)
ATTEMPTS = 3


@dataclass(frozen=True)
class _Entry:
    event_id: str
    model: str
    version: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def encode(
    event_id: str, model: str, version: str, field: str, arrays: dict[str, np.ndarray]
) -> tuple[bytes, int]:
    """A v2 body with binary tensors: (body, JSON header length)."""
    tensors, blobs = [], []
    for name, array in arrays.items():
        if array.dtype.name not in NUMPY_TO_V2:
            continue  # BYTES tensors are not captured (the monitor compares numbers)
        blob = np.ascontiguousarray(array).tobytes()
        tensors.append(
            {
                "name": name,
                "datatype": NUMPY_TO_V2[array.dtype.name],
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = orjson.dumps({"id": event_id, "model_name": model, "model_version": version, field: tensors})
    return header + b"".join(blobs), len(header)


class PayloadLogger:
    """A bounded queue of finished inferences and one task that posts them to `url`."""

    def __init__(self, url: str, registry: CollectorRegistry, max_queue: int = 1024) -> None:
        self.url = url
        self.source = "http://127.0.0.1/slipway-serve"
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.events = Counter(
            "slipway_logger_events",
            "Inference events sent to the payload logger sink, by outcome (sent, dropped).",
            ["outcome"],
            registry=registry,
        )

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=10.0)
        self._task = asyncio.create_task(self._run(), name="payload-logger")

    def log(
        self,
        request_id: str,
        model: str,
        version: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
    ) -> None:
        """Queue one finished inference; never blocks (a full queue drops it)."""
        try:
            self._queue.put_nowait(_Entry(request_id or uuid.uuid4().hex, model, version, inputs, outputs))
        except asyncio.QueueFull:
            self.events.labels("dropped").inc(2)
            log.warning("payload logger queue full: events of %s dropped", request_id or "a request")

    async def stop(self, grace_s: float) -> None:
        """Send what is queued within `grace_s`, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            entry = await self._queue.get()
            try:
                for ce_type, field, arrays in (
                    (REQUEST_TYPE, "inputs", entry.inputs),
                    (RESPONSE_TYPE, "outputs", entry.outputs),
                ):
                    await self._post(
                        entry, ce_type, *encode(entry.event_id, entry.model, entry.version, field, arrays)
                    )
            finally:
                self._queue.task_done()

    async def _post(self, entry: _Entry, ce_type: str, body: bytes, header_length: int) -> None:
        assert self._client is not None
        headers = {
            "ce-specversion": "1.0",
            "ce-id": entry.event_id,
            "ce-type": ce_type,
            "ce-source": f"{self.source}/v2/models/{entry.model}/versions/{entry.version}/infer",
            "content-type": "application/octet-stream",
            HEADER_LENGTH: str(header_length),
        }
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 300:
                    self.events.labels("sent").inc()
                    return
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    break  # the sink refuses this event: retrying cannot help
            await asyncio.sleep(0.2 * attempt)
        self.events.labels("dropped").inc()
        log.warning(
            "payload logger: %s event %s not delivered to %s (%s)", ce_type, entry.event_id, self.url, problem
        )
