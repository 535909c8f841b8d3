"""Run a docs shell block as a reader would, line by line in a shell, with its servers handled.

A reader runs a server line (`slipway serve`, `slipway monitor serve`, `mlflow ui`) in a terminal of its own and
the next lines in another; a line ending in `&` stays up in the background. So here every server line starts
in the background, bound to a loopback address, and the block goes on once the server answers its readiness
URL. A server written without `&` is stopped (SIGINT, Ctrl-C) when the next such line starts, since the reader
would have stopped it to free the terminal and the ports; every server is stopped when the block ends.

`curl` exits 0 on an error answer; the runner adds `--fail-with-body` so that a 4xx or 5xx fails the block.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from doc_blocks import DocBlock, parse_slipway, program, words

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 300
BACKGROUND = re.compile(r"\s&\s*(#.*)?$")


@dataclass(frozen=True)
class ServerSpec:
    """What a server line binds and how to know it is ready."""

    kind: str
    host: str
    ports: tuple[int, ...]
    ready_url: str


@dataclass
class Server:
    spec: ServerSpec
    command: str
    process: subprocess.Popen[bytes]
    log: Path
    background: bool


@dataclass
class BlockRun:
    """One block's run: the commands that ran, the servers it started, and a log per server."""

    block: DocBlock
    cwd: Path
    env: dict[str, str]
    logs: Path
    # before a command that starts with a key, call the hook (e.g. traffic a reader's clients would send)
    hooks: dict[str, Callable[[BlockRun], None]] = field(default_factory=dict)
    servers: list[Server] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)

    def run(self) -> None:
        try:
            for command in self.block.commands():
                spec = server_spec(command)
                if spec is not None:
                    self.start(command, spec)
                    continue
                for prefix, hook in self.hooks.items():
                    if command.startswith(prefix):
                        hook(self)
                self.shell(command)
        finally:
            for server in reversed(self.servers):
                stop(server)

    def shell(self, command: str) -> None:
        line = re.sub(r"^curl\s", "curl --fail-with-body --silent --show-error ", command)
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        self.ran.append(command)
        assert done.returncode == 0, (
            f"{self.block.where}: `{command}` exited {done.returncode}\n"
            f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-5000:]}\n{self.server_logs()}"
        )

    def start(self, command: str, spec: ServerSpec) -> None:
        background = bool(BACKGROUND.search(command))
        if not background:
            for server in [s for s in self.servers if not s.background]:
                stop(server)
                self.servers.remove(server)
        assert ipaddress.ip_address(spec.host).is_loopback, (
            f"{self.block.where}: `{command}` binds {spec.host}; the docs test runs only loopback servers"
        )
        for port in spec.ports:
            wait_free(spec.host, port)
        log = self.logs / f"server-{len(self.ran)}-{spec.kind}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", "exec " + BACKGROUND.sub("", command)],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole, as Ctrl-C would
            )
        server = Server(spec, command, process, log, background)
        self.servers.append(server)
        self.ran.append(command)
        wait_ready(server, self.block)

    def server_logs(self) -> str:
        return "\n".join(
            f"--- {s.command}\n{s.log.read_text(errors='replace')[-3000:]}" for s in self.servers
        )

    def server(self, kind: str) -> ServerSpec:
        """The spec of the running server of that kind (`serve`, `monitor`, `mlflow`)."""
        found = [s.spec for s in self.servers if s.spec.kind == kind and s.process.poll() is None]
        assert found, f"{self.block.where}: no {kind} server is running"
        return found[-1]


def server_spec(command: str) -> ServerSpec | None:
    """The server this line starts, if it starts one, with the addresses its options give."""
    for argv in words(command):
        name, args = program(argv)
        if name == "slipway":
            ctx = parse_slipway(args)
            params = ctx.params
            if ctx.command_path == "slipway serve":
                ports = [params["http_port"], params["grpc_port"]]
                if params["allow_metrics"]:
                    ports.append(params["metrics_port"])
                host = params["host"]
                return ServerSpec("serve", host, tuple(ports), f"http://{host}:{ports[0]}/v2/health/ready")
            if ctx.command_path == "slipway monitor serve":
                host, port = params["host"], params["port"]
                return ServerSpec("monitor", host, (port,), f"http://{host}:{port}/healthz")
        if name == "mlflow" and args[:1] == ["ui"]:
            host, port = _option(args, "--host", "127.0.0.1"), int(_option(args, "--port", "5000"))
            return ServerSpec("mlflow", host, (port,), f"http://{host}:{port}/health")
    return None


def _option(args: list[str], name: str, default: str) -> str:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def wait_free(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Wait for a port the block is about to bind (one just released may linger a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            # as the servers do: a connection in TIME_WAIT does not own the port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise PortBusy(f"{host}:{port} is in use by another process") from None
        time.sleep(0.25)


class PortBusy(RuntimeError):
    """A port the docs name is taken by something else on this machine."""


def wait_ready(server: Server, block: DocBlock) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"{block.where}: `{server.command}` exited {server.process.returncode} before it was ready:\n"
                f"{server.log.read_text(errors='replace')[-5000:]}"
            )
        try:
            with urllib.request.urlopen(server.spec.ready_url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"{block.where}: `{server.command}` was not ready at {server.spec.ready_url}")


def stop(server: Server) -> None:
    """Ctrl-C for the server's process group, then SIGKILL if it does not exit in time."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGINT)
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(STOP_TIMEOUT_S)


def send_captured_traffic(run: BlockRun, reference: Path, rows: int = 200) -> None:
    """What the monitor would have captured from a served model: `rows` requests of one sample each with the
    model's answer, posted to the running monitor's `/v1/batches` (the reference's own rows and logits)."""
    monitor = run.server("monitor")
    data = np.load(reference)
    x, probs = data["x"][:rows].astype(np.float32), data["probs"][:rows].astype(np.float32)
    logits = np.log(np.clip(probs, 1e-7, 1.0))
    body = [
        {
            "id": f"docs-{i}",
            "model_name": "slipway-quickstart",
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, *x.shape[1:]],
                    "datatype": "FP32",
                    "data": x[i].ravel().tolist(),
                }
            ],
            "outputs": [
                {
                    "name": "logits",
                    "shape": [1, logits.shape[1]],
                    "datatype": "FP32",
                    "data": logits[i].tolist(),
                }
            ],
        }
        for i in range(len(x))
    ]
    request = urllib.request.Request(
        f"http://{monitor.host}:{monitor.ports[0]}/v1/batches",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200, answer.read()
