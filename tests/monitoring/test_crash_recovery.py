"""SIGKILL the monitor mid-ingest: every acknowledged event survives exactly once, and it serves again."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from benchmarks import monitoring as bench
from slipway.monitoring.events import decode_payload
from slipway.monitoring.store import iter_records_newest_first

from .conftest import binary_headers, start, triton_request, v2_request


def test_sigkill_mid_ingest_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running = start(data_dir, extra=["--drift-every", "0"])
    acked: set[str] = set()
    lock = threading.Lock()
    killed = threading.Event()
    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    sample = json.dumps(v2_request(x))
    binary_sample, _ = triton_request(x)  # odd workers send Triton's binary tensor extension

    def sender(worker: int) -> None:
        body = binary_sample if worker % 2 else sample
        with httpx.Client(base_url=running.url, timeout=10) as c:
            for i in range(400):
                event_id = f"w{worker}-{i}"
                headers = binary_headers(event_id)
                if worker % 2:
                    headers["content-type"] = "application/octet-stream"
                try:
                    r = c.post("/events", content=body, headers=headers)
                except httpx.HTTPError:
                    return  # the server died: this event was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.add(event_id)
                        if len(acked) >= 300 and not killed.is_set():
                            killed.set()
                            os.kill(running.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    running.proc.wait(timeout=10)  # type: ignore[attr-defined]
    bench.stop_monitor(running.proc)  # type: ignore[arg-type]
    assert killed.is_set() and running.proc.returncode == -signal.SIGKILL  # type: ignore[attr-defined]

    restarted = start(data_dir, extra=["--drift-every", "0"])
    try:
        keys = Counter(r.key for r in iter_records_newest_first(data_dir))
        assert all(n == 1 for n in keys.values()), "a record was stored twice"
        missing = {f"request:{i}" for i in acked} - set(keys)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        binary_ids = sorted(i for i in acked if int(i[1:].split("-")[0]) % 2)
        assert binary_ids, "no binary-extension event was acknowledged before the kill"
        record = next(r for r in iter_records_newest_first(data_dir) if r.key == f"request:{binary_ids[-1]}")
        _, stored = decode_payload(record.payload)
        assert stored is not None
        np.testing.assert_array_equal(np.asarray(stored["inputs"][0]["data"], np.float32).reshape(x.shape), x)
        with httpx.Client(base_url=restarted.url, timeout=10) as c:
            assert c.get("/healthz").json()["status"] == "ok"
            some = sorted(acked)[0]  # a retry of an event stored before the crash is deduplicated
            assert c.post("/events", content=sample, headers=binary_headers(some)).json()["duplicates"] == 1
            assert c.post("/events", content=sample, headers=binary_headers("after")).json()["stored"] == 1
    finally:
        bench.stop_monitor(restarted.proc)  # type: ignore[arg-type]
