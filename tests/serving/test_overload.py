"""Bounded 2x overload against a server in its own process: only 200 or 503, then full recovery."""

from __future__ import annotations

import asyncio
import json
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
    options = ServerOptions(max_queue=4, timeout_s=0.5)
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


async def _closed_loop(url: str, seconds: float, concurrency: int) -> float:
    body, headers = _request()
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                r = await client.post("/v2/models/heavy/infer", content=body, headers=headers)
                assert r.status_code == 200, r.text
                done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


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


def test_twice_capacity_gets_only_200_or_503_and_recovers(heavy_server: ServerHandle) -> None:
    capacity = asyncio.run(_closed_loop(heavy_server.url, 1.0, 2))
    statuses = asyncio.run(_open_loop(heavy_server.url, 2 * capacity, 2.5))
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] > 0, statuses  # really overloaded, and still serving
    # recovery: queue drained, requests served at normal speed again
    time.sleep(0.6)
    metrics = httpx.get(f"{heavy_server.url}/metrics").text
    assert 'slipway_queue_depth{model="heavy"} 0.0' in metrics
    after = asyncio.run(_closed_loop(heavy_server.url, 0.5, 1))
    assert after > 0.3 * capacity, (after, capacity)
    r = httpx.post(f"{heavy_server.url}/v2/models/heavy/infer", content=_request()[0], headers=_request()[1])
    assert r.status_code == 200


def test_full_queue_message_is_clear(heavy_server: ServerHandle) -> None:
    statuses = asyncio.run(_open_loop(heavy_server.url, 2000, 0.1))
    assert set(statuses) <= {200, 503}
    body, headers = _request()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=heavy_server.url, timeout=10) as client:
            return await asyncio.gather(
                *(client.post("/v2/models/heavy/infer", content=body, headers=headers) for _ in range(40))
            )

    errors = [r.json()["error"] for r in asyncio.run(burst()) if r.status_code == 503]
    assert errors and all(("queue full" in e) or ("no result within" in e) for e in errors), errors[:3]
