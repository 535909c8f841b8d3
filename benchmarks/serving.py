# Over 500 lines: three load patterns (closed loop, open loop, batching), their report and plot, kept together.
"""Serving benchmark: `python -m benchmarks.serving --output docs` (bounded, 127.0.0.1 only).

Four measurements, each repeated and reported as the median:
1. throughput at batch 32 over HTTP (binary tensors) and gRPC vs in-process ONNX Runtime, same model and threads;
2. dynamic batching on a compute-bound 3x32x32 CNN with single-image clients (concurrency 1, 4, 16),
   with and without batching, and the p99 bound max_queue_delay + two batches' compute;
3. p99 latency at an offered 1,000 single-image requests/s, open loop, to a digits-sized 1x8x8 CNN;
4. the demo's registered champion at 1,000 images/s, accuracy of the answers included, and the highest rate that
   meets p99 < 100 ms (benchmarks/serving_champion.py; `--only champion`).
Then serving.png from serving.json (`--only plot` redraws it alone).

The server runs in its own process and the load generator in another (spawned), so the generator's cost is
visible and separate; both share the machine's cores with the server, which the report states.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np

HOST = "127.0.0.1"
CNN_SHAPE = (3, 32, 32)
DIGITS_SHAPE = (1, 8, 8)
BATCH_DELAY_US = 2000
WARMUP_S = 0.3


# ---------------------------------------------------------------- models and repository (torch imported here only)
def _cnn32() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(128 * 8 * 8, 1024),
        nn.ReLU(),
        nn.Linear(1024, 10),
    ).eval()


def _digits() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


def build_repository(workdir: Path) -> tuple[Path, dict[str, Path]]:
    """cnn32 (dynamic batching), cnn32_direct (none), digits (dynamic batching), all exported by Slipway."""
    import torch

    from slipway.compression.onnx_export import export_onnx
    from slipway.core.config import TritonConfig
    from slipway.serving.triton_repository import write_model

    torch.manual_seed(0)
    files = {"cnn32": workdir / "cnn32.onnx", "digits": workdir / "digits.onnx"}
    export_onnx(_cnn32(), CNN_SHAPE, files["cnn32"])
    export_onnx(_digits(), DIGITS_SHAPE, files["digits"])
    repo = workdir / "repo"
    batching = TritonConfig.model_validate(
        {"max_batch_size": 64, "preferred_batch_sizes": [16, 32], "max_queue_delay_us": BATCH_DELAY_US}
    )
    write_model(repo, "cnn32", files["cnn32"], batching)
    write_model(repo, "cnn32_direct", files["cnn32"], TritonConfig(max_batch_size=64, dynamic_batching=False))
    write_model(
        repo,
        "digits",
        files["digits"],
        TritonConfig.model_validate(dict(max_batch_size=64, max_queue_delay_us=500)),
    )
    return repo, files


# ---------------------------------------------------------------- in-process ONNX Runtime baseline
def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_throughput(path: Path, shape: tuple[int, ...], batch: int, threads: int, seconds: float) -> float:
    """Images/s of back-to-back session.run calls in this process."""
    session = _session(path, threads)
    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    end = time.perf_counter() + WARMUP_S
    while time.perf_counter() < end:
        session.run(None, {"input": x})
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"input": x})
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def ort_latency_ms(path: Path, shape: tuple[int, ...], batch: int, threads: int, runs: int = 50) -> float:
    session = _session(path, threads)
    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    for _ in range(5):
        session.run(None, {"input": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


# ---------------------------------------------------------------- load generator (runs in a spawned process)
def _http_request(model: str, batch: int, shape: tuple[int, ...], port: int) -> bytes:
    x = np.random.default_rng(1).random((batch, *shape), dtype=np.float32)
    return http_infer_request(model, x, port)


def http_infer_request(
    model: str, x: np.ndarray, port: int, input_name: str = "input", output_name: str = "logits"
) -> bytes:
    """A whole v2 binary-tensor HTTP/1.1 request for the batch `x`, built once and sent as bytes."""
    from slipway.serving.datatypes import NUMPY_TO_V2

    data = np.ascontiguousarray(x).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": NUMPY_TO_V2[x.dtype.name],
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": output_name, "parameters": {"binary_data": True}}],
        }
    ).encode()
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
        f"Content-Length: {len(header) + len(data)}\r\n\r\n"
    )
    return head.encode() + header + data


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bytes]:
    """One keep-alive HTTP/1.1 exchange with no client library in the way (the generator must stay cheap):
    (status, response head, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    i = lower.index(b"\r\ncontent-length:") + 17
    body = await reader.readexactly(int(lower[i : lower.index(b"\r\n", i)]))
    return int(head[9:12]), head, body


async def _http_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    return (await http_exchange(reader, writer, request))[0]


def _summary(latencies: list[float], statuses: Counter[int], elapsed: float, rows: int) -> dict[str, Any]:
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    ok = statuses.get(200, 0)
    return {
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in statuses.items()},
        "req_per_s": ok / elapsed,
        "images_per_s": ok * rows / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


async def _closed_http(
    port: int, model: str, batch: int, shape: tuple[int, ...], clients: int, seconds: float
):
    request = _http_request(model, batch, shape, port)
    conns = [await asyncio.open_connection(HOST, port) for _ in range(clients)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    warm_end = time.perf_counter() + WARMUP_S
    end = warm_end + seconds

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (t := time.perf_counter()) < end:
            status = await _http_call(reader, writer, request)
            if t >= warm_end:
                latencies.append(time.perf_counter() - t)
                statuses[status] += 1

    await asyncio.gather(*(client(r, w) for r, w in conns))
    for _, writer in conns:
        writer.close()
    return _summary(latencies, statuses, seconds, batch)


async def _closed_grpc(
    port: int, model: str, batch: int, shape: tuple[int, ...], clients: int, seconds: float
):
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    x = np.random.default_rng(1).random((batch, *shape), dtype=np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="input", datatype="FP32", shape=[batch, *shape])
    request.raw_input_contents.append(x.tobytes())
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        warm_end = time.perf_counter() + WARMUP_S
        end = warm_end + seconds

        async def client() -> None:
            while (t := time.perf_counter()) < end:
                try:
                    await stub.ModelInfer(request, timeout=30)
                    status = 200
                except grpc.aio.AioRpcError as err:
                    status = 503 if err.code() == grpc.StatusCode.UNAVAILABLE else 500
                if t >= warm_end:
                    latencies.append(time.perf_counter() - t)
                    statuses[status] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return _summary(latencies, statuses, seconds, batch)


async def _open_http(
    port: int, model: str, shape: tuple[int, ...], rate: float, seconds: float, pool: int = 64
):
    """Open loop: request i is due at start + i/rate whatever happened before; latency counts from that time."""
    request = _http_request(model, 1, shape, port)
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(pool):
        idle.put_nowait(await asyncio.open_connection(HOST, port))
    for _ in range(50):  # warm the path before the clock starts
        r, w = await idle.get()
        await _http_call(r, w, request)
        idle.put_nowait((r, w))
    latencies: list[float] = []
    statuses: Counter[int] = Counter()

    async def one(due: float) -> None:
        reader, writer = await idle.get()
        try:
            statuses[await _http_call(reader, writer, request)] += 1
        finally:
            idle.put_nowait((reader, writer))
        latencies.append(time.perf_counter() - due)

    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait()[1].close()
    result = _summary(latencies, statuses, elapsed, 1)
    result["offered_per_s"] = rate
    return result


def loadgen(kind: str, **kwargs: Any) -> dict[str, Any]:
    """Entry point in the generator process; bounded by its duration arguments."""
    runners: dict[str, Callable[..., Any]] = {
        "closed_http": _closed_http,
        "closed_grpc": _closed_grpc,
        "open_http": _open_http,
    }
    result: dict[str, Any] = asyncio.run(runners[kind](**kwargs))
    return result


# ---------------------------------------------------------------- orchestration
def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints: the CPUs this process may run on
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def run_bench(output: Path, seconds: float = 2.0, repeats: int = 3, threads: int = 1) -> dict[str, Any]:
    """Run all three measurements; write OUTPUT/benchmarks/serving.json and return the report."""
    from slipway.serving.server import start_server
    from slipway.serving.service import ServerOptions

    started = time.time()
    os.environ.setdefault("SLIPWAY_LOG_LEVEL", "WARNING")  # the server subprocess inherits it
    report: dict[str, Any] = {
        "machine": machine(),
        "command": f"python -m benchmarks.serving --output {output}",
        "settings": {"seconds": seconds, "repeats": repeats, "ort_threads": threads, "warmup_s": WARMUP_S},
    }
    with tempfile.TemporaryDirectory() as tmp:
        repo, files = build_repository(Path(tmp))
        options = ServerOptions(max_queue=1024, timeout_s=30)
        spawn = get_context("spawn")
        with (
            ProcessPoolExecutor(1, mp_context=spawn) as gen,
            start_server(repo, threads=threads, options=options, subprocess_mode=True) as server,
        ):

            def load(kind: str, **kw: Any) -> dict[str, Any]:
                return gen.submit(loadgen, kind, **kw).result(timeout=120)

            load(
                "closed_http",
                port=server.http_port,
                model="digits",
                batch=1,
                shape=DIGITS_SHAPE,
                clients=1,
                seconds=0.2,
            )
            hp, gp = server.http_port, server.grpc_port

            # 1. batch-32 throughput vs in-process ORT
            ort_runs = [
                ort_throughput(files["cnn32"], CNN_SHAPE, 32, threads, seconds) for _ in range(repeats)
            ]
            common = {
                "model": "cnn32_direct",
                "batch": 32,
                "shape": CNN_SHAPE,
                "clients": 2,
                "seconds": seconds,
            }
            http_runs = [load("closed_http", port=hp, **common) for _ in range(repeats)]
            grpc_runs = [load("closed_grpc", port=gp, **common) for _ in range(repeats)]
            ort_ips = statistics.median(ort_runs)
            http_ips, grpc_ips = _median(http_runs, "images_per_s"), _median(grpc_runs, "images_per_s")
            report["throughput_batch32"] = {
                "model": "cnn32 (3x32x32 CNN), no dynamic batching, 2 concurrent clients",
                "ort_in_process_images_per_s": ort_ips,
                "http_binary_images_per_s": http_ips,
                "grpc_images_per_s": grpc_ips,
                "http_ratio": http_ips / ort_ips,
                "grpc_ratio": grpc_ips / ort_ips,
                "target_ratio": 0.5,
                "pass": http_ips / ort_ips >= 0.5 and grpc_ips / ort_ips >= 0.5,
                "runs": {"ort": ort_runs, "http": http_runs, "grpc": grpc_runs},
            }

            # 2. dynamic batching, single-image clients
            batch1_ms = ort_latency_ms(files["cnn32"], CNN_SHAPE, 1, threads)
            batch16_ms = ort_latency_ms(files["cnn32"], CNN_SHAPE, 16, threads)
            levels: dict[str, Any] = {}
            for clients in (1, 4, 16):
                per_model: dict[str, dict[str, Any]] = {}
                runs_by_model: dict[str, list[dict[str, Any]]] = {"cnn32": [], "cnn32_direct": []}
                for _ in range(repeats):  # A/B interleaved: both see the same background load
                    for model, runs in runs_by_model.items():
                        kw = {
                            "model": model,
                            "batch": 1,
                            "shape": CNN_SHAPE,
                            "clients": clients,
                            "seconds": seconds,
                        }
                        runs.append(load("closed_http", port=hp, **kw))
                for model, runs in runs_by_model.items():
                    per_model[model] = {
                        "req_per_s": _median(runs, "req_per_s"),
                        "p50_ms": _median(runs, "p50_ms"),
                        "p99_ms": _median(runs, "p99_ms"),
                        "runs": runs,
                    }
                levels[str(clients)] = {
                    "batching": per_model["cnn32"],
                    "no_batching": per_model["cnn32_direct"],
                    "speedup": per_model["cnn32"]["req_per_s"] / per_model["cnn32_direct"]["req_per_s"],
                }
            bound_ms = BATCH_DELAY_US / 1000 + 2 * batch16_ms
            c16 = levels["16"]
            report["dynamic_batching"] = {
                "model": "cnn32 (3x32x32 CNN), single-image HTTP binary requests, closed loop",
                "ort_batch1_latency_ms": batch1_ms,
                "ort_batch16_latency_ms": batch16_ms,
                "max_queue_delay_ms": BATCH_DELAY_US / 1000,
                "concurrency": levels,
                "speedup_at_16": c16["speedup"],
                "p99_at_16_ms": c16["batching"]["p99_ms"],
                "p99_bound_ms": bound_ms,
                "min_speedup_any_concurrency": min(v["speedup"] for v in levels.values()),
                "pass": c16["speedup"] >= 1.3
                and c16["batching"]["p99_ms"] <= bound_ms
                and batch1_ms >= 1.0
                and min(v["speedup"] for v in levels.values()) >= 0.95,
            }

            # 3. open loop at 1,000 images/s to the digits CNN
            open_runs = [
                load(
                    "open_http",
                    port=hp,
                    model="digits",
                    shape=DIGITS_SHAPE,
                    rate=1000.0,
                    seconds=seconds * 1.5,
                )
                for _ in range(repeats)
            ]
            report["open_loop_1000"] = {
                "model": "digits (1x8x8 CNN), single-image HTTP binary requests, open loop",
                "offered_per_s": 1000.0,
                "achieved_per_s": _median(open_runs, "req_per_s"),
                "p50_ms": _median(open_runs, "p50_ms"),
                "p99_ms": _median(open_runs, "p99_ms"),
                "non_200": sum(sum(v for k, v in r["statuses"].items() if k != "200") for r in open_runs),
                "pass": _median(open_runs, "p99_ms") < 100
                and _median(open_runs, "req_per_s") >= 950
                and all(set(r["statuses"]) == {"200"} for r in open_runs),
                "runs": open_runs,
            }
            stats = json.loads(_get(f"{server.url}/v2/models/stats"))
            report["server_batch_sizes"] = {
                s["name"]: {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]}
                for s in stats["model_stats"]
            }
    report["wall_s"] = round(time.time() - started, 1)
    return write_report(output, report)


def write_report(output: Path, keys: dict[str, Any]) -> dict[str, Any]:
    """Merge `keys` into OUTPUT/benchmarks/serving.json, keeping the keys another phase wrote; returns it all."""
    out = output / "benchmarks" / "serving.json"
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.update(keys)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _get(url: str) -> str:
    import httpx

    return httpx.get(url, timeout=10).text


def markdown(report: dict[str, Any]) -> str:
    """The table that goes into docs/serving.md."""
    t, d, o = report["throughput_batch32"], report["dynamic_batching"], report["open_loop_1000"]
    m = report["machine"]
    rows = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, ONNX Runtime {m['onnxruntime']}; "
        f"ORT threads {report['settings']['ort_threads']}; load average at start {m['load_average_at_start']}",
        f"Command: `{report['command']}` (medians of {report['settings']['repeats']} runs of "
        f"{report['settings']['seconds']} s)",
        "",
        "| measurement | result | target | pass |",
        "| --- | --- | --- | --- |",
        f"| batch 32, in-process ORT | {t['ort_in_process_images_per_s']:.0f} img/s | - | - |",
        f"| batch 32, HTTP binary | {t['http_binary_images_per_s']:.0f} img/s ({t['http_ratio']:.0%}) | >= 50% | "
        f"{'yes' if t['http_ratio'] >= 0.5 else 'NO'} |",
        f"| batch 32, gRPC | {t['grpc_images_per_s']:.0f} img/s ({t['grpc_ratio']:.0%}) | >= 50% | "
        f"{'yes' if t['grpc_ratio'] >= 0.5 else 'NO'} |",
        f"| cnn32 batch-1 latency, in-process | {d['ort_batch1_latency_ms']:.2f} ms | >= 1 ms | "
        f"{'yes' if d['ort_batch1_latency_ms'] >= 1 else 'NO'} |",
    ]
    for clients, level in d["concurrency"].items():
        rows.append(
            f"| {clients} single-image clients: batching / none | {level['batching']['req_per_s']:.0f} / "
            f"{level['no_batching']['req_per_s']:.0f} req/s (x{level['speedup']:.2f}) | "
            f"{'>= 1.3x' if clients == '16' else '>= 0.95x'} | "
            f"{'yes' if level['speedup'] >= (1.3 if clients == '16' else 0.95) else 'NO'} |"
        )
    rows += [
        f"| p99 at 16 clients with batching | {d['p99_at_16_ms']:.1f} ms | <= {d['p99_bound_ms']:.1f} ms "
        f"(delay + 2 x batch-16 compute) | {'yes' if d['p99_at_16_ms'] <= d['p99_bound_ms'] else 'NO'} |",
        f"| open loop 1,000 img/s, digits CNN: p50 / p99 | {o['p50_ms']:.1f} / {o['p99_ms']:.1f} ms "
        f"({o['achieved_per_s']:.0f} req/s served, {o['non_200']} non-200) | p99 < 100 ms | "
        f"{'yes' if o['pass'] else 'NO'} |",
    ]
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path) -> Path:
    """serving.png from serving.json: throughput and p99 against concurrency with dynamic batching on and off,
    and, when the champion phase searched its maximum rate, p99 against the offered rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batching = report.get("dynamic_batching")
    search = (report.get("champion_at_rate") or {}).get("max_rate") or {}
    if batching is None and not search:
        raise click.ClickException(
            "serving.json has neither dynamic_batching nor champion_at_rate.max_rate: nothing to plot"
        )
    panels = (2 if batching else 0) + (1 if search else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.3), dpi=110, squeeze=False)
    ax_iter = iter(axes[0])
    if batching:
        levels = sorted(batching["concurrency"].items(), key=lambda kv: int(kv[0]))
        clients = [int(c) for c, _ in levels]
        delay = batching["max_queue_delay_ms"]
        modes = (
            ("batching", f"dynamic batching on ({delay:g} ms queue delay)", "o-"),
            ("no_batching", "dynamic batching off", "s--"),
        )
        for key, ylabel, title in (
            ("req_per_s", "throughput (single-image requests/s)", "Throughput vs concurrency"),
            ("p99_ms", "p99 latency (ms)", "p99 latency vs concurrency"),
        ):
            ax = next(ax_iter)
            for mode, label, style in modes:
                ax.plot(clients, [level[mode][key] for _, level in levels], style, label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(clients, [str(c) for c in clients])
            ax.set_xlabel("concurrent clients (closed loop, HTTP)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{title}\n{batching['model'].split(',')[0]}", fontsize=10)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    if search:
        ax = next(ax_iter)
        for protocol, found in search.items():
            steps = sorted(found["steps"], key=lambda st: st["offered_per_s"])
            ax.plot(
                [st["offered_per_s"] for st in steps],
                [st["p99_ms"] for st in steps],
                "o-",
                label=f"{'HTTP' if protocol == 'http' else 'gRPC'} (met up to {found['max_rate_per_s'] or 0:,.0f}/s)",
            )
        ax.axhline(100, color="grey", linestyle=":", label="target p99 < 100 ms")
        ax.set_yscale("log")
        ax.set_xlabel("offered rate (single-image requests/s, open loop)")
        ax.set_ylabel("p99 latency (ms, log scale)")
        model = report["champion_at_rate"]["model"]
        ax.set_title(
            f"The demo's champion ({model['name']} v{model['version']})\np99 vs offered rate", fontsize=10
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    cores = report.get("machine", report.get("champion_at_rate", {}).get("machine", {})).get("cores")
    fig.suptitle(f"slipway serve on {cores} CPU cores, load generator on the same cores", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


Only = Literal["core", "champion", "plot"]


@click.command()
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True
)
@click.option(
    "--only",
    type=click.Choice(["core", "champion", "plot"]),
    default=None,
    help="core: the three measurements on generated models; champion: the demo's champion at a rate; plot: "
    "serving.png from the existing serving.json [default: all three, then the plot]",
)
@click.option(
    "--seconds", type=click.FloatRange(0.2, 30), default=2.0, show_default=True, help="per core run"
)
@click.option(
    "--repeats", type=click.IntRange(1, 9), default=3, show_default=True, help="runs per measurement"
)
@click.option(
    "--threads", type=click.IntRange(1, 64), default=1, show_default=True, help="ORT intra-op threads (core)"
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench-serving"),
    show_default=True,
    help="champion: the `slipway run quickstart` output whose registry holds the champion",
)
@click.option("--reuse-run", is_flag=True, help="champion: reuse RUN_DIR's run when it has one, else make it")
@click.option(
    "--rate", type=click.FloatRange(1, 20000), default=1000.0, show_default=True, help="req/s offered"
)
@click.option(
    "--duration", type=click.FloatRange(0.5, 600), default=30.0, show_default=True, help="s per run at --rate"
)
@click.option("--search/--no-search", default=True, show_default=True, help="champion: find the highest rate")
@click.option("--search-low", type=click.FloatRange(1), default=500.0, show_default=True, help="req/s")
@click.option("--search-high", type=click.FloatRange(1), default=4000.0, show_default=True, help="req/s")
@click.option("--search-seconds", type=click.FloatRange(0.5, 120), default=10.0, show_default=True)
@click.option("--search-bisections", type=click.IntRange(0, 6), default=2, show_default=True)
@click.option(
    "--server-threads",
    type=click.IntRange(1, 64),
    default=None,
    help="champion: `slipway serve --threads` [default: its own default, ONNX Runtime decides]",
)
def main(
    output: Path,
    only: Only | None,
    seconds: float,
    repeats: int,
    threads: int,
    run_dir: Path,
    reuse_run: bool,
    rate: float,
    duration: float,
    search: bool,
    search_low: float,
    search_high: float,
    search_seconds: float,
    search_bisections: int,
    server_threads: int | None,
) -> None:
    """Measure `slipway serve` (against in-process ONNX Runtime, and serving the demo's champion at a rate);
    write OUTPUT/benchmarks/serving.json, OUTPUT/benchmarks/serving.png and the champion's section of
    OUTPUT/benchmarks.md."""
    import shlex
    import sys

    from benchmarks import serving_champion as champion
    from benchmarks.compression import write_section
    from slipway.core.logs import setup_logging

    if search_low > search_high:
        raise click.BadParameter(f"{search_low:g} > --search-high {search_high:g}", param_hint="--search-low")
    setup_logging("WARNING")
    os.environ.setdefault("SLIPWAY_LOG_LEVEL", "WARNING")  # the server subprocesses inherit it
    json_path, png_path = output / "benchmarks" / "serving.json", output / "benchmarks" / "serving.png"
    if only in (None, "core"):
        report = run_bench(output, seconds, repeats, threads)
        click.echo(markdown(report))
    if only in (None, "champion"):
        settings = champion.ChampionSettings(
            run_dir=run_dir,
            reuse_run=reuse_run,
            rate=rate,
            seconds=duration,
            repeats=repeats,
            search=search,
            search_low=search_low,
            search_high=search_high,
            search_seconds=search_seconds,
            search_bisections=search_bisections,
            server_threads=server_threads,
        )
        command = "python -m benchmarks.serving " + shlex.join(sys.argv[1:])
        try:
            result = champion.run_champion(settings, command)
        except champion.BenchError as err:
            raise click.ClickException(str(err)) from None
        write_report(output, {"champion_at_rate": result})
        section = champion.markdown(result)
        write_section(output / "benchmarks.md", section, champion.MARK_START, champion.MARK_END)
        click.echo(section)
    if not json_path.is_file():
        raise click.ClickException(f"{json_path} does not exist: run the bench before --only plot")
    plot(json.loads(json_path.read_text()), png_path)
    click.echo(f"\nwritten: {json_path}, {png_path}")


if __name__ == "__main__":
    main()
