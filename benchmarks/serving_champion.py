# Over 500 lines: one phase (the champion and its data, a labelled open-loop generator for HTTP and gRPC, the
# rate search, its section of benchmarks.md), kept together.
"""The brief's "1,000 images/s at 95% accuracy" measured as one thing (issue #16 part 3).

The demo's registered champion (alias `champion` in the run's MLflow registry, its Triton repository downloaded
with the digest checked) is served by `slipway serve --require-digest` on 127.0.0.1, and the test split of the
very dataset it was trained on (found by the fingerprint on the registered version) is sent one image per
request, open loop, over HTTP and over gRPC. Each answer is checked against its label, so accuracy, p50/p99
latency and errors come from the same requests. Then a bounded step-up and bisection finds the highest offered
rate that still meets p99 < 100 ms with no errors.

The load generator is one asyncio process: it measures the rate it actually sent at and marks a run invalid
when that falls below 95% of the offered rate (the generator, not the server, was then the limit).
Run with `python -m benchmarks.serving --only champion`; the full `python -m benchmarks.serving` runs it last.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.compression import quickstart_command
from benchmarks.serving import HOST, http_exchange, http_infer_request, machine

log = logging.getLogger(__name__)
MARK_START, MARK_END = "<!-- serving-champion:start -->", "<!-- serving-champion:end -->"
TARGET_ACCURACY = 0.95
TARGET_P99_MS = 100.0
MIN_SENT_FRACTION = 0.95  # below this share of the offered rate the generator, not the server, was the limit
REQUEST_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 512  # HTTP/1.1 keep-alive connections the generator may open (one request in flight each)
WARMUP_REQUESTS = 50
PROTOCOLS = ("http", "grpc")


class BenchError(RuntimeError):
    """The bench cannot run as asked (no run, no champion, no dataset with the champion's fingerprint)."""


@dataclass(frozen=True)
class Champion:
    """What the bench serves and what it sends: the registry's champion and its own test split."""

    model_name: str
    version: str
    tracking_uri: str
    repository: Path  # the downloaded Triton model repository (its directory digest checked against the tag)
    repository_sha256: str
    input_name: str
    output_name: str
    recorded_accuracy: float | None  # the slipway.accuracy tag: the evaluate step's test accuracy
    dataset: str
    dataset_fingerprint: str
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------- the run and its champion
def ensure_quickstart_run(run_dir: Path, reuse: bool) -> Path:
    """The run's summary.json: reused when asked and present, else made by `slipway run quickstart` (default
    preset). A gate rejection still leaves the earlier champion in the registry, so it is accepted."""
    summary = run_dir / "summary.json"
    if reuse and summary.is_file():
        return summary
    if reuse:
        log.warning("--reuse-run: %s does not exist; making the run", summary)
    command = quickstart_command(run_dir)
    log.warning("making the demo's champion: %s", " ".join(command))
    subprocess.run(command, check=True, timeout=3600, stdout=subprocess.DEVNULL)
    return summary


def _dataset_with_fingerprint(run_dir: Path, fingerprint: str) -> Any:
    """The run's dataset artifact (kfp.local writes it as pipeline/<run>/prepare-data/dataset) that the
    champion was trained on; refused unless its fingerprint equals the version's tag."""
    from slipway.core.data import load_splits

    candidates = sorted(run_dir.glob("pipeline/*/prepare-data/dataset"), key=lambda p: p.stat().st_mtime)
    for path in reversed(candidates):
        splits = load_splits(path)
        if splits.fingerprint == fingerprint:
            return splits
    raise BenchError(
        f"{run_dir}: none of the {len(candidates)} dataset artifacts under pipeline/*/prepare-data/ has the "
        f"champion's dataset fingerprint {fingerprint[:12]}; the champion was trained elsewhere"
    )


def load_champion(summary_path: Path, workdir: Path) -> Champion:
    """Resolve alias `champion` in the run's registry, download its Triton repository (digest checked) and
    load the test split with the champion's dataset fingerprint."""
    from slipway import registry
    from slipway.core.config import RegistryConfig
    from slipway.core.summary import RunSummary
    from slipway.serving.triton_repository import read_model_config

    summary = RunSummary.model_validate_json(summary_path.read_text())
    if summary.registry is None:
        raise BenchError(f"{summary_path}: the run ({summary.status}) registered no model: {summary.error}")
    cfg = RegistryConfig(tracking_uri=summary.registry.tracking_uri, model_name=summary.registry.model_name)
    version = registry.version_by_alias(cfg, registry.CHAMPION)
    repo = registry.download_model_repository(cfg, version, workdir)
    tags = registry.mlflow_client(cfg).get_model_version(cfg.model_name, version).tags or {}
    fingerprint = tags.get("slipway.dataset_fingerprint")
    if not fingerprint:
        raise BenchError(f"{cfg.model_name} v{version} has no slipway.dataset_fingerprint tag")
    splits = _dataset_with_fingerprint(summary_path.parent, fingerprint)
    config = read_model_config(repo / cfg.model_name)
    accuracy = tags.get("slipway.accuracy")
    return Champion(
        model_name=cfg.model_name,
        version=version,
        tracking_uri=cfg.tracking_uri or "",
        repository=repo,
        repository_sha256=tags[registry.MODEL_REPOSITORY_SHA256_TAG],
        input_name=config.input[0].name,
        output_name=config.output[0].name,
        recorded_accuracy=float(accuracy) if accuracy else None,
        dataset=splits.name,
        dataset_fingerprint=fingerprint,
        x_test=np.ascontiguousarray(splits.x_test, dtype=np.float32),
        y_test=np.asarray(splits.y_test, dtype=np.int64),
    )


# ---------------------------------------------------------------- the labelled open-loop generator (spawned)
Answer = tuple[str, int | None, float]  # (status, top-1 class or None, when the request left the client)
Send = Callable[[int], Awaitable[Answer]]
Close = Callable[[], Awaitable[None]]


def _top1(datatype: str, raw: bytes) -> int:
    from slipway.serving.datatypes import V2_TO_NUMPY

    return int(np.frombuffer(raw, dtype=V2_TO_NUMPY[datatype]).argmax())


def _http_answer(head: bytes, body: bytes) -> int:
    """Top-1 class of a binary-tensor response (the JSON header, then the output's raw bytes)."""
    lower = head.lower()
    i = lower.index(b"\r\ninference-header-content-length:") + 34
    size = int(lower[i : lower.index(b"\r\n", i)])
    output = json.loads(body[:size])["outputs"][0]
    return _top1(output["datatype"], body[size : size + output["parameters"]["binary_data_size"]])


async def _http_sender(port: int, champion: dict[str, Any]) -> tuple[Send, Close]:
    """One request per test image, built once; keep-alive connections opened as the load needs them."""
    requests = [
        http_infer_request(champion["model"], x[None], port, champion["input"], champion["output"])
        for x in champion["x"]
    ]
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0

    async def send(i: int) -> Answer:
        nonlocal opened
        if idle.empty() and opened < MAX_CONNECTIONS:
            opened += 1
            conn = await asyncio.open_connection(HOST, port)
        else:
            conn = await idle.get()
        sent = time.perf_counter()
        try:
            status, head, body = await asyncio.wait_for(http_exchange(*conn, requests[i]), REQUEST_TIMEOUT_S)
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as err:
            conn[1].close()
            opened -= 1
            return f"client:{type(err).__name__}", None, sent
        idle.put_nowait(conn)
        return str(status), _http_answer(head, body) if status == 200 else None, sent

    async def close() -> None:
        while not idle.empty():
            idle.get_nowait()[1].close()

    return send, close


async def _grpc_sender(port: int, champion: dict[str, Any]) -> tuple[Send, Close]:
    """One ModelInferRequest per test image on one HTTP/2 channel (gRPC multiplexes the calls)."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from slipway.serving.datatypes import NUMPY_TO_V2

    requests = []
    for x in champion["x"]:
        request = pb.ModelInferRequest(model_name=champion["model"])
        request.inputs.add(name=champion["input"], datatype=NUMPY_TO_V2[x.dtype.name], shape=[1, *x.shape])
        request.outputs.add(name=champion["output"])
        request.raw_input_contents.append(x.tobytes())
        requests.append(request)
    channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
    infer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer

    async def send(i: int) -> Answer:
        sent = time.perf_counter()
        try:
            response = await infer(requests[i], timeout=REQUEST_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            return err.code().name, None, sent
        return "OK", _top1(response.outputs[0].datatype, response.raw_output_contents[0]), sent

    async def close() -> None:
        await channel.close()

    return send, close


async def _open_loop(protocol: str, port: int, champion: dict[str, Any], rate: float, seconds: float):
    """Request k is due at start + k/rate whatever happened before, carries test image k mod N, and its
    latency counts from when it was due (queueing in the client or the server included)."""
    make = _http_sender if protocol == "http" else _grpc_sender
    send, close = await make(port, champion)
    labels = champion["y"]
    n_images = len(labels)
    for k in range(WARMUP_REQUESTS):  # the path and a few connections warm before the clock starts
        await send(k % n_images)
    total = max(2, int(rate * seconds))
    latencies = np.zeros(total)
    sent_at = np.zeros(total)
    statuses: Counter[str] = Counter()
    correct = answered = 0
    ok = "200" if protocol == "http" else "OK"

    async def one(k: int, due: float) -> None:
        nonlocal correct, answered
        status, top1, sent = await send(k % n_images)
        latencies[k] = time.perf_counter() - due
        sent_at[k] = sent
        statuses[status] += 1
        if status == ok and top1 is not None:
            answered += 1
            correct += int(top1 == labels[k % n_images])

    gc.disable()  # no collector pauses in the generator while it keeps the schedule
    tasks = []
    cpu_before = time.process_time()
    start = time.perf_counter() + 0.05
    try:
        for k in range(total):
            due = start + k / rate
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k, due)))
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    finished = time.perf_counter()
    client_cpu = time.process_time() - cpu_before
    await close()
    ms = latencies * 1000
    sent_span = float(sent_at.max() - sent_at.min())
    sent_per_s = (total - 1) / sent_span if sent_span > 0 else 0.0
    non_ok = total - statuses.get(ok, 0)
    return {
        "protocol": protocol,
        "offered_per_s": rate,
        "seconds": seconds,
        "requests": total,
        "sent_per_s": sent_per_s,
        "answered_per_s": answered / (finished - start),
        "send_lag_p99_ms": float(np.percentile((sent_at - (start + np.arange(total) / rate)) * 1000, 99)),
        "statuses": dict(statuses),
        "errors": non_ok,
        "answered": answered,
        "correct": correct,
        "accuracy": correct / answered if answered else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "valid": sent_per_s >= MIN_SENT_FRACTION * rate,
        "wall_s": finished - start,
        "client_cpu_share": client_cpu / (finished - start),  # 1.0: the generator used a whole core
    }


def labelled_loadgen(
    protocol: str, port: int, champion: dict[str, Any], rate: float, seconds: float
) -> dict[str, Any]:
    """Entry point in the generator process; bounded by `seconds` and the per-request timeout."""
    result: dict[str, Any] = asyncio.run(_open_loop(protocol, port, champion, rate, seconds))
    return result


# ---------------------------------------------------------------- the phase
def _meets(run: dict[str, Any]) -> list[str]:
    """Why a step misses the latency target (empty: it meets it)."""
    reasons = []
    if run["p99_ms"] >= TARGET_P99_MS:
        reasons.append(f"p99 {run['p99_ms']:.1f} ms >= {TARGET_P99_MS:g}")
    if run["errors"]:
        reasons.append(f"{run['errors']} errors {run['statuses']}")
    if not run["valid"]:
        reasons.append(f"generator sent {run['sent_per_s']:.0f}/s < 95% of offered")
    if run["answered_per_s"] < MIN_SENT_FRACTION * run["offered_per_s"]:
        reasons.append(f"answered {run['answered_per_s']:.0f}/s < 95% of offered")
    return reasons


def search_max_rate(
    load: Callable[[float], dict[str, Any]], low: float, high: float, bisections: int
) -> dict[str, Any]:
    """Double from `low` until a step misses (or `high` passes), then bisect between the last pass and the
    first miss `bisections` times; every step is one short open-loop run."""
    steps: list[dict[str, Any]] = []

    def step(rate: float) -> bool:
        run = load(rate)
        run["misses"] = _meets(run)
        steps.append(run)
        return not run["misses"]

    best: float | None = None
    failed: float | None = None
    rate = low
    while True:
        if step(rate):
            best = rate
            if rate >= high:
                break
            rate = min(rate * 2, high)
        else:
            failed = rate
            break
    for _ in range(bisections):
        if best is None or failed is None:
            break
        mid = float(round((best + failed) / 2, -1))
        if mid in (best, failed):
            break
        if step(mid):
            best = mid
        else:
            failed = mid
    return {
        "max_rate_per_s": best,
        "first_miss_per_s": failed,
        "capped_at_high": failed is None,
        "limited_by": next((st["misses"] for st in steps if st["offered_per_s"] == failed), None),
        "steps": [{k: v for k, v in s.items() if k != "seconds"} for s in steps],
    }


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    def median(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    statuses: Counter[str] = Counter()
    for r in runs:
        statuses.update(r["statuses"])
    summary: dict[str, Any] = {
        key: median(key)
        for key in (
            "accuracy",
            "p50_ms",
            "p99_ms",
            "sent_per_s",
            "answered_per_s",
            "client_cpu_share",
            "server_cpu_share",
        )
    }
    summary |= {
        "errors": sum(r["errors"] for r in runs),
        "statuses": dict(statuses),
        "valid": all(r["valid"] for r in runs),
    }
    summary["targets_held"] = (
        summary["accuracy"] >= TARGET_ACCURACY
        and summary["p99_ms"] < TARGET_P99_MS
        and summary["errors"] == 0
    )
    summary["runs"] = runs
    return summary


@dataclass(frozen=True)
class ChampionSettings:
    run_dir: Path
    reuse_run: bool = False
    rate: float = 1000.0
    seconds: float = 30.0
    repeats: int = 3
    search: bool = True
    search_low: float = 500.0
    search_high: float = 4000.0
    search_seconds: float = 10.0
    search_bisections: int = 2
    server_threads: int | None = None  # `slipway serve --threads`; None: its default (ONNX Runtime decides)


def run_champion(settings: ChampionSettings, command: str) -> dict[str, Any]:
    """Serve the champion with `slipway serve` and measure it at the offered rate, then search its maximum."""
    from slipway.serving.server import start_server
    from slipway.serving.service import ServerOptions

    started = time.time()
    at_start = machine()
    summary_path = ensure_quickstart_run(settings.run_dir, settings.reuse_run)
    with tempfile.TemporaryDirectory(prefix="slipway-bench-champion-") as tmp:
        champion = load_champion(summary_path, Path(tmp))
        payload = {
            "model": champion.model_name,
            "input": champion.input_name,
            "output": champion.output_name,
            "x": champion.x_test,
            "y": champion.y_test,
        }
        options = ServerOptions(require_digest=True)
        with (
            ProcessPoolExecutor(1, mp_context=get_context("spawn")) as gen,
            start_server(
                champion.repository,
                HOST,
                threads=settings.server_threads,
                options=options,
                subprocess_mode=True,
            ) as server,
        ):
            ports = {"http": server.http_port, "grpc": server.grpc_port}

            def load(protocol: str, rate: float, seconds: float) -> dict[str, Any]:
                timeout = seconds * 3 + REQUEST_TIMEOUT_S + 60
                server_cpu = _cpu_seconds(server.pid)
                future = gen.submit(labelled_loadgen, protocol, ports[protocol], payload, rate, seconds)
                run: dict[str, Any] = future.result(timeout=timeout)
                # the server's CPU over the whole call (warm-up included) per second of the timed run
                run["server_cpu_share"] = (_cpu_seconds(server.pid) - server_cpu) / run["wall_s"]
                return run

            at_rate: dict[str, Any] = {}
            for protocol in PROTOCOLS:
                runs = [load(protocol, settings.rate, settings.seconds) for _ in range(settings.repeats)]
                at_rate[protocol] = _summarize(runs)
            max_rate: dict[str, Any] = {}
            if settings.search:
                for protocol in PROTOCOLS:
                    max_rate[protocol] = search_max_rate(
                        functools.partial(load, protocol, seconds=settings.search_seconds),
                        settings.search_low,
                        settings.search_high,
                        settings.search_bisections,
                    )
            stats = json.loads(_get(f"{server.url}/v2/models/{champion.model_name}/stats"))
    batch_sizes = {
        b["batch_size"]: b["compute_infer"]["count"] for s in stats["model_stats"] for b in s["batch_stats"]
    }
    return {
        "command": command,
        "machine": at_start,
        "model": {
            "name": champion.model_name,
            "version": champion.version,
            "alias": "champion",
            "tracking_uri": champion.tracking_uri,
            "repository_sha256": champion.repository_sha256,
            "digest_checked": True,
            "recorded_test_accuracy": champion.recorded_accuracy,
            "dataset": champion.dataset,
            "dataset_fingerprint": champion.dataset_fingerprint,
            "test_images": len(champion.y_test),
        },
        "server": "slipway serve REPO --host 127.0.0.1 --require-digest"
        + (f" --threads {settings.server_threads}" if settings.server_threads else "")
        + " (defaults otherwise)",
        "settings": {
            "run_dir": str(settings.run_dir),
            "reused_run": settings.reuse_run,
            "offered_per_s": settings.rate,
            "seconds": settings.seconds,
            "repeats": settings.repeats,
            "search": {
                "low_per_s": settings.search_low,
                "high_per_s": settings.search_high,
                "seconds": settings.search_seconds,
                "bisections": settings.search_bisections,
            }
            if settings.search
            else None,
            "max_connections_http": MAX_CONNECTIONS,
            "request_timeout_s": REQUEST_TIMEOUT_S,
        },
        "targets": {
            "accuracy": TARGET_ACCURACY,
            "p99_ms": TARGET_P99_MS,
            "errors": 0,
            "min_sent_fraction": MIN_SENT_FRACTION,
        },
        "at_rate": at_rate,
        "max_rate": max_rate,
        "server_batch_sizes": batch_sizes,
        "load_average_at_end": list(os.getloadavg()),
        "targets_held": all(v["targets_held"] for v in at_rate.values()),
        "valid": all(v["valid"] for v in at_rate.values()),
        "wall_s": round(time.time() - started, 1),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; the server runs in its own process)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=10).text


# ---------------------------------------------------------------- docs/benchmarks.md
def markdown(result: dict[str, Any]) -> str:
    """This phase's section of docs/benchmarks.md, between its own markers."""
    m, model, s = result["machine"], result["model"], result["settings"]
    yes = {True: "yes", False: "**no**"}
    lines = [
        MARK_START,
        "### The demo's champion at 1,000 images/s: accuracy, latency and errors from the same requests",
        "",
        f"Machine: {m['cpu']}, `nproc` {m['nproc']} ({m['cores']} logical CPUs), Python {m['python']}, ONNX "
        f"Runtime {m['onnxruntime']}; load average (1, 5, 15 min) {_loads(m['load_average_at_start'])} at the start and "
        f"{_loads(result['load_average_at_end'])} at the end. "
        "The load generator (one asyncio process) shares these cores with the server, so every number here "
        "includes the client's own CPU cost.",
        f"Command: `{result['command']}`. Raw numbers: `docs/benchmarks/serving.json` (`champion_at_rate`).",
        "",
        f"Model: `{model['name']}` v{model['version']} (alias `champion`), its Triton repository downloaded from "
        f"the registry with its digest checked (`{model['repository_sha256'][:12]}`), served by `{result['server']}`; "
        f"registered test accuracy {_fmt(model['recorded_test_accuracy'], '.4f')}. Requests: the "
        f"{model['test_images']} test images of `{model['dataset']}` (fingerprint "
        f"`{model['dataset_fingerprint'][:12]}`), one image per request, cycled, each answer checked against its "
        f"label; open loop (request k is due at k/rate, latency counts from then), medians of {s['repeats']} runs "
        f"of {s['seconds']:g} s at {s['offered_per_s']:,.0f} req/s.",
        "",
        "| protocol | sent req/s | answered req/s | accuracy | p50 ms | p99 ms (each run) | non-200 | CPU cores used: "
        "generator / server | generator kept the rate | accuracy >= 0.95, p99 < 100 ms, 0 errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for protocol, r in result["at_rate"].items():
        lines.append(
            f"| {protocol.upper() if protocol == 'http' else 'gRPC'} | {r['sent_per_s']:,.0f} | "
            f"{r['answered_per_s']:,.0f} | {r['accuracy']:.4f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} ({_runs(r['runs'], 'p99_ms')}) | "
            f"{r['errors']} {_statuses(r['statuses'])} | {r['client_cpu_share']:.2f} / {r['server_cpu_share']:.2f} | "
            f"{yes[r['valid']]} | {yes[r['targets_held']]} |"
        )
    if result["max_rate"]:
        search = s["search"]
        lines += [
            "",
            f"Highest offered rate meeting p99 < 100 ms with no errors and the generator within 95% of the rate "
            f"(doubling from {search['low_per_s']:,.0f} up to {search['high_per_s']:,.0f} req/s, then "
            f"{search['bisections']} bisections; {search['seconds']:g} s per step):",
            "",
            "| protocol | highest rate met | first rate missed | why it missed | steps (req/s: p99 ms) |",
            "| --- | ---: | ---: | --- | --- |",
        ]
        for protocol, found in result["max_rate"].items():
            steps = ", ".join(f"{st['offered_per_s']:,.0f}: {st['p99_ms']:.1f}" for st in found["steps"])
            lines.append(
                f"| {protocol.upper() if protocol == 'http' else 'gRPC'} | {_fmt(found['max_rate_per_s'], ',.0f')} | "
                f"{_fmt(found['first_miss_per_s'], ',.0f')} | {'; '.join(found['limited_by'] or []) or '-'} | "
                f"{steps} |"
            )
    lines += ["", "![serving: throughput and p99](benchmarks/serving.png)", "", MARK_END]
    return "\n".join(lines)


def _runs(runs: list[dict[str, Any]], key: str) -> str:
    return ", ".join(f"{r[key]:.1f}" for r in runs)


def _loads(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _statuses(statuses: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k}: {v:,}" for k, v in sorted(statuses.items())) + ")"
