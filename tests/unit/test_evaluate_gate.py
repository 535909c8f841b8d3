"""Evaluation metrics against scikit-learn, speed measurement, confusion PNG, and the gate's decisions."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from slipway.core.config import EvaluateConfig, GateConfig
from slipway.evaluation.evaluate import (
    ModelEvaluation,
    confusion_error_cells,
    measure_speed,
    plot_confusion_matrix,
    quality,
)
from slipway.evaluation.gate import Champion, SameDataAccuracy, decide


def test_quality_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4))
    logits[np.arange(150), y[:150]] += 5
    q = quality(y, logits, 4)
    assert q.accuracy == pytest.approx(accuracy_score(y, logits.argmax(1)))
    assert q.macro_f1 == pytest.approx(f1_score(y, logits.argmax(1), average="macro"))
    assert np.asarray(q.confusion_matrix).sum() == 200
    cm = np.asarray(q.confusion_matrix)
    assert q.per_class_accuracy == pytest.approx(list(np.diag(cm) / cm.sum(1)))


def test_measure_speed_reports_medians(tmp_path: Path) -> None:
    calls: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x

    cfg = EvaluateConfig(warmup=1, latency_iterations=10, throughput_iterations=2, repeats=3)
    s = measure_speed(predict, np.zeros((5, 3), np.float32), cfg)
    assert 0 < s.latency_ms_p50_b1 <= s.latency_ms_p99_b1
    assert s.throughput_ips_b64 > 0
    assert calls.count(1) == 1 + 3 * 10 and calls.count(64) == 1 + 3 * 2


def test_confusion_matrix_png(tmp_path: Path) -> None:
    path = tmp_path / "cm"
    plot_confusion_matrix([[5, 1], [0, 4]], path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_plot_highlights_exactly_the_misclassified_cells(tmp_path: Path) -> None:
    """10 classes, as the demo: the red cells are the (true, predicted) pairs some test row fell into."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 300)
    logits = rng.normal(size=(300, 10))
    logits[np.arange(270), y[:270]] += 8  # 270 right; the last 30 rows land wherever the noise puts them
    predicted = logits.argmax(1)
    cm = quality(y, logits, 10).confusion_matrix
    expected = np.zeros((10, 10), dtype=bool)
    for true, pred in zip(y, predicted, strict=True):
        if true != pred:
            expected[true, pred] = True
    assert expected.any() and not expected.all()
    assert np.array_equal(confusion_error_cells(cm), expected)
    assert not confusion_error_cells(np.diag([5, 0, 3])).any()  # perfect, one class without rows: none
    path = tmp_path / "cm.png"
    plot_confusion_matrix(cm, path, "student on digits (test)")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="square"):
        confusion_error_cells([[1, 2, 3], [4, 5, 6]])


def _eval(role: str, acc: float, p99: float = 1.0) -> ModelEvaluation:
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
        latency_ms_p50_b1=p99 / 2,
        latency_ms_p99_b1=p99,
        throughput_ips_b64=1000.0,
    )


def test_gate_passes_when_every_check_passes() -> None:
    d = decide(_eval("student", 0.97), _eval("teacher", 0.98), GateConfig(), None)
    assert d.passed
    assert any("no champion" in r for r in d.reasons)


@pytest.mark.parametrize(
    ("student", "p99", "failed"),
    [(0.90, 1.0, {"min_accuracy", "max_accuracy_drop"}), (0.97, 80.0, {"max_latency_ms_p99"})],
)
def test_gate_rejects_with_reasons(student: float, p99: float, failed: set[str]) -> None:
    d = decide(_eval("student", student, p99), _eval("teacher", 0.98), GateConfig(), None)
    assert not d.passed
    assert {c.name for c in d.checks if not c.passed} == failed
    assert sum(r.startswith("FAIL") for r in d.reasons) == len(failed)


def test_gate_compares_with_the_champion_within_margin() -> None:
    cfg = GateConfig(champion_margin=0.01)
    worse = decide(_eval("student", 0.965), _eval("teacher", 0.98), cfg, Champion(version="3", accuracy=0.98))
    assert not worse.passed and worse.champion_version == "3"
    assert any("champion v3" in r and r.startswith("FAIL") for r in worse.reasons)
    close = decide(_eval("student", 0.975), _eval("teacher", 0.98), cfg, Champion(version="3", accuracy=0.98))
    assert close.passed


def test_gate_notes_a_champion_from_other_data() -> None:
    champion = Champion(version="1", accuracy=0.5, dataset_fingerprint="a")
    d = decide(
        _eval("student", 0.97), _eval("teacher", 0.98), GateConfig(), champion, dataset_fingerprint="b"
    )
    assert any("different dataset fingerprint" in r for r in d.reasons)


def _measured(
    candidate: dict[str, float], champion: dict[str, float], why: str | None = None
) -> SameDataAccuracy:
    return SameDataAccuracy(
        samples={s: 100 for s in candidate}, candidate=candidate, champion=champion, champion_unusable=why
    )


@pytest.mark.parametrize(
    ("candidate", "failed"),
    [
        ({"test": 0.95, "recent": 0.90}, set()),
        ({"test": 0.945, "recent": 0.895}, set()),  # within the margin on both
        ({"test": 0.93, "recent": 0.90}, {"champion"}),
        ({"test": 0.95, "recent": 0.85}, {"champion_recent"}),
        ({"test": 0.90, "recent": 0.80}, {"champion", "champion_recent"}),
    ],
)
def test_gate_compares_with_the_champion_on_the_same_rows(
    candidate: dict[str, float], failed: set[str]
) -> None:
    champion = Champion(version="4", accuracy=0.99)  # the recorded number plays no part once re-measured
    measured = _measured(candidate, {"test": 0.95, "recent": 0.90})
    d = decide(
        _eval("student", 0.96),
        _eval("teacher", 0.97),
        GateConfig(champion_margin=0.01),
        champion,
        None,
        measured,
    )
    assert {c.name for c in d.checks if not c.passed} == failed and d.passed == (not failed)
    by_name = {c.name: c for c in d.checks}
    assert by_name["champion"].value == candidate["test"] and by_name["champion"].threshold == pytest.approx(
        0.94
    )
    assert by_name["champion_recent"].threshold == pytest.approx(0.89)
    recent = by_name["champion_recent"].message
    assert (
        f"{candidate['recent']:.4f}" in recent and "champion v4 0.9000" in recent and "recent split" in recent
    )
    assert (d.candidate_accuracy, d.champion_accuracy) == (candidate, {"test": 0.95, "recent": 0.90})


def test_gate_without_a_recent_split_checks_the_test_split_only() -> None:
    measured = _measured({"test": 0.8}, {"test": 0.9})
    d = decide(
        _eval("student", 0.96),
        _eval("teacher", 0.97),
        GateConfig(),
        Champion(version="1", accuracy=0.5),
        None,
        measured,
    )
    assert [c.name for c in d.checks if c.name.startswith("champion")] == ["champion"]
    assert not d.passed and any("champion v1 0.9000 on the same rows" in r for r in d.reasons)


def test_gate_falls_back_to_the_recorded_accuracy_and_says_why() -> None:
    why = "the champion's model takes samples of shape [5], this data has [4]"
    measured = _measured({"test": 0.97, "recent": 0.97}, {}, why)
    d = decide(
        _eval("student", 0.96),
        _eval("teacher", 0.97),
        GateConfig(),
        Champion(version="2", accuracy=0.99),
        None,
        measured,
    )
    assert not d.passed and [c.name for c in d.checks if not c.passed] == ["champion"]
    (reason,) = [r for r in d.reasons if "champion v2" in r]
    assert "0.9600 vs champion v2 0.9900" in reason and why in reason and "recorded" in reason
    assert d.champion_accuracy == {} and d.candidate_accuracy == {"test": 0.97, "recent": 0.97}


def test_gate_records_the_candidate_numbers_without_a_champion() -> None:
    d = decide(
        _eval("student", 0.96),
        _eval("teacher", 0.97),
        GateConfig(),
        None,
        None,
        _measured({"test": 0.96, "recent": 0.7}, {}),
    )
    assert d.passed and d.candidate_accuracy["recent"] == 0.7 and d.champion_accuracy == {}
