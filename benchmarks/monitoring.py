"""Measure the monitor: ingest events/s over real HTTP, and drift time on a 10,000-row window.

`python -m benchmarks.monitoring --output docs` starts a monitor on 127.0.0.1 (free port, temporary data
dir), posts single-sample binary-mode CloudEvents from several concurrent keep-alive connections, reports the
median of 3 runs, times drift (features + Evidently + HTML) on 10,000 rows (median of 3), writes
`<output>/benchmarks/drift.json` and prints a Markdown table. Bounded: fixed event counts, timeouts, it stops
the server it started.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from slipway.serving.server import free_port

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SAMPLE_SHAPES = ((1, 1, 8, 8), (1, 1, 28, 28))  # digits-sized and MNIST-sized single-sample events


def start_monitor(
    data_dir: Path, port: int, extra: list[str] | None = None, timeout: float = 60.0
) -> subprocess.Popen:
    """Start `monitor serve` in a subprocess bound to 127.0.0.1 and wait until /healthz answers."""
    cmd = [
        sys.executable,
        "-m",
        "slipway",
        "monitor",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        *(extra or []),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"monitor exited with {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("monitor did not become healthy in time")


def stop_monitor(proc: subprocess.Popen) -> None:
    """Terminate a monitor started by `start_monitor` and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): cost per event independent of machine load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def binary_event(event_id: str, sample: np.ndarray, port: int) -> bytes:
    """One HTTP/1.1 request: a binary-mode payload-logger CloudEvent with a v2 inference request body."""
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "input", "shape": list(sample.shape), "datatype": "FP32", "data": sample.ravel()}
            ]
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    head = (
        f"POST /events HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nce-specversion: 1.0\r\nce-id: {event_id}\r\n"
        "ce-type: org.kubeflow.serving.inference.request\r\nce-source: http://bench/\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, requests: list[bytes], statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for req in requests:
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            statuses.append(status)
    finally:
        writer.close()


async def _ingest(port: int, batches: list[list[bytes]], timeout: float) -> tuple[float, list[int]]:
    statuses: list[int] = []
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(_client(port, b, statuses) for b in batches)), timeout)
    return time.perf_counter() - start, statuses


def bench_ingest(
    events: int = 6000, clients: int = 16, runs: int = 3, sample_shape: tuple[int, ...] = SAMPLE_SHAPES[0]
) -> dict[str, Any]:
    """Events/s over HTTP from `clients` concurrent connections; median of `runs`."""
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        port = free_port(HOST)
        proc = start_monitor(Path(tmp) / "data", port, ["--drift-every", "0"])
        try:
            for run in range(runs):
                sample = rng.random(sample_shape, dtype=np.float32)
                reqs = [binary_event(f"bench-{run}-{i}", sample, port) for i in range(events)]
                batches = [reqs[c::clients] for c in range(clients)]
                cpu_before = cpu_seconds(proc.pid)
                seconds, statuses = asyncio.run(_ingest(port, batches, timeout=120))
                cpu = cpu_seconds(proc.pid) - cpu_before
                ok = sum(s == 200 for s in statuses)
                results.append(
                    {
                        "seconds": seconds,
                        "events": events,
                        "ok": ok,
                        "events_per_s": ok / seconds,
                        "server_cpu_seconds": cpu,
                        "events_per_server_cpu_second": ok / cpu if cpu else None,
                    }
                )
                logger.info("ingest run", extra=results[-1])
        finally:
            stop_monitor(proc)
    return {
        "events_per_run": events,
        "clients": clients,
        "sample_shape": list(sample_shape),
        "runs": results,
        "median_events_per_s": statistics.median(float(r["events_per_s"] or 0.0) for r in results),
        "median_events_per_server_cpu_second": statistics.median(
            float(r["events_per_server_cpu_second"] or 0.0) for r in results
        ),
        "all_acknowledged": all(r["ok"] == r["events"] for r in results),
    }


def bench_drift(rows: int = 10_000, reference_rows: int = 5000, runs: int = 3) -> dict[str, Any]:
    """Seconds for features + Evidently + HTML/JSON on a `rows` window of 3x32x32 images; median of `runs`."""
    from slipway.monitoring.drift import build_features, compute_drift

    rng = np.random.default_rng(1)
    shape = (3, 32, 32)
    ref_x = rng.random((reference_rows, *shape), dtype=np.float32)
    ref_p = rng.dirichlet(np.ones(10), reference_rows).astype(np.float32)
    reference = build_features(ref_x, ref_p, rng.integers(0, 10, reference_rows))
    times = []
    with tempfile.TemporaryDirectory(prefix="slipway-bench-") as tmp:
        for _ in range(runs):
            cur_x = rng.random((rows, *shape), dtype=np.float32) * 1.2
            cur_p = rng.dirichlet(np.ones(10), rows).astype(np.float32)
            start = time.perf_counter()
            result = compute_drift(reference, build_features(cur_x, cur_p), output_dir=Path(tmp))
            times.append(time.perf_counter() - start)
    return {
        "rows": rows,
        "reference_rows": reference_rows,
        "sample_shape": list(shape),
        "columns": len(result.columns),
        "runs_seconds": times,
        "median_seconds": statistics.median(times),
        "drift_detected": result.drift_detected,
    }


def markdown(results: dict[str, Any]) -> str:
    dr = results["drift"]
    return "\n".join(
        [
            "| measurement | median of 3 | target |",
            "| --- | --- | --- |",
            *(
                f"| ingest, single-sample CloudEvents {ing['sample_shape']} over HTTP, {ing['clients']} clients "
                f"| {ing['median_events_per_s']:.0f} events/s "
                f"({ing['median_events_per_server_cpu_second']:.0f} per server CPU-second) | >= 2000 events/s |"
                for ing in results["ingest"]
            ),
            f"| drift on {dr['rows']} rows x {dr['columns']} columns (features + Evidently + HTML) "
            f"| {dr['median_seconds']:.2f} s | < 10 s |",
        ]
    )


@click.command()
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True
)
@click.option("--events", default=6000, show_default=True, type=click.IntRange(100, 100_000))
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 256))
def main(output: Path, events: int, clients: int) -> None:
    """Run the monitor benchmarks and write <output>/benchmarks/drift.json."""
    logging.basicConfig(level=logging.WARNING)
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": "python -m benchmarks.monitoring --output " + str(output),
        "load_average_at_start": os.getloadavg(),
        "ingest": [bench_ingest(events, clients, sample_shape=shape) for shape in SAMPLE_SHAPES],
        "drift": bench_drift(),
    }
    path = output / "benchmarks" / "drift.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(markdown(results))
    click.echo(f"\nwritten {path}")


if __name__ == "__main__":
    main()
