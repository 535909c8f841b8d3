"""Fairness by group: numbers checked against a hand computation, Fairlearn's binary metrics, and the gate rules."""

from __future__ import annotations

import numpy as np
import pytest

from slipway.core.config import GateConfig, load_config
from slipway.core.errors import ConfigError
from slipway.evaluation.evaluate import ModelEvaluation
from slipway.evaluation.fairness import (
    disparities,
    fairness_metrics,
    fairness_report,
    write_fairness_table,
)
from slipway.evaluation.gate import decide

# Ten rows, three classes, two groups: the expected numbers below are worked out by hand in the comments.
GROUPS = np.array(["a"] * 5 + ["b"] * 5)
Y = np.array([0, 0, 1, 2, 2, 0, 1, 1, 2, 1])
PRED = np.array([0, 1, 1, 2, 0, 0, 1, 2, 2, 1])


def test_disparities_match_a_hand_computation() -> None:
    d = disparities(Y, PRED, GROUPS, num_classes=3)
    a, b = d.group("a"), d.group("b")
    assert (a.count, b.count) == (5, 5)
    # a: rows 0, 2, 3 right, 1 and 4 wrong -> 3/5; b: only row 7 wrong -> 4/5
    assert (a.accuracy, b.accuracy) == (pytest.approx(0.6), pytest.approx(0.8))
    # a: F1 per class 0.5 (P 1/2, R 1/2), 2/3 (P 1/2, R 1), 2/3 (P 1, R 1/2) -> 11/18
    # b: F1 per class 1, 0.8 (P 1, R 2/3), 2/3 (P 1/2, R 1) -> 37/45
    assert a.macro_f1 == pytest.approx(11 / 18)
    assert b.macro_f1 == pytest.approx(37 / 45)
    # predictions in a: 0,1,1,2,0; in b: 0,1,2,2,1
    assert a.selection_rate == pytest.approx([0.4, 0.4, 0.2])
    assert b.selection_rate == pytest.approx([0.2, 0.4, 0.4])
    assert (d.worst_group, d.best_group) == ("a", "b")
    assert d.worst_group_accuracy == pytest.approx(0.6)
    assert d.accuracy_gap == pytest.approx(0.2)
    # selection-rate spreads per class: 0.2, 0.0, 0.2 -> 0.2, first at class 0
    assert d.demographic_parity_difference == pytest.approx(0.2)
    assert d.demographic_parity_class == 0
    # one-vs-rest: class 0 TPR a 1/2 b 1, FPR a 1/3 b 0 -> 0.5; class 1 TPR 1 vs 2/3, FPR 1/4 vs 0 -> 1/3;
    # class 2 TPR 1/2 vs 1, FPR 0 vs 1/4 -> 0.5: max 0.5, first at class 0
    assert d.equalized_odds_difference == pytest.approx(0.5)
    assert d.equalized_odds_class == 0


def test_change_between_teacher_and_student_by_hand() -> None:
    report = fairness_report(Y, Y, PRED, {"g": GROUPS}, num_classes=3)  # the teacher is right everywhere
    (f,) = report.features
    assert f.teacher.worst_group_accuracy == 1.0 and f.teacher.accuracy_gap == 0.0
    # the teacher predicts the true classes: shares a 0.4, 0.2, 0.4 / b 0.2, 0.6, 0.2 -> spreads 0.2, 0.4, 0.2
    assert f.teacher.demographic_parity_difference == pytest.approx(0.4)
    assert f.change.demographic_parity_difference == pytest.approx(0.2 - 0.4)
    assert f.change.worst_group_accuracy == pytest.approx(-0.4)
    assert f.change.accuracy_by_group == pytest.approx({"a": -0.4, "b": -0.2})
    assert (f.change.largest_drop_group, f.change.largest_group_drop) == ("a", pytest.approx(0.4))
    assert f.change.accuracy_gap == pytest.approx(0.2)
    assert f.change.equalized_odds_difference == pytest.approx(0.5)  # the teacher's is 0


def test_binary_disparities_equal_fairlearns_own_functions() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    groups = rng.choice(["x", "y", "z"], 400)
    pred = np.where(rng.random(400) < np.where(groups == "z", 0.6, 0.85), y, 1 - y)
    d = disparities(y, pred, groups, num_classes=2)
    assert d.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y, pred, sensitive_features=groups)
    )
    assert d.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y, pred, sensitive_features=groups)
    )


def test_metrics_and_table_for_mlflow(tmp_path) -> None:
    report = fairness_report(Y, Y, PRED, {"sex/at birth": GROUPS}, num_classes=3)
    metrics = fairness_metrics(report)
    assert metrics["fairness.sex/at birth.student.worst_group_accuracy"] == pytest.approx(0.6)
    assert metrics["fairness.sex/at birth.student.group.b.accuracy"] == pytest.approx(0.8)
    assert metrics["fairness.sex/at birth.change.largest_group_drop"] == pytest.approx(0.4)
    import pandas as pd

    table = pd.read_csv(write_fairness_table(report, tmp_path / "fairness.csv"))
    row = table[(table.model == "student") & (table.group == "a")].iloc[0]
    assert (row["count"], row["accuracy"], row["selection_rate_2"]) == (
        5,
        pytest.approx(0.6),
        pytest.approx(0.2),
    )
    assert len(table) == 4  # 2 groups x (teacher, student)


def _eval(role: str, acc: float) -> ModelEvaluation:
    return ModelEvaluation(
        role=role,
        format="onnx-fp32",
        runtime="onnxruntime",
        params=10,
        size_bytes=10,
        accuracy=acc,
        macro_f1=acc,
        per_class_accuracy=[acc],
        confusion_matrix=[[1]],
        latency_ms_p50_b1=0.5,
        latency_ms_p99_b1=1.0,
        throughput_ips_b64=1000.0,
    )


# A student that loses 2 of group a's 5 rows (worst-group accuracy 1.0 -> 0.6), and one that loses 1 (-> 0.8)
BAD_STUDENT = PRED
MILD_STUDENT = np.where(np.arange(10) == 1, 0, PRED)  # row 1 fixed; row 4 and row 7 still wrong
LENIENT = GateConfig(min_accuracy=0.5, max_accuracy_drop=0.5)


def test_gate_rejects_a_student_whose_worst_group_falls_more_than_allowed() -> None:
    fairness = fairness_report(Y, Y, BAD_STUDENT, {"style": GROUPS}, num_classes=3)
    cfg = LENIENT.model_copy(update={"max_worst_group_drop_vs_teacher": 0.3})
    d = decide(_eval("student", 0.7), _eval("teacher", 1.0), cfg, fairness=fairness)
    assert not d.passed
    (failed,) = [c for c in d.checks if not c.passed]
    assert failed.name == "max_worst_group_drop_vs_teacher[style]"
    assert (failed.value, failed.threshold) == (pytest.approx(0.4), 0.3)
    (reason,) = [r for r in d.reasons if r.startswith("FAIL")]
    assert "style=a (5 rows)" in reason and "40.00 points" in reason and "allowed 30.00" in reason


def test_gate_passes_a_student_whose_worst_group_drop_is_within_the_limit() -> None:
    fairness = fairness_report(Y, Y, MILD_STUDENT, {"style": GROUPS}, num_classes=3)
    assert fairness.features[0].student.worst_group_accuracy == pytest.approx(0.8)
    cfg = LENIENT.model_copy(update={"max_worst_group_drop_vs_teacher": 0.3})
    d = decide(_eval("student", 0.8), _eval("teacher", 1.0), cfg, fairness=fairness)
    assert d.passed
    check = next(c for c in d.checks if c.name == "max_worst_group_drop_vs_teacher[style]")
    assert check.passed and check.value == pytest.approx(0.2)


def test_worst_group_and_gap_rules_name_the_groups_and_numbers() -> None:
    fairness = fairness_report(Y, Y, BAD_STUDENT, {"style": GROUPS}, num_classes=3)
    cfg = LENIENT.model_copy(update={"min_worst_group_accuracy": 0.7, "max_group_accuracy_gap": 0.25})
    d = decide(_eval("student", 0.7), _eval("teacher", 1.0), cfg, fairness=fairness)
    outcome = {c.name: c.passed for c in d.checks}
    assert outcome["min_worst_group_accuracy[style]"] is False  # 0.6 < 0.7
    assert outcome["max_group_accuracy_gap[style]"] is True  # 0.2 <= 0.25
    assert any("worst group style=a (5 rows): accuracy 0.6000 vs minimum 0.7000" in r for r in d.reasons)
    assert any("a 0.6000" in r and "b 0.8000" in r for r in d.reasons if "gap" in r)


def test_fairness_rules_are_off_by_default_and_fail_without_group_labels() -> None:
    fairness = fairness_report(Y, Y, BAD_STUDENT, {"style": GROUPS}, num_classes=3)
    d = decide(_eval("student", 0.7), _eval("teacher", 1.0), LENIENT, fairness=fairness)
    assert d.passed and not any("group" in c.name for c in d.checks)
    cfg = LENIENT.model_copy(update={"min_worst_group_accuracy": 0.5})
    d = decide(_eval("student", 0.7), _eval("teacher", 1.0), cfg, fairness=None)
    assert not d.passed
    assert any(
        "gate.min_worst_group_accuracy is set but the data carries no group labels" in r for r in d.reasons
    )


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("gate.max_worst_group_drop_vs_teacher=1.5", "gate.max_worst_group_drop_vs_teacher"),
        ("gate.min_worst_group_acuracy=0.9", "gate.min_worst_group_accuracy"),  # did you mean
        ("data.sensitive_features=style", "data.sensitive_features"),  # a list is expected
    ],
)
def test_fairness_config_keys_are_validated(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config("fairness", [override])


def test_fairness_preset_turns_the_rules_on() -> None:
    cfg = load_config("fairness")
    assert cfg.data.source == "digits-groups" and cfg.data.sensitive_features == ["style"]
    assert None not in (
        cfg.gate.min_worst_group_accuracy,
        cfg.gate.max_group_accuracy_gap,
        cfg.gate.max_worst_group_drop_vs_teacher,
    )
    assert load_config("quickstart").gate.max_worst_group_drop_vs_teacher is None
