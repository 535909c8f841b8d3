"""Data-parallel training plumbing: process groups from torchrun's environment, and a local torchrun launcher.

The training loop asks this module who it is (rank, world size, device) and never parses the environment
itself, so the same loop runs as one plain process, under `torchrun` on a laptop (gloo, CPU), or in a
Kubeflow TrainJob / PyTorchJob pod (nccl, one GPU per process).

`launch` runs `torchrun --standalone --nproc-per-node N -m slipway.training.worker REQUEST`: every rank
calls the same `module:function` with the same keyword arguments, and rank 0's JSON-serialisable return
value comes back to the caller through a result file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from slipway.core.errors import TrainingError

log = logging.getLogger(__name__)
DevicePreference = Literal["auto", "cpu", "cuda"]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
REQUEST_VERSION = 1


@dataclass(frozen=True)
class DistEnv:
    """Who this process is in the job; a single process is rank 0 of a world of 1."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None: no process group (a single plain process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def resolve_device(preference: DevicePreference = "auto", local_rank: int = 0) -> torch.device:
    """The device this process trains on: `cuda:<local_rank>` when asked for (or auto and present), else CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (or a Kubeflow runtime that sets the same variables)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def current(preference: DevicePreference = "auto") -> DistEnv:
    """Describe this process: from the initialised default process group, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistEnv(
            rank=dist.get_rank(),
            local_rank=local_rank,
            world_size=dist.get_world_size(),
            device=resolve_device(preference, local_rank),
            backend=str(dist.get_backend()),
        )
    return DistEnv(0, 0, 1, resolve_device(preference, 0), None)


def init_process_group(preference: DevicePreference = "auto", timeout_s: float = 600.0) -> DistEnv:
    """Join the job torchrun started: nccl with one GPU per local rank, gloo on CPU. Idempotent."""
    if not launched_by_torchrun():
        missing = [name for name in TORCHRUN_ENV if name not in os.environ]
        raise TrainingError(f"not started by torchrun: environment lacks {missing}; launch with `torchrun`")
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(preference, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        from datetime import timedelta

        dist.init_process_group(
            backend=backend,
            timeout=timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
        log.debug("rank %d/%d joined (%s on %s)", dist.get_rank(), dist.get_world_size(), backend, device)
    return current(preference)


def destroy_process_group() -> None:
    """Leave the job (safe to call when no group exists)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(preference: DevicePreference = "auto") -> Iterator[DistEnv]:
    """`with process_group() as env:` joins torchrun's job and always tears the group down."""
    env = init_process_group(preference)
    try:
        yield env
    finally:
        destroy_process_group()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's `obj` on every rank (pickled); the identity in a world of one."""
    if not env.distributed or env.world_size == 1:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0, device=env.device if env.device.type == "cuda" else None)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.distributed and env.world_size > 1:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.device.index or 0])
        else:
            dist.barrier()


def torchrun_command(nproc: int, module: str, args: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGS` (the venv's torchrun)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--local-addr",
        "127.0.0.1",
        "--max-restarts",
        "0",
        "-m",
        module,
        *args,
    ]


def launch(
    target: str,
    kwargs: dict[str, Any],
    nproc: int,
    *,
    threads_per_process: int | None = None,
    timeout_s: float | None = None,
    workdir: str | Path | None = None,
) -> Any:
    """Run `target` ("pkg.module:function") on `nproc` local processes under torchrun; rank 0's result.

    Every rank calls `function(**kwargs)` inside an initialised process group; kwargs and the return value
    travel as JSON. Raises TrainingError (with the tail of the workers' output) when any rank fails.
    """
    if nproc < 1:
        raise TrainingError(f"launch needs at least one process, got {nproc}")
    with tempfile.TemporaryDirectory(prefix="slipway-ddp-", dir=workdir) as tmp:
        request = Path(tmp) / "request.json"
        result = Path(tmp) / "result.json"
        request.write_text(
            json.dumps(
                {"version": REQUEST_VERSION, "target": target, "kwargs": kwargs, "result": str(result)}
            )
        )
        env = os.environ.copy()
        # Loopback only: a laptop's rendezvous never leaves the machine, whatever the hostname resolves to.
        env.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
        threads = threads_per_process or max(1, (os.cpu_count() or 1) // nproc)
        env["OMP_NUM_THREADS"] = str(threads)
        env["SLIPWAY_THREADS_PER_PROCESS"] = str(threads)
        env.setdefault("PYTHONUNBUFFERED", "1")
        command = torchrun_command(nproc, "slipway.training.worker", [str(request)])
        log.info("launching %d training processes: %s", nproc, " ".join(command[1:]))
        returncode, output, timed_out = _run_streaming(command, env, timeout_s)
        if timed_out:
            raise TrainingError(f"distributed training ({nproc} processes) timed out after {timeout_s}s")
        payload = json.loads(result.read_text()) if result.is_file() else {}
    if "error" in payload:  # a SlipwayError on rank 0: its message says what to do
        raise TrainingError(payload["error"])
    if returncode != 0 or "result" not in payload:
        raise TrainingError(
            f"distributed training with {nproc} processes failed (torchrun exit {returncode}); "
            f"last output:\n{output}"
        )
    return payload["result"]


def _run_streaming(command: list[str], env: dict[str, str], timeout_s: float | None) -> tuple[int, str, bool]:
    """Run torchrun, relaying its output (rank 0's logs and progress) live to stderr; keep the tail for errors."""
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    ) as proc:
        fired = threading.Event()

        def kill() -> None:
            # SIGTERM lets the torchrun agent stop its workers (each runs in a session of its own);
            # whatever is left after a grace period is killed with the agent's session.
            fired.set()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer is not None:
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
            returncode = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
    return returncode, "\n".join(tail), fired.is_set()


def _loopback_interface() -> str:
    """Name of the loopback interface (lo on Linux, lo0 on macOS)."""
    return "lo0" if sys.platform == "darwin" else "lo"
