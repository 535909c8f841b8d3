"""Bounded overload against a server in its own process: only 200 or 503, then full recovery.

No assertion hangs on how fast this machine is: the overload comes from more concurrent clients than the
server admits (1 running + max_queue waiting), not from a rate measured beforehand; waits poll until a
condition holds, with a deadline far beyond what a 4x slower machine needs; speeds are compared only
between two measurements taken the same way, with room for a 4x slowdown in between.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from torch import nn

from slipway.compression.onnx_export import export_onnx
from slipway.core.config import TritonConfig
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.triton_repository import write_model

BATCH = 32
MAX_QUEUE = 4
REQUESTS = 30  # per latency measurement
DEADLINE_S = 60.0  # for poll-until waits: a correct server needs well under a second


@pytest.fixture(scope="module")
def heavy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """A compute-bound model without dynamic batching, a short queue and a short timeout."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.Flatten(),
        nn.Linear(4096, 10),
    )
    root = tmp_path_factory.mktemp("overload")
    export_onnx(model, (1, 8, 8), root / "heavy.onnx")
    write_model(
        root / "repo",
        "heavy",
        root / "heavy.onnx",
        TritonConfig(max_batch_size=BATCH, dynamic_batching=False),
    )
    options = ServerOptions(max_queue=MAX_QUEUE, timeout_s=0.5)
    with start_server(root / "repo", threads=1, options=options, subprocess_mode=True) as handle:
        yield handle


def _request() -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(0).standard_normal((BATCH, 1, 8, 8)).astype(np.float32).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [BATCH, 1, 8, 8],
                    "parameters": {"binary_data_size": len(x)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + x, {"Inference-Header-Content-Length": str(len(header))}


async def _median_latency(url: str) -> float:
    """Median seconds of REQUESTS sequential requests after a warm-up one (all must be 200): robust to a
    few scheduling stalls, unlike a rate over a short window."""
    body, headers = _request()
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        for _ in range(REQUESTS + 1):
            start = time.perf_counter()
            r = await client.post("/v2/models/heavy/infer", content=body, headers=headers)
            latencies.append(time.perf_counter() - start)
            assert r.status_code == 200, r.text
    return statistics.median(latencies[1:])


async def _overload(url: str, clients: int) -> Counter[int]:
    """`clients` send back to back until both a 200 and a 503 came back (or DEADLINE_S); the statuses seen."""
    body, headers = _request()
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + DEADLINE_S
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and not (statuses[200] and statuses[503]):
                r = await client.post("/v2/models/heavy/infer", content=body, headers=headers)
                statuses[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


def _wait_for_empty_queue(url: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while 'slipway_queue_depth{model="heavy"} 0.0' not in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, f"queue not drained within {DEADLINE_S} s"
        time.sleep(0.05)


@pytest.mark.stochastic
def test_overload_gets_only_200_or_503_and_recovers(heavy_server: ServerHandle) -> None:
    """4x more clients than the server admits: every answer is 200 or 503; afterwards it serves as before.

    "As before": the median latency after the overload is under 16x the median before it. Back to back on a
    shared 2-core machine the two medians differ by up to 2.3x (~2.7 ms each), so a machine 4x slower during
    the second measurement still passes with room to spare; a server left wedged answers 503 or not at all.
    """
    before = asyncio.run(_median_latency(heavy_server.url))
    statuses = asyncio.run(_overload(heavy_server.url, 4 * (1 + MAX_QUEUE)))
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # really overloaded, and still serving
    _wait_for_empty_queue(heavy_server.url)
    after = asyncio.run(_median_latency(heavy_server.url))
    assert after < 16 * before, (after, before)


async def _open_loop(url: str, rate: float, seconds: float) -> Counter[int]:
    body, headers = _request()
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

        async def one() -> None:
            r = await client.post("/v2/models/heavy/infer", content=body, headers=headers)
            statuses[r.status_code] += 1

        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return statuses


@pytest.mark.stochastic
def test_full_queue_message_is_clear(heavy_server: ServerHandle) -> None:
    """Bursts of 40 requests until one is shed (a deadline, not a single burst that a slow client could
    spread out): every 503 says why."""
    statuses = asyncio.run(_open_loop(heavy_server.url, 2000, 0.1))
    assert set(statuses) <= {200, 503}
    body, headers = _request()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=heavy_server.url, timeout=10) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/heavy/infer", content=body, headers=headers) for _ in range(40))
            )

    deadline = time.monotonic() + DEADLINE_S
    errors: list[str] = []
    while not errors and time.monotonic() < deadline:
        errors = [r.json()["error"] for r in asyncio.run(burst()) if r.status_code == 503]
    assert errors and all(("queue full" in e) or ("no result within" in e) for e in errors), errors[:3]
