"""Evaluation metrics against scikit-learn, speed measurement, confusion PNG, and the gate's decisions."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from slipway.core.config import EvaluateConfig, GateConfig
from slipway.evaluation.evaluate import ModelEvaluation, measure_speed, plot_confusion_matrix, quality
from slipway.evaluation.gate import Champion, decide


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
