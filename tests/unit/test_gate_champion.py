"""The gate step against a real champion in a real MLflow SQLite store: the champion's registered ONNX is run on
this run's test and recent splits beside the candidate, instead of trusting the accuracy recorded when it was
registered (measured on that run's data).

The models are one MatMul each, so their accuracy on each split is known: the rows' class is the argmax of their
first three features (two test rows carry another label: no model is perfect on the test split); the fourth
feature is 0 on the test split and 10 on the recent split (traffic that moved).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from evaluations import evaluation
from onnx import TensorProto, helper, numpy_helper, save

from slipway import registry, steps
from slipway.compression.onnx_export import describe_onnx
from slipway.core.artifacts import write_metadata
from slipway.core.config import SlipwayConfig
from slipway.core.data import DatasetSplits, load_splits, save_splits
from slipway.core.errors import DataError
from slipway.evaluation.gate import GateDecision
from slipway.steps.common import EvaluationReport

FEATURES, CLASSES = 4, 3
RIGHT = np.vstack([np.eye(CLASSES), np.zeros((1, CLASSES))])  # right on every split
WRONG = np.roll(RIGHT, 1, axis=1)  # always names the next class: wrong on every row
RECENT_BLIND = RIGHT + np.outer([0, 0, 0, 1], [1, 0, 0])  # right on test; says class 0 for every recent row
TEST_ACCURACY = 58 / 60  # RIGHT's and RECENT_BLIND's on the test split; what select_format reported


def _rows(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)
    x[:, 3] = shift
    return x, x[:, :CLASSES].argmax(1).astype(np.int64)


def _linear(path: Path, weights: np.ndarray) -> Path:
    """input (batch, F) @ weights (F, K) -> logits, with the metadata sidecar every Slipway artifact has."""
    w = numpy_helper.from_array(np.asarray(weights, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", weights.shape[0]])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [w],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    write_metadata(path, describe_onnx(path))
    return path


@pytest.fixture
def run(tmp_path: Path, fast_config: SlipwayConfig) -> dict:
    """This run's files on disk (dataset with a recent split, report) and its MLflow run."""
    x_train, y_train = _rows(60, 0.0, 0)
    x_test, y_test = _rows(60, 0.0, 1)
    y_test[:2] = (y_test[:2] + 2) % CLASSES  # a label neither RIGHT nor WRONG predicts
    x_recent, y_recent = _rows(60, 10.0, 2)
    splits = DatasetSplits("retrain", x_train, y_train, x_train, y_train, x_test, y_test, x_recent, y_recent)
    save_splits(splits, tmp_path / "dataset")
    report = EvaluationReport(
        dataset_fingerprint=splits.fingerprint,
        teacher=evaluation("onnx-fp32", TEST_ACCURACY, 1000.0),
        teacher_eager=evaluation("pytorch-fp32", TEST_ACCURACY, 1000.0),
        student=evaluation("onnx-fp32", TEST_ACCURACY, 1000.0),
    )
    (tmp_path / "report").write_text(report.model_dump_json())
    run_id = registry.start_run(fast_config.registry, "gate-run", fast_config.registry.artifact_location, {})
    return {"dataset": tmp_path / "dataset", "report": tmp_path / "report", "run_id": run_id}


def _champion(cfg: SlipwayConfig, tmp_path: Path, weights: np.ndarray, recorded: str) -> str:
    """Register and promote a model whose recorded accuracy tag says `recorded`, from an earlier run."""
    path = _linear(tmp_path / "champion.onnx", weights)
    earlier = registry.start_run(cfg.registry, "earlier", cfg.registry.artifact_location, {})
    example = np.zeros((2, weights.shape[0]), np.float32)
    version = registry.register_onnx(cfg.registry, earlier, path, {"slipway.accuracy": recorded}, example)
    registry.promote(cfg.registry, version.version)
    return version.version


def _gate(cfg: SlipwayConfig, tmp_path: Path, run: dict, candidate: np.ndarray) -> GateDecision:
    decision = steps.gate_candidate(
        cfg,
        run["run_id"],
        run["report"],
        tmp_path / "decision",
        dataset_path=run["dataset"],
        candidate_onnx=_linear(tmp_path / "candidate.onnx", candidate),
    )
    assert GateDecision.model_validate_json((tmp_path / "decision").read_text()) == decision
    return decision


def test_a_champion_worse_on_this_data_does_not_block_a_better_candidate(
    tmp_path: Path, fast_config: SlipwayConfig, run: dict
) -> None:
    version = _champion(fast_config, tmp_path, WRONG, recorded="0.99")
    # Against the recorded 0.99 (the gate without this run's data), the candidate's 0.967 is not enough...
    old_way = steps.gate_candidate(fast_config, run["run_id"], run["report"], tmp_path / "old")
    assert not old_way.passed and "champion" in {c.name for c in old_way.checks if not c.passed}

    decision = _gate(fast_config, tmp_path, run, RIGHT)
    assert decision.passed, decision.reasons
    assert decision.champion_version == version
    assert decision.candidate_accuracy == {"test": pytest.approx(TEST_ACCURACY), "recent": 1.0}
    assert decision.champion_accuracy == {"test": 0.0, "recent": 0.0}  # re-run, not the recorded 0.99
    assert {c.name for c in decision.checks} >= {"champion", "champion_recent"}
    assert any(f"champion v{version} 0.0000 on the same rows" in r for r in decision.reasons)

    metrics = registry.mlflow_client(fast_config.registry).get_run(run["run_id"]).data.metrics
    assert metrics["gate.recent_accuracy"] == 1.0 and metrics["gate.champion_recent_accuracy"] == 0.0


def test_a_candidate_worse_on_recent_traffic_fails_champion_recent(
    tmp_path: Path, fast_config: SlipwayConfig, run: dict
) -> None:
    _champion(fast_config, tmp_path, RIGHT, recorded="0.5")
    decision = _gate(fast_config, tmp_path, run, RECENT_BLIND)
    assert not decision.passed
    assert [c.name for c in decision.checks if not c.passed] == ["champion_recent"]  # equal on the test split
    assert decision.champion_accuracy == {"test": pytest.approx(TEST_ACCURACY), "recent": 1.0}
    assert decision.candidate_accuracy["test"] == pytest.approx(TEST_ACCURACY)
    assert decision.candidate_accuracy["recent"] < 0.5
    (fail,) = [r for r in decision.reasons if r.startswith("FAIL")]
    assert "recent split (60 rows)" in fail and "vs champion v1 1.0000" in fail
    tags = registry.mlflow_client(fast_config.registry).get_run(run["run_id"]).data.tags
    assert '"passed": false' in tags["slipway.gate"]


@pytest.mark.parametrize(
    ("weights", "why"),
    [
        (np.zeros((FEATURES + 1, CLASSES)), r"takes samples of shape \[5\], this data has \[4\]"),
        (np.zeros((FEATURES, CLASSES + 2)), "scores 5 classes per row, the candidate 3"),
    ],
)
def test_a_champion_that_cannot_run_on_this_data_falls_back_to_its_recorded_accuracy(
    tmp_path: Path, fast_config: SlipwayConfig, run: dict, weights: np.ndarray, why: str
) -> None:
    _champion(fast_config, tmp_path, weights, recorded="0.99")
    decision = _gate(fast_config, tmp_path, run, RIGHT)
    assert not decision.passed and decision.champion_accuracy == {}
    assert decision.candidate_accuracy == {"test": pytest.approx(TEST_ACCURACY), "recent": 1.0}
    (champion,) = [c for c in decision.checks if c.name.startswith("champion")]
    assert champion.name == "champion" and not champion.passed
    assert champion.threshold == pytest.approx(0.98)  # the recorded 0.99 minus the margin
    assert re.search(why, champion.message) and "recorded at its registration" in champion.message


def test_the_gate_refuses_a_dataset_other_than_the_reports(
    tmp_path: Path, fast_config: SlipwayConfig, run: dict
) -> None:
    without_recent = dataclasses.replace(load_splits(run["dataset"]), x_recent=None, y_recent=None)
    save_splits(without_recent, tmp_path / "other")
    with pytest.raises(DataError, match="the report was measured on dataset"):
        steps.gate_candidate(
            fast_config,
            run["run_id"],
            run["report"],
            tmp_path / "decision",
            dataset_path=tmp_path / "other",
            candidate_onnx=_linear(tmp_path / "candidate.onnx", RIGHT),
        )
