"""In a cluster, a role configured for more than one process or node trains as a Kubeflow TrainJob."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slipway.cli.compile import compile_pipeline
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
        ([], "comp-train-teacher", "comp-distill-student"),
        (["train.workers=4"], "comp-train-teacher-distributed", "comp-distill-student"),
        (["distill.distributed.num_nodes=2"], "comp-train-teacher", "comp-distill-student-distributed"),
    ],
)
def test_distributed_roles_compile_to_trainjob_components(
    tmp_path: Path, overrides: list[str], teacher: str, student: str
) -> None:
    components = _components(tmp_path, overrides)
    assert components["train-teacher"] == teacher and components["distill-student"] == student
