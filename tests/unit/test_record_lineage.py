"""The record step's lineage: a cached output (the same artifact URI in a later run) names the MLflow run that
produced it, and each pipeline run still has its own MLflow run (real MLflow on SQLite)."""

from pathlib import Path

from slipway import registry
from slipway.steps.record import Produced, record_lineage


def test_a_reused_artifact_names_the_run_that_produced_it(tmp_path: Path, fast_config) -> None:
    reg = fast_config.registry
    first = registry.start_run(reg, "first", reg.artifact_location, {})
    second = registry.start_run(reg, "second", reg.artifact_location, {})
    cached = Produced("minio://mlpipeline/v2/artifacts/run-1/train-teacher/model", tmp_path / "model")
    fresh = Produced("minio://mlpipeline/v2/artifacts/run-2/gate/decision", tmp_path / "decision")

    assert record_lineage(fast_config, first, {"teacher": cached}) == {"teacher": first}
    assert record_lineage(fast_config, second, {"teacher": cached, "report": fresh}) == {
        "teacher": first,
        "report": second,
    }
    tags = registry.mlflow_client(reg).get_run(second).data.tags
    assert tags["slipway.produced_by.teacher"] == first and tags["slipway.artifact.teacher"] == cached.uri
