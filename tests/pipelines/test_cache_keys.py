"""A step's cache key depends only on what the step reads (issue #11): changing the gate thresholds re-runs
start, record, gate, register and promote (uncached), never data, training, export or compression.

KFP keys a cached task on its component and its resolved inputs. Shown twice: on the compiled IR (every task
and component is byte-identical; only the root's defaults differ) and through kfp.local on the values the
cached tasks receive (start's slices are byte-identical).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.cli.compile import compile_pipeline, runtime_config
from slipway.core.config import load_config, validate_config
from slipway.pipelines import get_pipeline
from slipway.registry import local_store

GATE_A = ["gate.min_accuracy=0.9", "gate.max_accuracy_drop=0.02"]
GATE_B = ["gate.min_accuracy=0.5", "gate.max_accuracy_drop=0.3"]
CACHED = ["data", "teacher", "student", "export", "prune", "quantize", "select", "tensorrt"]


def compiled(tmp_path: Path, overrides: list[str]) -> dict[str, Any]:
    out = compile_pipeline(
        get_pipeline("quickstart"),
        load_config("quickstart", overrides),
        tmp_path / f"{hash(tuple(overrides))}.yaml",
    )
    return next(yaml.safe_load_all(out.read_text()))


def test_gate_thresholds_change_only_the_roots_defaults_in_the_ir(tmp_path: Path) -> None:
    a, b = compiled(tmp_path, GATE_A), compiled(tmp_path, GATE_B)
    root_a, root_b = a.pop("root"), b.pop("root")
    assert a == b  # every component and executor
    assert root_a["dag"] == root_b["dag"]  # every task and what each input is bound to
    params_a, params_b = root_a["inputDefinitions"]["parameters"], root_b["inputDefinitions"]["parameters"]
    changed = {k for k in params_a if params_a[k].get("defaultValue") != params_b[k].get("defaultValue")}
    assert changed == {"config", "min_accuracy", "max_accuracy_drop"}
    # ... and no cached task reads those root parameters: only start does, the others get start's slices.
    tasks = root_a["dag"]["tasks"]
    readers = {
        name
        for name, task in tasks.items()
        for value in task.get("inputs", {}).get("parameters", {}).values()
        if value.get("componentInputParameter") in changed
    }
    assert readers == {"start-run"}
    for name in ("train-teacher", "search-student", "prune", "quantize", "select-format", "prepare-data"):
        bound = tasks[name]["inputs"]["parameters"]["config"]["taskOutputParameter"]
        assert bound["producerTask"] == "start-run", (name, bound)


@pytest.fixture
def run_start(tmp_path: Path):
    """Run the start component alone under kfp.local (its outputs cross KFP's parameter boundary)."""
    from kfp import local

    from slipway.components.start import start_run

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    uri, artifacts = local_store(tmp_path / "store")

    def run(overrides: list[str], **parameters: Any) -> dict[str, Any]:
        cfg = load_config(
            "quickstart",
            [*overrides, f"registry.tracking_uri={uri}", f"registry.artifact_location={artifacts}"],
        )
        task = start_run(config=runtime_config(cfg), run_key="", pipeline="quickstart", **parameters)
        return dict(task.outputs)

    return run


def test_cached_steps_receive_byte_identical_slices_when_the_gate_changes(run_start) -> None:
    a = run_start(GATE_A)
    b = run_start(GATE_B, min_accuracy=0.4)
    for step in CACHED:
        assert json.dumps(a[step], sort_keys=True) == json.dumps(b[step], sort_keys=True), step
    assert a["run_id"] != b["run_id"]  # a fresh MLflow run per pipeline run, cached steps or not
    assert validate_config(b["config"]).gate.min_accuracy == 0.4  # the typed parameter wins over the config


def test_a_typed_parameter_reaches_only_the_steps_that_read_it_with_its_type(run_start) -> None:
    base = run_start([])
    longer = run_start([], teacher_epochs=7)
    changed = [
        step
        for step in CACHED
        if json.dumps(base[step], sort_keys=True) != json.dumps(longer[step], sort_keys=True)
    ]
    assert changed == ["teacher"]
    epochs = validate_config(longer["teacher"]).train.epochs
    assert epochs == 7 and type(epochs) is int
