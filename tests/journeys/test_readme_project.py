"""Journeys a and b: the README's "Bring your own model and data" example, verbatim, run twice.

a. A user factory with int and bool kwargs on a (N, C, L) NPZ dataset: the run succeeds, the factory got its
   kwargs as ints and bools (the parameter counts prove it), the packaged model served its smoke test, and the
   registered bytes are the packaged ones.
b. The same command again: a new MLflow run, version 2, gated against version 1 (the champion).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_project, readme_block, shell, signal_data, steps_by_name, summary

from slipway.serving.triton_repository import read_model_config

LENGTH, CLASSES = 32, 4


def params(hidden: int, batch_norm: bool) -> int:
    """What the README's signal_cnn has with these kwargs: conv, optional BatchNorm, linear readout."""
    return (5 * hidden + hidden) + (2 * hidden if batch_norm else 0) + (hidden * LENGTH * CLASSES + CLASSES)


@pytest.fixture(scope="module")
def first_and_second(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    project = make_project(tmp_path_factory.mktemp("readme"))
    signal_data(
        project / "data" / "my_data.npz", n=600, n_test=300, length=LENGTH, classes=CLASSES, noise=0.2
    )
    command = readme_block("PYTHONPATH=").strip()
    first = shell(command, project)
    assert first.returncode == 0, "the README's example failed (its output is above)"
    (project / "first-run.stdout").write_text(first.stdout)
    first_summary = summary(project, "runs/mine")
    # The second run replaces runs/mine/model_repository: keep the first one's to check it against version 1.
    shutil.copytree(first_summary["model_repository"], project / "first_repository")
    first_summary["model_repository"] = str(project / "first_repository")
    second = shell(command, project)
    assert second.returncode == 0, "the README's example failed the second time (its output is above)"
    return project, first_summary, summary(project, "runs/mine")


def test_readme_example_succeeds_with_typed_kwargs_and_serves(first_and_second) -> None:
    project, run, _ = first_and_second
    assert run["status"] == "succeeded"
    steps = steps_by_name(run)
    assert {s["status"] for s in steps.values()} == {"succeeded"}, steps
    # 64 and 4 reached the factory as ints (a double fails nn.Conv1d), true/false as bools.
    assert steps["train-teacher"]["outputs"]["model"]["params"] == params(64, batch_norm=True)
    assert steps["search-student"]["outputs"]["model"]["params"] == params(4, batch_norm=False)
    assert (
        steps["deploy"]["outputs"]["Output"] == "local"
    )  # the step served the repository and smoke-tested it
    repo = Path(run["model_repository"])
    assert [list(t.dims) for t in read_model_config(repo / "my-model").input] == [[1, LENGTH]]
    card = (repo / "my-model" / "1" / "model_card.md").read_text()  # the version's card (docs/model-card.md)
    assert f"| MLflow run | {run['mlflow_run_id']} |" in card and f"{run['student']['accuracy']:.4f}" in card
    # The drift reference carries the packaged model's probabilities: output drift is compared by default.
    with np.load(project / "runs/mine/reference.npz") as ref:
        assert ref["probs"].shape == (len(ref["x"]), CLASSES)
        assert np.allclose(ref["probs"].sum(axis=1), 1, atol=1e-5)
        assert (ref["probs"].argmax(axis=1) == ref["y"]).mean() > 0.9

    from slipway import registry
    from slipway.core.config import RegistryConfig

    store = RegistryConfig(tracking_uri=run["registry"]["tracking_uri"], model_name="my-model")
    downloaded = registry.download_model(store, "1", project / "download")  # verified against its tag
    packaged = next(repo.glob("my-model/*/model.onnx")).read_bytes()
    assert downloaded.read_bytes() == packaged
    tags = registry.mlflow_client(store).get_model_version("my-model", "1").tags
    assert tags["slipway.sha256"] == hashlib.sha256(packaged).hexdigest()
    assert tags["slipway.model_repository_sha256"] == registry.directory_sha256(repo)


def test_the_console_is_one_screen_and_the_pipeline_ui_gets_the_chosen_models_evaluation(
    first_and_second,
) -> None:
    project, run, _ = first_and_second
    console = (project / "first-run.stdout").read_text().splitlines()
    assert len(console) <= 64, console  # a screen: one line per step start and end, then the summary
    for name, step in steps_by_name(run).items():
        assert any(line.split()[:3] == ["✓", name, "succeeded"] for line in console), name
        assert "KFP Executor" in Path(step["log"]).read_text()  # the step's full output, in its own file
    # record's KFP outputs (from kfp.local's executor_output.json): what the KFP UI shows for the run
    record = steps_by_name(run)["record"]["outputs"]
    assert 0 < record["metrics"]["accuracy"] == run["student"]["accuracy"]
    matrix = record["classification_metrics"]["confusionMatrix"]
    assert len(matrix["annotationSpecs"]) == CLASSES and len(matrix["rows"]) == CLASSES
    assert sum(map(sum, (r["row"] for r in matrix["rows"]))) == 300  # every test row


def test_the_same_config_again_is_a_new_run_and_version_gated_against_the_first(first_and_second) -> None:
    _, first, second = first_and_second
    assert second["mlflow_run_id"] != first["mlflow_run_id"] and second["run_key"] != first["run_key"]
    assert first["registry"]["version"] == "1" and second["registry"]["version"] == "2"
    assert any("champion v1" in reason for reason in second["gate"]["reasons"]), second["gate"]
