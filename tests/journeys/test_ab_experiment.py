"""Journey f: an A/B experiment between two versions from two runs, every hop real.

The README project is trained twice (`slipway run quickstart`): a weak first version that becomes champion,
then a better one registered as challenger only (`registry.promote=false`). The first is served by
`slipway serve` in explicit model-control mode with its payload logger on `slipway monitor serve`.
`slipway experiment start` takes both versions from the registry's aliases, stages the challenger from the
registry into the served repository (digest-checked) and starts the split; clients send fresh rows one per
request with tritonclient (binary HTTP, JSON HTTP, gRPC) and labels as feedback; `slipway experiment status`
reads the monitor and the server's metrics and declares a verdict; `stop --promote-winner` keeps the winner
serving and moves the champion alias.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import SLIPWAY, user_env

from benchmarks.loop import (
    MODEL,
    QUICK,
    TIMEOUT_S,
    draw,
    make_project,
    shell,
    start_process,
    wait_captured,
)
from slipway.serving.server import free_port

ROWS = 900  # single-row requests; the versions differ by ~13 points, so a few hundred rows decide


def experiment(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SLIPWAY), "experiment", *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
    assert not check or done.returncode == 0, done.returncode
    return done


class Traffic:
    """One row per request with an id, cycling binary HTTP, JSON HTTP and gRPC; records who answered."""

    def __init__(self, http_port: int, grpc_port: int) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.mods = httpclient, grpcclient
        self.http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        self.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def infer(self, row: np.ndarray, request_id: str, how: str) -> tuple[int, str, dict[str, Any]]:
        """(predicted class, answering version, the response's parameters)."""
        httpclient, grpcclient = self.mods
        x = row[None]
        if how == "grpc":
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = self.grpc.infer(MODEL, [tensor], request_id=request_id)
            response = result.get_response()
            params = {k: v.string_param for k, v in response.parameters.items()}
            out = result.as_numpy(response.outputs[0].name)
            return int(out.argmax()), response.model_version, params
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=how == "binary")
        result = self.http.infer(MODEL, [tensor], request_id=request_id)
        response = result.get_response()
        out = result.as_numpy(response["outputs"][0]["name"])
        return int(out.argmax()), response["model_version"], response.get("parameters", {})


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = make_project(tmp_path_factory.mktemp("ab"))
    store = f"sqlite:///{project / 'mlflow.db'}"
    env = user_env()
    sets = " ".join(f"--set {o}" for o in (*QUICK, f"registry.tracking_uri={store}", "deploy.target=none"))
    run = f"PYTHONPATH=$PWD {SLIPWAY} run quickstart --config my-config.yaml"
    # A weak version (one distillation epoch; its gate relaxed to let it through) becomes the champion...
    weak = "--set distill.epochs=1 --set gate.min_accuracy=0 --set gate.max_accuracy_drop=1"
    shell(f"{run} --output runs/a {sets} {weak}", project, env)
    # ...and a better one passes its gate but stays challenger: the experiment decides.
    shell(f"{run} --output runs/b {sets} --set registry.promote=false", project, env)

    served = project / "served"
    subprocess.run(["cp", "-r", str(project / "runs/a/model_repository"), str(served)], check=True)
    http_port, grpc_port, monitor_port = free_port(), free_port(), free_port()
    monitor, server = f"http://127.0.0.1:{monitor_port}", f"http://127.0.0.1:{http_port}"
    monitor_command = f"{SLIPWAY} monitor serve --data-dir monitor --port {monitor_port} --drift-every 0"
    serve_command = f"{SLIPWAY} serve {served} --http-port {http_port} --grpc-port {grpc_port}"
    serve_command += f" --metrics-port {free_port()}"
    serve_command += f" --model-control-mode explicit --load-model {MODEL} --logger-url {monitor}/events"
    processes = [start_process(monitor_command.split(), project, env, f"{monitor}/healthz")]
    urls = ("--url", server, "--monitor-url", monitor)
    try:
        processes.append(start_process(serve_command.split(), project, env, f"{server}/v2/health/ready"))
        started = experiment(
            "start", MODEL, "--name", "ab1", "--url", server, "--tracking-uri", store,
            "--repository", str(served), "--mde", "0.05", "--min-samples", "100", "-o", "json",
            cwd=project,
        )  # fmt: skip
        x, y = draw(project, "ab", ROWS, seed=21)
        traffic = Traffic(http_port, grpc_port)
        answers = [traffic.infer(x[i], f"ab-{i}", ("binary", "json", "grpc")[i % 3]) for i in range(ROWS)]
        again = [traffic.infer(x[i], f"ab-{i}", "grpc")[1] for i in range(0, ROWS, 9)]
        ids = [f"ab-{i}" for i in range(ROWS)]
        wait_captured(monitor, set(ids))
        for first in range(0, ROWS, 100):
            feedback = [{"id": ids[i], "labels": [int(y[i])]} for i in range(first, min(first + 100, ROWS))]
            httpx.post(f"{monitor}/v1/feedback", json=feedback, timeout=30).raise_for_status()
        status = experiment("status", MODEL, *urls, "-o", "json", cwd=project)
        table = experiment("status", MODEL, *urls, cwd=project)
        stopped = experiment(
            "stop", MODEL, "--promote-winner", *urls, "--tracking-uri", store, "-o", "json", cwd=project
        )
        metadata = httpx.get(f"{server}/v2/models/{MODEL}", timeout=10).json()
        after = traffic.infer(x[0], "after-stop", "binary")[1]
    finally:
        for proc in processes:
            proc.terminate()
            proc.wait(30)
    return {
        "project": project,
        "store": store,
        "served": served,
        "started": json.loads(started.stdout),
        "answers": answers,
        "again": again,
        "labels": y,
        "status": json.loads(status.stdout),
        "table": table.stdout,
        "stopped": json.loads(stopped.stdout),
        "metadata": metadata,
        "after": after,
    }


def test_start_takes_the_aliases_and_stages_the_challenger_from_the_registry(ab) -> None:
    spec = ab["started"]["spec"]
    assert (spec["a"], spec["b"], spec["name"], spec["model"]) == ("1", "2", "ab1", MODEL)
    assert ab["started"]["staged_versions"] == ["2"]
    assert (ab["served"] / MODEL / "2").is_dir()


def test_each_request_went_to_one_variant_sticky_by_its_id(ab) -> None:
    versions = [version for _, version, _ in ab["answers"]]
    variants = [params["variant"] for _, _, params in ab["answers"]]
    assert all(params["experiment"] == "ab1" for _, _, params in ab["answers"])
    assert all(v == {"a": "1", "b": "2"}[var] for v, var in zip(versions, variants, strict=True))
    share_b = Counter(versions)["2"] / len(versions)
    assert 0.4 < share_b < 0.6, Counter(versions)  # 900 hashed ids at b_share 0.5
    assert ab["again"] == versions[::9]  # the same id again (over another protocol): the same version


def test_status_counts_the_labelled_rows_per_variant_and_declares_b_better(ab) -> None:
    preds = np.array([p for p, _, _ in ab["answers"]])
    versions = np.array([v for _, v, _ in ab["answers"]])
    correct = preds == ab["labels"]
    decision = ab["status"]["decision"]
    assert decision["n_a"] == int((versions == "1").sum()) and decision["n_b"] == int((versions == "2").sum())
    assert decision["mean_a"] == pytest.approx(correct[versions == "1"].mean())
    assert decision["mean_b"] == pytest.approx(correct[versions == "2"].mean())
    assert decision["verdict"] == "b_better" and decision["final"], decision
    assert decision["ci_low"] > 0 and decision["p_value"] < 0.05, decision
    health = ab["status"]["health"]
    assert health["a"]["requests"] + health["b"]["requests"] == len(ab["answers"]) + len(ab["again"])
    assert health["a"]["errors"] == health["b"]["errors"] == 0
    assert "verdict: b_better" in ab["table"]


def test_stop_promote_winner_keeps_b_serving_and_moves_the_champion_alias(ab) -> None:
    stopped = ab["stopped"]
    assert stopped["stopped"]["kept"]["version"] == "2", stopped
    assert stopped["promoted"]["version"] == "2" and "champion" in stopped["promoted"]["aliases"]
    assert ab["metadata"]["versions"] == ["2"] and ab["after"] == "2"
    assert not (ab["served"] / MODEL / "experiment.json").exists()
    registered = subprocess.run(
        [str(Path(SLIPWAY).with_name("python")), "-c",
         "import sys, mlflow; c = mlflow.MlflowClient(sys.argv[1]); "
         "print(c.get_model_version_by_alias('my-model', 'champion').version)", ab["store"]],
        capture_output=True, text=True, timeout=TIMEOUT_S, env=user_env(),
    )  # fmt: skip
    assert registered.stdout.strip() == "2", registered.stderr[-2000:]
