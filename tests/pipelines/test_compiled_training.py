"""In a cluster, a role configured for more than one process or node trains as a Kubeflow TrainJob."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slipway.cli.compile import compile_pipeline
from slipway.cluster import trainjob
from slipway.core.cluster_config import CheckpointsConfig
from slipway.core.config import load_config
from slipway.pipelines import get_pipeline


def _components(tmp_path: Path, overrides: list[str]) -> dict[str, str]:
    """Display name -> the component that task runs, from the compiled IR."""
    out = compile_pipeline(
        get_pipeline("quickstart"), load_config("quickstart", overrides), tmp_path / "p.yaml"
    )
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    return {task["taskInfo"]["name"]: task["componentRef"]["name"] for task in tasks.values()}


@pytest.mark.parametrize(
    ("overrides", "teacher", "student"),
    [
        ([], "comp-train-teacher", "comp-search-student"),
        (["train.workers=4"], "comp-train-teacher-distributed", "comp-search-student"),
        (["distill.distributed.num_nodes=2"], "comp-train-teacher", "comp-distill-student-distributed"),
    ],
)
def test_distributed_roles_compile_to_trainjob_components(
    tmp_path: Path, overrides: list[str], teacher: str, student: str
) -> None:
    components = _components(tmp_path, overrides)
    student_task = "distill-student" if student.endswith("distributed") else "search-student"
    assert components["train-teacher"] == teacher and components[student_task] == student


def test_a_checkpoint_claim_reaches_the_trainjob_step(tmp_path: Path) -> None:
    """With `cluster.checkpoints.pvc`, the job-launching step mounts the claim, and its environment names it for
    the job's pods (slipway.cluster.trainjob.checkpoints_from_env)."""
    out = compile_pipeline(
        get_pipeline("quickstart"),
        load_config("quickstart", ["train.workers=4", "cluster.checkpoints.pvc=ckpt"]),
        tmp_path / "p.yaml",
    )
    spec, platform = yaml.safe_load_all(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounts = executors["exec-train-teacher-distributed"]["pvcMount"]
    assert [(m["constant"], m["mountPath"]) for m in mounts] == [("ckpt", "/checkpoints")]
    container = spec["deploymentSpec"]["executors"]["exec-train-teacher-distributed"]["container"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert trainjob.checkpoints_from_env(env) == CheckpointsConfig(pvc="ckpt", mount_path="/checkpoints")
    config = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert config["train"]["checkpoint_dir"] == "/checkpoints/quickstart"
