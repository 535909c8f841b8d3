"""Triton's dynamic-batching queue policy on `slipway serve`: honoured, or refused at load naming the field.

Refusals and the load API: real tritonclient against a server in explicit mode. `max_queue_size` and
`default_timeout_microseconds`: a burst of requests to a compute-bound model served with one instance, made deep
enough here that one run outlasts the burst's arrival, and the queue timeout a fraction of that run. `preserve_ordering`:
the batcher itself, with two instances whose run times are set by their inputs.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from torch import nn
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from slipway.compression.onnx_export import export_onnx
from slipway.core.errors import RequestTimeoutError
from slipway.serving.batcher import ModelBatcher
from slipway.serving.loader import LoadedModel, TensorInfo
from slipway.serving.server import ServerHandle, start_server
from slipway.serving.service import ServerOptions
from slipway.serving.stats import ModelStats, ServerMetrics

OPTIONS = ServerOptions(max_queue=64, timeout_s=10.0, max_body_bytes=1 << 20, shutdown_grace_s=1.0)
ROWS = 64  # rows per request = max_batch_size: no two requests share a batch
BURST = 8


@pytest.fixture
def explicit_server(model_repo: Path, tmp_path: Path) -> Iterator[tuple[Path, ServerHandle]]:
    repo = Path(shutil.copytree(model_repo, tmp_path / "repo"))
    with start_server(repo, threads=1, options=OPTIONS, model_control_mode="explicit") as handle:
        yield repo, handle


REFUSED = [
    ("priority_levels: 2", "`dynamic_batching.priority_levels` (priority queues)"),
    ("default_priority_level: 1", "`dynamic_batching.default_priority_level`"),
    (
        "priority_queue_policy { key: 1 value { max_queue_size: 4 } }",
        "`dynamic_batching.priority_queue_policy`",
    ),
    (
        "default_queue_policy { timeout_action: DELAY }",
        "`dynamic_batching.default_queue_policy.timeout_action: DELAY`",
    ),
    (
        "default_queue_policy { allow_timeout_override: true }",
        "`dynamic_batching.default_queue_policy.allow_timeout_override`",
    ),
]


def test_unsupported_queue_fields_are_refused_by_the_load_api(
    explicit_server: tuple[Path, ServerHandle],
) -> None:
    """Each field the batcher cannot honour: 400 (gRPC INVALID_ARGUMENT) naming it; the honoured ones load."""
    repo, server = explicit_server
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(server.grpc_url)
    config = repo / "direct" / "config.pbtxt"  # direct: batched, no dynamic_batching block of its own
    base = config.read_text()
    for snippet, named in REFUSED:
        config.write_text(f"{base}dynamic_batching {{ {snippet} }}\n")
        with pytest.raises(InferenceServerException) as err:
            http.load_model("direct")
        assert err.value.status() == "400" and named in err.value.message(), err.value.message()
        with pytest.raises(InferenceServerException) as err:
            grpc.load_model("direct")
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and named in err.value.message()
        assert not http.is_model_ready("direct")

    honoured = "preserve_ordering: true default_queue_policy { max_queue_size: 4 default_timeout_microseconds: 500000 }"
    config.write_text(f"{base}dynamic_batching {{ {honoured} }}\n")
    http.load_model("direct")
    batching = http.get_model_config("direct")["dynamic_batching"]
    assert batching["preserve_ordering"] is True
    assert batching["default_queue_policy"] == {"max_queue_size": 4, "default_timeout_microseconds": 500000}


class _Compute(nn.Module):
    """Compute-bound on one thread: one shared 1024x1024 layer applied `depth` times per 64-row batch."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.inp, self.hidden, self.out = nn.Linear(16, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for _ in range(self.depth):
            h = torch.relu(self.hidden(h))
        return self.out(h)


# tritonclient.http's async_infer sleeps 10 ms after each send, so a burst of BURST requests takes about
# BURST x 10 ms to arrive: one run must outlast that for requests to queue behind it on any machine.
MIN_RUN_S = 0.12


def _export_and_time(depth: int, path: Path) -> float:
    """Export `_Compute(depth)` to `path`; its median run time on one thread, in seconds."""
    torch.manual_seed(0)
    export_onnx(_Compute(depth).eval(), (16,), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.zeros((ROWS, 16), np.float32)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        session.run(None, {"input": x})
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


@pytest.fixture(scope="module")
def compute_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The exported model, deep enough that one run takes at least MIN_RUN_S here, and its run time in seconds."""
    path = tmp_path_factory.mktemp("queue-policy") / "model.onnx"
    depth = 8
    run_s = _export_and_time(depth, path)
    if run_s < MIN_RUN_S:
        depth = math.ceil(depth * 1.3 * MIN_RUN_S / run_s)
        run_s = _export_and_time(depth, path)
    assert run_s >= MIN_RUN_S / 2, f"a run of depth {depth} takes {run_s:.3f} s, expected >= {MIN_RUN_S} s"
    return path, run_s


def _queue_repo(root: Path, model: Path, name: str, policy: str) -> Path:
    """An ordinary Triton repository (config by hand, inputs and outputs from the graph) of one model."""
    (root / name / "1").mkdir(parents=True)
    shutil.copy(model, root / name / "1" / "model.onnx")
    (root / name / "config.pbtxt").write_text(
        f'backend: "onnxruntime"\nmax_batch_size: {ROWS}\ninstance_group {{ count: 1 kind: KIND_CPU }}\n'
        f"dynamic_batching {{ default_queue_policy {{ {policy} }} }}\n"
    )
    return root


def _bursts(server: ServerHandle, model: str, expected: str) -> tuple[list[str], list[str]]:
    """BURST concurrent requests over HTTP, then over gRPC, repeated (at most 5 times) until each protocol saw a
    refusal; returns the statuses of the refusals per protocol. Anything but success or `expected` fails."""
    x = np.random.default_rng(0).standard_normal((ROWS, 16)).astype(np.float32)
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"), concurrency=BURST)
    grpc = triton_grpc.InferenceServerClient(server.grpc_url)
    http_input = triton_http.InferInput("input", list(x.shape), "FP32")
    http_input.set_data_from_numpy(x, binary_data=True)
    grpc_input = triton_grpc.InferInput("input", list(x.shape), "FP32")
    grpc_input.set_data_from_numpy(x)

    def outcomes(send: Callable[[], list[BaseException | None]]) -> list[str]:
        for _ in range(5):
            errors = [e for e in send() if e is not None]
            for e in errors:
                assert isinstance(e, InferenceServerException) and expected in str(e.message()), e
            if errors:
                return [str(e.status()) for e in errors]  # type: ignore[union-attr]
        raise AssertionError(f"no request refused with {expected!r} in 5 bursts of {BURST}")

    def http_burst() -> list[BaseException | None]:
        pending = [http.async_infer(model, [http_input]) for _ in range(BURST)]
        results: list[BaseException | None] = []
        for request in pending:
            try:
                request.get_result()
                results.append(None)
            except InferenceServerException as err:
                results.append(err)
        return results

    def grpc_burst() -> list[BaseException | None]:
        done: list[BaseException | None] = []

        def callback(result: Any, error: BaseException | None) -> None:
            done.append(error)

        for _ in range(BURST):
            grpc.async_infer(model, [grpc_input], callback)
        deadline = time.monotonic() + 30
        while len(done) < BURST and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(done) == BURST
        return done

    return outcomes(http_burst), outcomes(grpc_burst)


@pytest.mark.stochastic
def test_max_queue_size_rejects_as_triton_does(compute_model: tuple[Path, float], tmp_path: Path) -> None:
    """max_queue_size 1: one request runs, one waits, the rest get 503 / UNAVAILABLE "Exceeds maximum queue size"."""
    path, _ = compute_model
    repo = _queue_repo(tmp_path, path, "capped", "max_queue_size: 1")
    with start_server(repo, threads=1, options=OPTIONS) as server:
        http_statuses, grpc_statuses = _bursts(server, "capped", "Exceeds maximum queue size")
        stats = triton_http.InferenceServerClient(
            server.url.removeprefix("http://")
        ).get_inference_statistics("capped")
    assert set(http_statuses) == {"503"} and set(grpc_statuses) == {"StatusCode.UNAVAILABLE"}
    failures = stats["model_stats"][0]["inference_stats"]["fail"]["count"]
    assert failures == len(http_statuses) + len(grpc_statuses)


@pytest.mark.stochastic
def test_queue_timeout_rejects_what_waited_too_long(
    compute_model: tuple[Path, float], tmp_path: Path
) -> None:
    """default_timeout_microseconds a quarter of one run: requests queued behind a run are rejected with
    "Request timeout expired" (503 / UNAVAILABLE); the request running is never cut short."""
    path, run_s = compute_model
    timeout_us = max(500, int(run_s * 1e6 / 4))
    repo = _queue_repo(tmp_path, path, "expiring", f"default_timeout_microseconds: {timeout_us}")
    with start_server(repo, threads=1, options=OPTIONS) as server:
        http_statuses, grpc_statuses = _bursts(server, "expiring", "Request timeout expired")
    assert set(http_statuses) == {"503"} and set(grpc_statuses) == {"StatusCode.UNAVAILABLE"}
    assert len(http_statuses) < BURST and len(grpc_statuses) < BURST  # the first of each burst ran


class _SleepingSession:
    """Stands in for an ORT session: sleeps as many seconds as its first input value, returns the input."""

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        time.sleep(float(x[0, 0]))
        return [x]


def _batcher(instances: int, preserve_ordering: bool = False, timeout_us: int = 0) -> ModelBatcher:
    config = mc.ModelConfig(name="m", max_batch_size=4)
    config.dynamic_batching.preserve_ordering = preserve_ordering
    config.dynamic_batching.default_queue_policy.default_timeout_microseconds = timeout_us
    info = TensorInfo("x", "FP32", np.dtype(np.float32), (1,))
    sessions: list[Any] = [_SleepingSession() for _ in range(instances)]
    model = LoadedModel("m", "1", config, None, {"x": info}, {"y": info}, sessions)
    return ModelBatcher(model, ModelStats("m", "1"), ServerMetrics(["m"]), max_queue=8)


def _finish_order(preserve_ordering: bool) -> list[str]:
    """A slow request on one instance, then a fast one on the other: the order their answers arrive in."""

    async def scenario() -> list[str]:
        batcher = _batcher(2, preserve_ordering)
        batcher.start()
        order: list[str] = []
        slow = asyncio.ensure_future(batcher.infer({"x": np.full((1, 1), 0.3, np.float32)}, 1, 5))
        slow.add_done_callback(lambda _: order.append("slow"))
        await asyncio.sleep(0.05)  # the first worker has taken it
        fast = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}, 1, 5))
        fast.add_done_callback(lambda _: order.append("fast"))
        results = await asyncio.gather(slow, fast)
        assert [float(r["y"][0, 0]) for r in results] == [pytest.approx(0.3), 0.0]  # each gets its own rows
        await batcher.drain(1)
        return order

    return asyncio.run(scenario())


def test_preserve_ordering_answers_in_queue_order() -> None:
    assert _finish_order(preserve_ordering=False) == ["fast", "slow"]  # two instances: out of order
    assert _finish_order(preserve_ordering=True) == ["slow", "fast"]


def test_queue_timeout_applies_only_while_queued() -> None:
    """The running request finishes; the one still queued when the timeout passes is rejected and leaves the
    queue at once (it no longer counts against max_queue_size)."""

    async def scenario() -> None:
        batcher = _batcher(1, timeout_us=50_000)
        batcher.start()
        running = asyncio.ensure_future(batcher.infer({"x": np.full((1, 1), 0.3, np.float32)}, 1, 5))
        await asyncio.sleep(0.02)
        queued = asyncio.ensure_future(batcher.infer({"x": np.zeros((1, 1), np.float32)}, 1, 5))
        await asyncio.sleep(0.01)
        assert batcher.depth() == 1
        with pytest.raises(RequestTimeoutError, match="Request timeout expired"):
            await queued
        assert batcher.depth() == 0 and not running.done()
        assert float((await running)["y"][0, 0]) == pytest.approx(0.3)  # 0.3 s > the 0.05 s timeout
        await batcher.drain(1)

    asyncio.run(scenario())
