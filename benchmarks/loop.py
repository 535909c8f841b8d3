"""The drift loop on loopback, driven as a user would, and timed: `python -m benchmarks.loop --output docs`.

`run_loop` takes a project folder (a model module, `my-config.yaml`, `data/my_data.npz`: the README's example),
trains and packages it (`slipway run quickstart`), serves it (`slipway serve` in explicit model-control mode,
payload logger on) next to `slipway monitor serve`, sends a window from the training distribution and a shifted
one with tritonclient (binary HTTP, JSON HTTP, gRPC) and labels as feedback, and runs `slipway run drift` after
each; the second alarms, retrains, gates and loads the new version while a client keeps sending. It returns what
happened; `tests/journeys/test_drift_loop.py` asserts on it, `main` times it (from the alarm to the first answer
of the new version) and writes `<output>/benchmarks/loop.json`. Everything binds to 127.0.0.1, and every wait
and every traffic loop is bounded.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from slipway.serving.server import free_port

MODEL, WINDOW = "my-model", 300
LENGTH, CLASSES = 32, 4
README = Path(__file__).resolve().parents[1] / "README.md"
TIMEOUT_S = 1200  # one pipeline run on 2 busy cores takes a few minutes; a hang must not stall anyone


def readme_block(first_line: str) -> str:
    """The README's fenced code block that starts with `first_line` (the example, verbatim)."""
    for block in re.findall(r"```\w*\n(.*?)```", README.read_text(), flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"README.md has no code block starting with {first_line!r}")


def signal_data(
    path: Path,
    *,
    n: int,
    n_test: int,
    length: int = LENGTH,
    classes: int = CLASSES,
    noise: float = 0.2,
    label_noise: float = 0.0,
    seed: int = 7,
) -> None:
    """(N, 1, L) signals: class k is a bump at a position of its own, under Gaussian noise; some labels
    flipped at random. Test rows are drawn the same way and stored as x_test/y_test."""
    rng = np.random.default_rng(seed)
    centres = np.linspace(length * 0.15, length * 0.85, classes)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, count)
        t = np.arange(length)
        bumps = np.exp(-0.5 * ((t[None, :] - centres[y][:, None]) / 2.0) ** 2)
        x = (bumps + rng.normal(0, noise, (count, length)))[:, None, :].astype(np.float32)
        flip = rng.random(count) < label_noise
        y = np.where(flip, rng.integers(0, classes, count), y)
        return x, y.astype(np.int64)

    x, y = draw(n)
    x_test, y_test = draw(n_test)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)


def shifted(x: np.ndarray) -> np.ndarray:
    """The new sensor sees each bump 4 samples later: half way to the next class's position, so the first
    version confuses neighbouring classes, and a model that has seen some labelled rows can tell them apart."""
    return np.roll(x, 4, axis=-1).astype(np.float32)


def draw(project: Path, name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh rows from the training distribution (another seed: never trained on)."""
    path = project / "data" / f"{name}.npz"
    signal_data(path, n=n, n_test=3, seed=seed)
    with np.load(path) as data:
        return data["x"], data["y"]


def start_process(
    command: list[str], cwd: Path, env: dict[str, str], ready_url: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{command[:3]} exited with {proc.returncode}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{ready_url} not ready within 60 s")


class Clients:
    """tritonclient over HTTP and gRPC; each call sends one chunk with an id and says which version answered.

    tritonclient's HTTP client belongs to the thread that made it (gevent): one Clients per thread."""

    def __init__(self, http_port: int, grpc_port: int) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.mods = httpclient, grpcclient
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def infer(self, x: np.ndarray, request_id: str, how: str) -> tuple[np.ndarray, str]:
        httpclient, grpcclient = self.mods
        if how == "grpc":
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = self.grpc.infer(MODEL, [tensor], request_id=request_id)
            return result.as_numpy(result.get_response().outputs[0].name), result.get_response().model_version
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=how == "binary")
        result = self.http.infer(MODEL, [tensor], request_id=request_id)
        response = result.get_response()
        return result.as_numpy(response["outputs"][0]["name"]), response["model_version"]

    def predict(self, x: np.ndarray, tag: str) -> tuple[np.ndarray, list[str], list[str]]:
        """Chunks of 10 rows, cycling binary HTTP, JSON HTTP and gRPC: predictions, ids, versions."""
        preds, ids, versions = [], [], []
        for i in range(0, len(x), 10):
            request_id = f"{tag}-{i}"
            out, version = self.infer(x[i : i + 10], request_id, ("binary", "json", "grpc")[i // 10 % 3])
            preds.append(out.argmax(axis=1))
            ids.append(request_id)
            versions.append(version)
        return np.concatenate(preds), ids, versions


def send_labels(monitor: str, ids: list[str], y: np.ndarray) -> None:
    feedback = [{"id": rid, "labels": y[i * 10 : i * 10 + 10].tolist()} for i, rid in enumerate(ids)]
    response = httpx.post(f"{monitor}/v1/feedback", json=feedback, timeout=30)
    response.raise_for_status()


def captured(monitor: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = httpx.get(
        f"{monitor}/v1/events", params={"limit": 10000}, timeout=30
    ).json()["events"]
    return events


def wait_captured(monitor: str, ids: set[str]) -> None:
    """The logger posts after each response: wait until every id's request and response are in."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kinds = {(e["id"], e["kind"]) for e in captured(monitor)}
        if all((i, k) in kinds for i in ids for k in ("request", "response")):
            return
        time.sleep(0.5)
    raise RuntimeError("the payload logger did not deliver every event within 60 s")


class LiveTraffic(threading.Thread):
    """One row every 0.1 s until stopped (at most 3,000, at most TIMEOUT_S): outcomes, versions, times."""

    def __init__(self, http_port: int, grpc_port: int, x: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.ports, self.x = (http_port, grpc_port), x
        self.stop = threading.Event()
        self.versions: list[str] = []
        self.answered_at: list[float] = []
        self.ids: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        clients = Clients(*self.ports)
        deadline = time.monotonic() + TIMEOUT_S
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline and n < 3000:
            request_id = f"live-{n}"
            try:
                _, version = clients.infer(self.x[n % len(self.x)][None], request_id, "binary")
                self.answered_at.append(time.time())
                self.versions.append(version)
                self.ids.append(request_id)
            except Exception as err:  # every failure counts, whatever its kind
                self.failures.append(f"{request_id}: {err}")
            n += 1
            time.sleep(0.1)


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-8000:], sep="\n")
        raise RuntimeError(f"`{command}` exited with {done.returncode} (its output is above)")
    return done


def drift_run(slipway: Path, project: Path, env: dict[str, str], output: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(slipway), "run", "drift", "--config", "drift.yaml", "--output", output],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    if proc.returncode != 0:
        print(out[-12000:])
        raise RuntimeError(f"slipway run drift exited with {proc.returncode} (its output is above)")
    return out


@dataclass
class LoopRun:
    """What the loop did: the drift runs' summaries, predictions before and after, the traffic, the events."""

    project: Path
    null: dict[str, Any]
    shift: dict[str, Any]
    window: tuple[np.ndarray, np.ndarray, list[str]]  # v1's predictions, labels, answering versions
    eval: tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]  # v1's and v2's predictions, labels, versions
    live: LiveTraffic
    metadata: dict[str, Any]
    events: list[dict[str, Any]]
    sent_ids: list[str]
    alarm_at: float = 0.0  # when detect-drift of the shifted window finished (epoch seconds)
    timings: dict[str, float] = field(default_factory=dict)


def run_loop(project: Path, slipway: Path, env: dict[str, str], quick: list[str]) -> LoopRun:
    """The whole loop in `project` (see the module docstring); `quick` are `--set`s for the training runs."""
    store = f"sqlite:///{project / 'mlflow.db'}"
    sets = " ".join(f"--set {o}" for o in (*quick, f"registry.tracking_uri={store}"))
    started = time.perf_counter()
    shell(
        f"PYTHONPATH=$PWD {slipway} run quickstart --config my-config.yaml --output runs/first {sets}",
        project,
        env,
    )
    first_s = time.perf_counter() - started
    shell(f"{slipway} compile quickstart --config my-config.yaml -o retrain.yaml {sets}", project, env)

    served = project / "served"
    subprocess.run(["cp", "-r", str(project / "runs/first/model_repository"), str(served)], check=True)
    http_port, grpc_port, monitor_port = free_port(), free_port(), free_port()
    monitor = f"http://127.0.0.1:{monitor_port}"
    server = f"http://127.0.0.1:{http_port}"
    drift_config = {
        "name": "my-drift",
        "registry": {"tracking_uri": store},
        "monitor": {
            "url": monitor,
            "window_size": WINDOW,
            "retrain": True,
            "retrain_target": "local",
            "retrain_package": str(project / "retrain.yaml"),
            "min_labels": 100,
            "retrain_overrides": [f"deploy.serve_url={server}", f"deploy.serve_repository={served}"],
        },
    }
    (project / "drift.yaml").write_text(json.dumps(drift_config))
    monitor_command = f"{slipway} monitor serve --data-dir monitor --port {monitor_port} --drift-every 0"
    monitor_command += f" --window-size {WINDOW} --reference runs/first/reference.npz"
    serve_command = f"{slipway} serve {served} --http-port {http_port} --grpc-port {grpc_port}"
    serve_command += f" --metrics-port {free_port()}"
    serve_command += f" --model-control-mode explicit --load-model {MODEL} --logger-url {monitor}/events"
    processes = [start_process(monitor_command.split(), project, env, f"{monitor}/healthz")]
    try:
        processes.append(start_process(serve_command.split(), project, env, f"{server}/v2/health/ready"))
        clients = Clients(http_port, grpc_port)
        x_null, y_null = draw(project, "null", WINDOW, seed=11)
        x_eval, y_eval = draw(project, "eval", 300, seed=12)
        x_new, y_new = draw(project, "new", WINDOW, seed=13)
        x_eval, x_new = shifted(x_eval), shifted(x_new)

        # A labelled window from the training distribution: no alarm, nothing retrained.
        # Labels come after the requests are captured, as they do in life (a window joins the feedback it
        # finds newer than its oldest request).
        _, null_ids, _ = clients.predict(x_null, "null")
        wait_captured(monitor, set(null_ids))
        send_labels(monitor, null_ids, y_null)
        finished(drift_run(slipway, project, env, "runs/drift-null"))

        # Shifted traffic: unlabelled rows (to compare the versions on later), then the labelled window.
        eval_old, eval_ids, _ = clients.predict(x_eval, "eval")
        window_preds, window_ids, window_versions = clients.predict(x_new, "shift")
        wait_captured(monitor, set(eval_ids) | set(window_ids))
        send_labels(monitor, window_ids, y_new)
        alarm = drift_run(slipway, project, env, "runs/drift-shift")
        # Live traffic from the moment the window has been read (so it cannot push labelled rows out of it)
        # until the drift run, with the retrain and the rollout in it, has finished.
        deadline = time.monotonic() + TIMEOUT_S
        pipeline = project / "runs/drift-shift/pipeline"
        while not list(pipeline.glob("*/export-captured-window/executor_output.json")):
            if alarm.poll() is not None or time.monotonic() > deadline:
                finished(alarm)
                raise RuntimeError("the drift run ended before it exported a window")
            time.sleep(0.5)
        live = LiveTraffic(http_port, grpc_port, x_new)
        live.start()
        finished(alarm)
        live.stop.set()
        live.join(30)
        eval_new, after_ids, eval_versions = clients.predict(x_eval, "eval-after")
        wait_captured(monitor, set(live.ids) | set(after_ids))
        metadata = httpx.get(f"{server}/v2/models/{MODEL}", timeout=10).json()
        events = captured(monitor)
    finally:
        for proc in processes:
            proc.terminate()
            proc.wait(30)
    detected = next(pipeline.glob("*/detect-drift/executor_output.json"))
    run = LoopRun(
        project=project,
        null=json.loads((project / "runs/drift-null/summary.json").read_text()),
        shift=json.loads((project / "runs/drift-shift/summary.json").read_text()),
        window=(window_preds, y_new, window_versions),
        eval=(eval_old, eval_new, y_eval, eval_versions),
        live=live,
        metadata=metadata,
        events=events,
        sent_ids=[*null_ids, *eval_ids, *window_ids, *live.ids, *after_ids],
        alarm_at=detected.stat().st_mtime,
    )
    run.timings = timings(run, first_s)
    return run


def timings(run: LoopRun, first_s: float) -> dict[str, float]:
    """Seconds from the alarm to the first answer of the new version, and the retrain run inside it."""
    live = run.live
    first_new = next((t for t, v in zip(live.answered_at, live.versions, strict=True) if v != "1"), None)
    retrain = next(s for s in run.shift["steps"] if s["step"] == "retrain")["outputs"].get("outcome", {})
    if "summary" not in retrain:
        raise RuntimeError(f"the shifted window did not retrain here: {retrain} (see {run.project})")
    retrained = json.loads(Path(retrain["summary"]).read_text())
    out = {"first_training_s": round(first_s, 1), "retrain_pipeline_s": retrained["duration_s"]}
    if first_new is not None:
        out["alarm_to_serving_s"] = round(first_new - run.alarm_at, 1)
    return out


def user_env() -> dict[str, str]:
    """A user's shell: no MLflow server configured, no Slipway settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLIPWAY_"))}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "COLUMNS": "160"}


def make_project(root: Path) -> Path:
    """A user's project folder: the README's model module and config, verbatim, and its data."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "my_models.py").write_text(readme_block("# my_models.py"))
    (root / "my-config.yaml").write_text(readme_block("# my-config.yaml"))
    signal_data(root / "data" / "my_data.npz", n=600, n_test=300)
    return root


QUICK = [
    "train.epochs=10",
    "evaluate.latency_iterations=20",
    "evaluate.throughput_iterations=3",
    "evaluate.repeats=2",
    "compress.search.enabled=false",  # the loop's cost is measured apart from the search (docs/optimization.md)
    "explain.samples=24",  # and apart from the explanations (benchmarks/explain.py): every method still runs
    "explain.steps=8",
]


def main() -> None:
    import click

    @click.command()
    @click.option("--output", type=click.Path(path_type=Path), default=Path("docs"), show_default=True)
    @click.option("--runs", type=click.IntRange(1, 5), default=3, show_default=True)
    def bench(output: Path, runs: int) -> None:
        """Time the drift loop (each run about 6 minutes on 2 cores); write <output>/benchmarks/loop.json."""
        slipway = Path(sys.executable).with_name("slipway")
        results = []
        for i in range(runs):
            tmp = Path(tempfile.mkdtemp(prefix="slipway-loop-"))  # kept when a run fails, to look at
            run = run_loop(make_project(tmp / "project"), slipway, user_env(), QUICK)
            if run.live.failures:
                raise RuntimeError(f"failed requests during the swap: {run.live.failures[:3]}")
            results.append(run.timings)
            click.echo(f"run {i + 1}: {run.timings}", err=True)
            shutil.rmtree(tmp)
        keys = sorted({k for r in results for k in r})
        medians = {k: statistics.median(r[k] for r in results if k in r) for k in keys}
        record = {
            "command": f"python -m benchmarks.loop --output {output} --runs {runs}",
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}",
            "load_average_at_start": os.getloadavg()[0],
            "runs": results,
            "median": medians,
        }
        (output / "benchmarks").mkdir(parents=True, exist_ok=True)
        (output / "benchmarks" / "loop.json").write_text(json.dumps(record, indent=2) + "\n")
        click.echo("| measurement | median |\n| --- | --- |")
        for key, value in medians.items():
            click.echo(f"| {key} | {value:.1f} s |")

    bench()


if __name__ == "__main__":
    main()
