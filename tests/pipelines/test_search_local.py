"""The search component for real under kfp.local: data -> teacher -> search-student -> record-search, each task
a subprocess reading what the previous one wrote; the report reaches the MLflow run (a real SQLite store)."""

import json
from pathlib import Path

from kfp import dsl, local

from slipway import registry
from slipway.components.data import prepare_data
from slipway.components.search import record_search, search_student
from slipway.components.train import train_teacher
from slipway.core.config import load_config, to_parameter


@dsl.pipeline(name="search-only")
def search_only(config: dict, run_id: str):
    data = prepare_data(config=config)
    teacher = train_teacher(config=config, dataset=data.outputs["dataset"])
    student = search_student(config=config, dataset=data.outputs["dataset"], teacher=teacher.outputs["model"])
    record_search(
        config=config,
        run_id=run_id,
        search_report=student.outputs["search_report"],
        search_summary=student.outputs["search_summary"],
        search_plot=student.outputs["search_plot"],
    )


def test_search_component_writes_the_model_the_report_and_records_them(
    tmp_path: Path, fast_overrides
) -> None:
    uri, artifacts = registry.local_store(tmp_path / "store")
    cfg = load_config(
        "quickstart",
        [
            *fast_overrides,
            "compress.search.enabled=true",
            "compress.search.widths=[4,8]",
            "compress.search.stages=[2]",
            "compress.search.accuracy_budget_points=100",
            f"registry.tracking_uri={uri}",
            f"registry.artifact_location={artifacts}",
        ],
    )
    run_id = registry.start_run(cfg.registry, "search-test", cfg.registry.artifact_location, {})
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    search_only(config=to_parameter(cfg, exclude={"cluster"}), run_id=run_id)

    reports = list((tmp_path / "root").rglob("search_report"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["chosen"] == "w4-s2" and report["not_run"] == {
        "w8-s2": "a smaller candidate (w4-s2) is within budget"
    }
    model = reports[0].parent / "model"
    assert model.is_file()
    summary = (reports[0].parent / "search_summary").read_text()
    assert "**Chosen: `w4-s2`.**" in summary and "data:image/png;base64," in summary

    client = registry.mlflow_client(cfg.registry)
    logged = {f.path for f in client.list_artifacts(run_id, "search")}
    assert logged == {"search/search.json", "search/search.md", "search/search.png"}
    run = client.get_run(run_id)
    assert run.data.metrics["search.trials"] == 1
    assert json.loads(run.data.tags["slipway.search"])["chosen"] == "w4-s2"
