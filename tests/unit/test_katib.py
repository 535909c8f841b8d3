"""The Katib Experiment for the compression search: rendered with typed models, validated, and its trial
command run here as Katib would run it in the trial's pod (a subprocess), its stdout parsed with Katib's own
StdOut collector pattern."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from slipway.cluster.katib import TRIAL_PARAMETER, Experiment, build_experiment, main
from slipway.compression.search import OBJECTIVE, plan
from slipway.core.config import load_config

# Katib's default StdOut metrics filter (pkg/metricscollector/v1beta1/common: DefaultFilter).
KATIB_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
TINY = [
    "distill.epochs=1",
    "evaluate.warmup=1",
    "evaluate.latency_iterations=10",
    "evaluate.throughput_iterations=1",
    "evaluate.repeats=1",
    "compress.search.widths=[4,8]",
    "compress.search.stages=[2]",
]


def test_experiment_renders_one_ordered_trial_per_candidate() -> None:
    cfg = load_config("quickstart", ["compress.search.max_trials=4"])
    keys = [c.key for c in plan(cfg.compress.search, cfg.student, (1, 8, 8), 10)]
    obj = build_experiment(cfg, keys, "s3://b/data.npz", "s3://b/teacher.pt", "s3://b/search").to_dict()
    assert obj["apiVersion"] == "kubeflow.org/v1beta1" and obj["kind"] == "Experiment"
    spec = obj["spec"]
    assert spec["objective"] == {
        "type": "maximize",
        "goal": 0.0,
        "objectiveMetricName": OBJECTIVE,
        "additionalMetricNames": ["val_accuracy", "drop_points", "throughput_ips_b64", "size_bytes"],
    }
    assert spec["algorithm"] == {"algorithmName": "grid"} and spec["parallelTrialCount"] == 1
    assert spec["parameters"][0]["feasibleSpace"]["list"] == keys and keys[0] == "w8-s2"
    assert spec["maxTrialCount"] == 4 and spec["metricsCollectorSpec"] == {"collector": {"kind": "StdOut"}}
    job = spec["trialTemplate"]["trialSpec"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "slipway.steps.search"]
    assert "${trialParameters.candidate}" in container["args"]
    assert spec["trialTemplate"]["primaryContainerName"] == container["name"]
    Experiment.model_validate(obj)  # what we render reads back through the same typed models


def test_experiment_rejects_undeclared_trial_parameters_and_unknown_keys() -> None:
    cfg = load_config("quickstart")
    obj = build_experiment(cfg, ["w8-s2"], "d", "t", "o").to_dict()
    obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"].append(
        "${trialParameters.width}"
    )
    with pytest.raises(ValidationError, match=r"undeclared trialParameters \['width'\]"):
        Experiment.model_validate(obj)
    obj = build_experiment(cfg, ["w8-s2"], "d", "t", "o").to_dict()
    obj["spec"]["parallelTrials"] = 2
    with pytest.raises(ValidationError, match="parallelTrials"):
        Experiment.model_validate(obj)


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from slipway import steps

    out = tmp_path_factory.mktemp("katib")
    cfg = load_config("quickstart", [*TINY, "train.epochs=2"])
    steps.prepare_data(cfg, out / "dataset.npz", out / "reference.npz")
    steps.train_teacher(cfg, out / "dataset.npz", out / "teacher.pt")
    return out / "dataset.npz", out / "teacher.pt"


def test_the_trial_command_prints_the_objective_katib_collects(
    teacher_and_data, tmp_path: Path, capsys
) -> None:
    dataset, teacher = teacher_and_data
    assert main(["--set", TINY[-2], "--set", TINY[-1], "--dataset-uri", str(dataset), "--teacher-uri", str(teacher),
                 "--output-prefix", str(tmp_path / "out"), "-n", "team"]) == 0  # fmt: skip
    experiment = yaml.safe_load(capsys.readouterr().out)
    assert experiment["metadata"]["namespace"] == "team"
    cfg = load_config("quickstart", TINY)
    obj = build_experiment(
        cfg, ["w4-s2", "w8-s2"], str(dataset), str(teacher), str(tmp_path / "out")
    ).to_dict()
    container = obj["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
    # What Katib's controller does: substitute the trial's parameter into the template, then run the container.
    argv = [a.replace(f"${{trialParameters.{TRIAL_PARAMETER}}}", "w4-s2") for a in container["args"]]
    proc = subprocess.run(
        [sys.executable, *container["command"][1:], *argv], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = {m[0]: float(m[1]) for m in KATIB_FILTER.findall(proc.stdout)}
    assert set(metrics) >= {OBJECTIVE, "val_accuracy", "drop_points", "throughput_ips_b64"}
    assert metrics[OBJECTIVE] == pytest.approx(
        cfg.compress.search.accuracy_budget_points - metrics["drop_points"]
    )
    assert 0 < metrics["val_accuracy"] <= 1
    assert (tmp_path / "out" / "w4-s2" / "model.pt").is_file() and (
        tmp_path / "out" / "w4-s2" / "model.onnx"
    ).is_file()
