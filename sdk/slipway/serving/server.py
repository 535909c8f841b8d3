"""Run HTTP (uvicorn) and gRPC (grpc.aio) on one event loop over one InferenceCore; stop them gracefully.

`run_server` blocks (the CLI); `start_server` returns a handle running the server in a background thread or a
subprocess, for tests, benchmarks and the local deploy step (start, smoke-test, stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from slipway.core.errors import SlipwayError
from slipway.serving.experiment import resume_experiments
from slipway.serving.grpc_app import build_grpc_server
from slipway.serving.http_app import build_app
from slipway.serving.loader import SessionOptions, load_repository, startup_models
from slipway.serving.repository_poll import scan_repository
from slipway.serving.restricted import GRPC_RESTRICTED_ENV, HTTP_RESTRICTED_ENV
from slipway.serving.service import InferenceCore, ServerOptions
from slipway.serving.stats import TritonMetrics

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Slipway server owns shutdown for both protocols."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class _Bound:
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int | None = None


async def _start_metrics(
    service: InferenceCore, host: str, port: int
) -> tuple[_Uvicorn, asyncio.Task[None], int]:
    """Triton's metrics port: `GET /metrics` answers nv_inference_* (then the slipway_* series) on the loop.

    The socket is bound here, so a taken port is an error naming it (uvicorn would exit the process)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise SlipwayError(
            f"metrics port {host}:{port}: cannot listen ({err.strerror}); choose another --metrics-port, or "
            "--allow-metrics false"
        ) from None
    metrics = TritonMetrics(service.served_stats, service.metrics.registry)
    config = uvicorn.Config(
        metrics.app(), http="httptools", loop="none", lifespan="off", access_log=False, log_level="warning"
    )
    server = _Uvicorn(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise SlipwayError(f"metrics server on {host}:{port} stopped during startup")
        await asyncio.sleep(0.01)
    return server, task, int(sock.getsockname()[1])


async def serve_async(
    service: InferenceCore,
    host: str,
    http_port: int,
    grpc_port: int,
    stop: asyncio.Event,
    bound: _Bound | None = None,
    on_ready: threading.Event | None = None,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """Serve until `stop` is set, then: not ready -> stop accepting -> drain queues -> close.

    `metrics_port` (None: off) opens Triton's metrics port on `metrics_host` (default: `host`), as
    `tritonserver --metrics-port/--metrics-address` do; 0 picks a free port.
    """
    await service.start()
    grpc_server, grpc_health = await build_grpc_server(service, service.options.max_body_bytes)
    actual_grpc = grpc_server.add_insecure_port(f"{host}:{grpc_port}")
    await grpc_server.start()
    config = uvicorn.Config(
        build_app(service),
        host=host,
        port=http_port,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(service.options.shutdown_grace_s) or 1,
        limit_concurrency=None,
        backlog=2048,
    )
    http_server = _Uvicorn(config)
    http_task = asyncio.create_task(http_server.serve())
    metrics_server: _Uvicorn | None = None
    metrics_tasks: list[asyncio.Task[None]] = []
    try:
        while not http_server.started:
            if http_task.done():
                http_task.result()  # raises the bind error
                raise SlipwayError(f"HTTP server on {host}:{http_port} stopped during startup")
            await asyncio.sleep(0.01)
        actual_http = http_server.servers[0].sockets[0].getsockname()[1]
        actual_metrics = None
        if metrics_port is not None:
            metrics_server, metrics_task, actual_metrics = await _start_metrics(
                service, metrics_host or host, metrics_port
            )
            metrics_tasks.append(metrics_task)
            log.info("metrics on %s:%d/metrics", metrics_host or host, actual_metrics)
        if bound is not None:
            bound.http_port, bound.grpc_port, bound.metrics_port = actual_http, actual_grpc, actual_metrics
        log.info(
            "serving models=%s model_control=%s http=%s:%d grpc=%s:%d",
            sorted(service.models),
            service.model_control_mode,
            host,
            actual_http,
            host,
            actual_grpc,
        )
        for flag, restricted in (
            ("--http-restricted-api", service.options.http_restricted),
            ("--grpc-restricted-protocol", service.options.grpc_restricted),
        ):
            if restricted:  # group and header names only: a value never reaches a log
                log.info("restricted %s: %s", flag, restricted.summary())
        if on_ready is not None:
            on_ready.set()
        await stop.wait()
    finally:
        log.info("shutting down: draining queues (grace %.1f s)", service.options.shutdown_grace_s)
        service.ready = False
        await grpc_health.enter_graceful_shutdown()
        http_server.should_exit = True
        if metrics_server is not None:
            metrics_server.should_exit = True
        await asyncio.gather(
            http_task,
            *metrics_tasks,
            grpc_server.stop(service.options.shutdown_grace_s),
            service.stop(),
            return_exceptions=True,
        )
        log.info("server stopped")


def build_service(
    repo: str | Path,
    threads: int | None,
    options: ServerOptions,
    model_control_mode: str = "none",
    load_models: Sequence[str] = (),
) -> InferenceCore:
    """Load and verify the startup models before any port opens: a refused model means no server.

    Mode none loads every model; explicit loads only `load_models` (`*` for all) and serves load/unload; poll
    loads every model and then follows the repository (its scan is taken first, so that a change made while the
    models load is applied by the first poll). A model with an `experiment.json` (an A/B experiment running
    when the server stopped) resumes its split: both versions load, and a file that no longer parses or names a
    missing version refuses the start, naming it.
    """
    session_options = SessionOptions(
        intra_op_threads=threads, require_digest=options.require_digest, allow_spinning=options.ort_spinning
    )
    snapshot = scan_repository(repo) if model_control_mode == "poll" else None
    names = startup_models(repo, model_control_mode, load_models)
    experiments = resume_experiments(repo, names, session_options)
    return InferenceCore(
        load_repository(repo, session_options, [name for name in names if name not in experiments]),
        options,
        repository=repo,
        session_options=session_options,
        model_control_mode=model_control_mode,
        experiments=experiments,
        repository_snapshot=snapshot,
    )


def run_server(
    repo: str | Path,
    host: str = DEFAULT_HOST,
    http_port: int = 8000,
    grpc_port: int = 8001,
    threads: int | None = None,
    options: ServerOptions | None = None,
    model_control_mode: str = "none",
    load_models: Sequence[str] = (),
    metrics_port: int | None = 8002,
    metrics_host: str | None = None,
) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (the `slipway serve` command); `metrics_port` None: no
    metrics port (Triton's `--allow-metrics false`)."""
    service = build_service(repo, threads, options or ServerOptions(), model_control_mode, load_models)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_async(
            service, host, http_port, grpc_port, stop, metrics_port=metrics_port, metrics_host=metrics_host
        )

    asyncio.run(main())


class ServerHandle:
    """A running server: `.url` (http://host:port), `.grpc_url` (host:port), `.metrics_url`, `.stop()`; a
    context manager."""

    def __init__(self, host: str, http_port: int, grpc_port: int) -> None:
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_host = host
        self.metrics_port: int | None = None  # None: no metrics port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """Triton's metrics endpoint, http://host:port/metrics (nv_inference_*, then slipway_*); None when off."""
        return (
            None if self.metrics_port is None else f"http://{self.metrics_host}:{self.metrics_port}/metrics"
        )

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _ThreadServer(ServerHandle):
    def __init__(
        self,
        service: InferenceCore,
        host: str,
        http_port: int,
        grpc_port: int,
        timeout_s: float,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
    ):
        super().__init__(host, http_port, grpc_port)
        self.metrics_host = metrics_host or host
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        bound = _Bound()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._stop = asyncio.Event()
                self._loop.run_until_complete(
                    serve_async(
                        service,
                        host,
                        http_port,
                        grpc_port,
                        self._stop,
                        bound,
                        self._ready,
                        metrics_port=metrics_port,
                        metrics_host=metrics_host,
                    )
                )
            except BaseException as err:
                self._error = err
                self._ready.set()
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="slipway-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise SlipwayError(f"server did not start within {timeout_s:g} s: {self._error!r}")
        self.http_port, self.grpc_port, self.metrics_port = (
            bound.http_port,
            bound.grpc_port,
            bound.metrics_port,
        )

    def stop(self) -> None:
        if self._thread.is_alive() and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port free right now (for a subprocess that must be told its ports up front)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _ProcessServer(ServerHandle):
    def __init__(
        self,
        argv: list[str],
        host: str,
        http_port: int,
        grpc_port: int,
        timeout_s: float,
        options: ServerOptions,
    ) -> None:
        super().__init__(host, http_port, grpc_port)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Restricted groups travel in the environment (values stay out of the process list), and an inherited
        # setting never applies unless `options` holds it.
        for name, restricted in (
            (HTTP_RESTRICTED_ENV, options.http_restricted),
            (GRPC_RESTRICTED_ENV, options.grpc_restricted),
        ):
            env.pop(name, None)
            if restricted:
                env[name] = " ".join(restricted.flag_values())
        ready_headers = options.http_restricted.headers("health")
        self._proc = subprocess.Popen(argv, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SlipwayError(f"server process exited with code {self._proc.returncode} during startup")
            try:
                if (
                    httpx.get(f"{self.url}/v2/health/ready", headers=ready_headers, timeout=1.0).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SlipwayError(f"server process not ready within {timeout_s:g} s")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def start_server(
    repo: str | Path,
    host: str = DEFAULT_HOST,
    http_port: int = 0,
    grpc_port: int = 0,
    *,
    threads: int | None = None,
    options: ServerOptions | None = None,
    subprocess_mode: bool = False,
    startup_timeout_s: float = 60.0,
    model_control_mode: str = "none",
    load_models: Sequence[str] = (),
    metrics_port: int | None = 0,
    metrics_host: str | None = None,
) -> ServerHandle:
    """Start a server and return once it is ready; port 0 picks a free port. Stop it with `.stop()` or `with`.

    In a thread (default) it shares the caller's process; `subprocess_mode=True` gives it its own interpreter
    (no GIL sharing with a load generator, and a crash cannot take the caller down). `model_control_mode` and
    `load_models` are `slipway serve --model-control-mode/--load-model` (Triton's options; mode poll rescans
    every `options.repository_poll_secs`, `--repository-poll-secs`); `metrics_port` and
    `metrics_host` are `--metrics-port/--metrics-address` (None: `--allow-metrics false`; see `.metrics_url`).
    """
    options = options or ServerOptions()
    if not subprocess_mode:
        service = build_service(repo, threads, options, model_control_mode, load_models)
        return _ThreadServer(
            service, host, http_port, grpc_port, startup_timeout_s, metrics_port, metrics_host
        )
    http_port = http_port or free_port(host)
    grpc_port = grpc_port or free_port(host)
    if metrics_port is not None:
        metrics_port = metrics_port or free_port(metrics_host or host)
    argv = [
        sys.executable,
        "-m",
        "slipway",
        "serve",
        str(repo),
        "--host",
        host,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--max-queue",
        str(options.max_queue),
        "--timeout-s",
        str(options.timeout_s),
        "--max-body-bytes",
        str(options.max_body_bytes),
    ]
    if options.logger_url:
        argv += ["--logger-url", options.logger_url]
    if options.require_digest:
        argv.append("--require-digest")
    if threads:
        argv += ["--threads", str(threads)]
    if options.ort_spinning:
        argv.append("--ort-spinning")
    argv += ["--model-control-mode", model_control_mode]
    if model_control_mode == "poll":
        argv += ["--repository-poll-secs", str(options.repository_poll_secs)]
    for name in load_models:
        argv += ["--load-model", name]
    if metrics_port is None:
        argv += ["--allow-metrics", "false"]
    else:
        argv += ["--metrics-port", str(metrics_port), "--metrics-address", metrics_host or host]
    handle = _ProcessServer(argv, host, http_port, grpc_port, startup_timeout_s, options)
    handle.metrics_host, handle.metrics_port = metrics_host or host, metrics_port
    return handle
