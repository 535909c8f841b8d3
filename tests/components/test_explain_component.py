"""The explain component on real files: under kfp.local (its own subprocess, checkpoints and the dataset imported
as KFP artifacts), it writes the report folder and the KFP Markdown summary and logs both folder and numbers into a
real MLflow (SQLite) run; through `.python_func` with explanations off, it says so everywhere."""

import json
from pathlib import Path

import pytest
import torch
from kfp import dsl, local

from slipway import registry
from slipway.components.explain import explain_models
from slipway.core.config import ModelSpec, load_config, to_parameter
from slipway.core.data import save_splits
from slipway.core.models import build_model, save_model
from slipway.evaluation.explain import ExplanationReport


@dsl.pipeline(name="explain-only")
def explain_only(config: dict, run_id: str, dataset_uri: str, teacher_uri: str, student_uri: str):
    dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
    teacher = dsl.importer(artifact_uri=teacher_uri, artifact_class=dsl.Model)
    student = dsl.importer(artifact_uri=student_uri, artifact_class=dsl.Model)
    explain_models(
        config=config,
        run_id=run_id,
        dataset=dataset.output,
        teacher=teacher.output,
        student=student.output,
    )


@pytest.fixture
def inputs(tmp_path: Path, digits_splits) -> dict[str, Path]:
    """The digits splits and two tiny seeded (untrained) checkpoints: the test follows the files, not accuracy."""
    files = {"dataset": tmp_path / "in" / "dataset.npz"}
    files["dataset"].parent.mkdir()
    save_splits(digits_splits, files["dataset"])
    for role, spec in (
        ("teacher", ModelSpec(architecture="teacher_cnn", kwargs={"width": 8})),
        ("student", ModelSpec(architecture="student_cnn", kwargs={"width": 4})),
    ):
        torch.manual_seed(0)
        model = build_model(spec, digits_splits.input_shape, digits_splits.num_classes)
        files[role] = tmp_path / "in" / f"{role}.pt"
        save_model(model, spec, digits_splits.input_shape, digits_splits.num_classes, files[role])
    return files


def _config(tmp_path: Path, *overrides: str):
    uri, artifacts = registry.local_store(tmp_path / "store")
    cfg = load_config(
        "quickstart",
        [*overrides, f"registry.tracking_uri={uri}", f"registry.artifact_location={artifacts}"],
    )
    run_id = registry.start_run(cfg.registry, "explain-test", cfg.registry.artifact_location, {})
    return cfg, run_id


def test_explain_component_under_kfp_local_writes_the_folder_and_logs_it(tmp_path: Path, inputs) -> None:
    cfg, run_id = _config(tmp_path, "explain.samples=40", "explain.examples=2", "explain.steps=8")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    explain_only(
        config=to_parameter(cfg, exclude={"cluster"}),
        run_id=run_id,
        dataset_uri=str(inputs["dataset"]),
        teacher_uri=str(inputs["teacher"]),
        student_uri=str(inputs["student"]),
    )

    (folder,) = [p for p in (tmp_path / "root").rglob("explanation") if p.is_dir()]
    report = ExplanationReport.model_validate_json((folder / "explanation.json").read_text())
    assert report.enabled and report.samples == 40 and report.steps == 8
    assert report.methods == ["integrated_gradients", "saliency", "occlusion"]
    assert report.compared_method == "integrated_gradients"
    assert set(report.rank_correlation_by_class) == {str(k) for k in range(10)}  # 40 stratified rows: all
    assert set(report.sanity) == {"teacher", "student"}
    assert set(report.cost_ms_per_image["student"]) == set(report.methods)
    assert len(report.examples) == 4
    assert len(report.figures) == 6
    for name in report.figures:
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
        assert f"src='{name}'" in (folder / "report.html").read_text()
        assert f"]({name})" in (folder / "report.md").read_text()
    summary = (folder.parent / "explanation_summary").read_text()
    assert summary.count("](data:image/png;base64,") == 6  # figures inline: KFP shows the Markdown alone
    executor = json.loads((folder.parent / "executor_output.json").read_text())
    metadata = executor["artifacts"]["explanation"]["artifacts"][0]["metadata"]
    assert metadata["mean_rank_correlation"] == pytest.approx(report.mean_rank_correlation)

    client = registry.mlflow_client(cfg.registry)
    logged = {Path(f.path).name for f in client.list_artifacts(run_id, "explain")}
    assert logged == {p.name for p in folder.iterdir()}
    assert {"explanation.json", "report.md", "report.html", *report.figures} <= logged
    metrics = client.get_run(run_id).data.metrics
    assert metrics["explain_mean_rank_correlation"] == pytest.approx(report.mean_rank_correlation)
    for role in ("teacher", "student"):
        assert metrics[f"explain_sanity_passed_{role}"] == float(report.sanity[role].passed)
        for method in report.methods:
            assert metrics[f"explain_ms_per_image_{method}_{role}"] == pytest.approx(
                report.cost_ms_per_image[role][method]
            )


def test_explain_component_with_explanations_off_says_why(tmp_path: Path, inputs) -> None:
    cfg, run_id = _config(tmp_path, "explain.enabled=false")
    folder, summary = tmp_path / "out" / "explanation", tmp_path / "out" / "summary"
    folder.parent.mkdir()
    explanation = dsl.Artifact(name="explanation", uri=str(folder), metadata={})
    explain_models.python_func(
        config=to_parameter(cfg, exclude={"cluster"}),
        run_id=run_id,
        dataset=dsl.Dataset(name="dataset", uri=str(inputs["dataset"]), metadata={}),
        teacher=dsl.Model(name="teacher", uri=str(inputs["teacher"]), metadata={}),
        student=dsl.Model(name="student", uri=str(inputs["student"]), metadata={}),
        explanation=explanation,
        explanation_summary=dsl.Markdown(name="summary", uri=str(summary), metadata={}),
    )
    report = ExplanationReport.model_validate_json((folder / "explanation.json").read_text())
    assert not report.enabled and report.reason == "explain.enabled is false" and report.figures == []
    assert "explain.enabled is false" in summary.read_text()
    assert explanation.metadata["enabled"] is False
    client = registry.mlflow_client(cfg.registry)
    assert {Path(f.path).name for f in client.list_artifacts(run_id, "explain")} == {
        "explanation.json",
        "report.md",
        "report.html",
    }
    assert not [k for k in client.get_run(run_id).data.metrics if k.startswith("explain_")]
