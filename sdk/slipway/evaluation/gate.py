"""The release gate: absolute thresholds, the drop against the teacher, the registry's champion, and (when
configured) fairness rules over the groups of each sensitive feature.

The champion is compared on the same rows as the candidate: its registered model is run on this run's test split
(and recent split, when the data has one). Only when it cannot run on this data does the gate fall back to the
accuracy recorded when it was registered, measured on whatever test data that run had.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from slipway.core.config import GateConfig
from slipway.evaluation.evaluate import ModelEvaluation
from slipway.evaluation.fairness import FairnessReport

if TYPE_CHECKING:
    from slipway.core.data import DatasetSplits

CHAMPION_CHECKS = {"test": "champion", "recent": "champion_recent"}  # split -> name of its champion check


class Champion(BaseModel):
    """The registry's current champion, as far as the gate needs it."""

    version: str
    accuracy: float
    dataset_fingerprint: str | None = None


class SameDataAccuracy(BaseModel):
    """Accuracy the gate measured itself on this run's splits ("test", and "recent" when the data has one):
    the candidate's always, the champion's when its model could run on this data (else `champion_unusable`
    says why, and the gate uses the champion's recorded accuracy instead)."""

    samples: dict[str, int]
    candidate: dict[str, float]
    champion: dict[str, float] = {}
    champion_unusable: str | None = None


class GateCheck(BaseModel):
    name: str
    passed: bool
    value: float
    threshold: float
    message: str


class GateDecision(BaseModel):
    passed: bool
    reasons: list[str]
    checks: list[GateCheck]
    champion_version: str | None = None
    # Measured by the gate on this run's splits; champion_accuracy is empty when the champion was not re-run.
    candidate_accuracy: dict[str, float] = {}
    champion_accuracy: dict[str, float] = {}


def _check(name: str, ok: bool, value: float, threshold: float, message: str) -> GateCheck:
    return GateCheck(name=name, passed=ok, value=value, threshold=threshold, message=message)


def decide(
    student: ModelEvaluation,
    teacher: ModelEvaluation,
    cfg: GateConfig,
    champion: Champion | None = None,
    dataset_fingerprint: str | None = None,
    measured: SameDataAccuracy | None = None,
    fairness: FairnessReport | None = None,
) -> GateDecision:
    """Pass only when every check passes; the reasons say which checks failed and by how much.

    With `measured` champion numbers the champion checks compare both models on the same splits (`champion` on
    the test split, `champion_recent` on the recent one); without them, against the champion's recorded accuracy.
    The fairness rules (off unless set) read `fairness`, the evaluation report's per-group section.
    """
    drop = teacher.accuracy - student.accuracy
    checks = [
        _check(
            "min_accuracy",
            student.accuracy >= cfg.min_accuracy,
            student.accuracy,
            cfg.min_accuracy,
            f"accuracy {student.accuracy:.4f} vs minimum {cfg.min_accuracy:.4f}",
        ),
        _check(
            "max_accuracy_drop",
            drop <= cfg.max_accuracy_drop,
            drop,
            cfg.max_accuracy_drop,
            f"accuracy drop vs teacher {drop * 100:.2f} points vs allowed {cfg.max_accuracy_drop * 100:.2f}",
        ),
        _check(
            "max_latency_ms_p99",
            student.latency_ms_p99_b1 <= cfg.max_latency_ms_p99,
            student.latency_ms_p99_b1,
            cfg.max_latency_ms_p99,
            f"p99 latency at batch 1 {student.latency_ms_p99_b1:.3f} ms vs limit {cfg.max_latency_ms_p99} ms",
        ),
    ]
    checks += fairness_checks(cfg, fairness)
    if champion is not None:
        if measured is not None and measured.champion:
            checks += _same_data_checks(champion, measured, cfg.champion_margin)
        else:
            checks.append(
                _recorded_check(student, champion, cfg.champion_margin, dataset_fingerprint, measured)
            )
    passed = all(c.passed for c in checks)
    reasons = [("FAIL " if not c.passed else "ok   ") + c.message for c in checks]
    if champion is None:
        reasons.append("ok   no champion in the registry yet: this candidate may become the first")
    return GateDecision(
        passed=passed,
        reasons=reasons,
        checks=checks,
        champion_version=champion.version if champion else None,
        candidate_accuracy=measured.candidate if measured else {},
        champion_accuracy=measured.champion if measured and champion else {},
    )


def fairness_checks(cfg: GateConfig, fairness: FairnessReport | None) -> list[GateCheck]:
    """One check per configured fairness rule and sensitive feature; a rule set for data without group labels
    fails, since the gate cannot vouch for what it was asked to check."""
    configured = {
        "min_worst_group_accuracy": cfg.min_worst_group_accuracy,
        "max_group_accuracy_gap": cfg.max_group_accuracy_gap,
        "max_worst_group_drop_vs_teacher": cfg.max_worst_group_drop_vs_teacher,
    }
    rules = {rule: limit for rule, limit in configured.items() if limit is not None}
    if not rules:
        return []
    if fairness is None or not fairness.features:
        return [
            _check(rule, False, 0.0, limit, f"gate.{rule} is set but the data carries no group labels "
                   "(data.sensitive_features, NPZ arrays group_<name>): nothing to check")
            for rule, limit in rules.items()
        ]  # fmt: skip
    checks = []
    for f in fairness.features:
        student, teacher = f.student, f.teacher
        worst = student.group(student.worst_group)
        where = f"{f.feature}={student.worst_group} ({worst.count} rows)"
        if (limit := rules.get("min_worst_group_accuracy")) is not None:
            checks.append(
                _check(
                    f"min_worst_group_accuracy[{f.feature}]",
                    student.worst_group_accuracy >= limit,
                    student.worst_group_accuracy,
                    limit,
                    f"worst group {where}: accuracy {student.worst_group_accuracy:.4f} vs minimum {limit:.4f}",
                )
            )
        if (limit := rules.get("max_group_accuracy_gap")) is not None:
            checks.append(
                _check(
                    f"max_group_accuracy_gap[{f.feature}]",
                    student.accuracy_gap <= limit,
                    student.accuracy_gap,
                    limit,
                    f"accuracy gap across {f.feature} groups {student.accuracy_gap * 100:.2f} points "
                    f"({student.best_group} {student.group(student.best_group).accuracy:.4f} vs "
                    f"{student.worst_group} {student.worst_group_accuracy:.4f}) vs allowed {limit * 100:.2f}",
                )
            )
        if (limit := rules.get("max_worst_group_drop_vs_teacher")) is not None:
            drop = teacher.worst_group_accuracy - student.worst_group_accuracy
            checks.append(
                _check(
                    f"max_worst_group_drop_vs_teacher[{f.feature}]",
                    drop <= limit,
                    drop,
                    limit,
                    f"worst-group accuracy drop vs teacher {drop * 100:.2f} points (student: {where} "
                    f"{student.worst_group_accuracy:.4f}; teacher: {f.feature}={teacher.worst_group} "
                    f"{teacher.worst_group_accuracy:.4f}) vs allowed {limit * 100:.2f}",
                )
            )
    return checks


def _same_data_checks(champion: Champion, measured: SameDataAccuracy, margin: float) -> list[GateCheck]:
    checks = []
    for split, name in CHAMPION_CHECKS.items():
        if split not in measured.champion:
            continue
        ours, theirs = measured.candidate[split], measured.champion[split]
        floor = theirs - margin
        checks.append(
            _check(
                name,
                ours >= floor,
                ours,
                floor,
                f"{split} split ({measured.samples[split]} rows): accuracy {ours:.4f} vs champion "
                f"v{champion.version} {theirs:.4f} on the same rows, minus margin {margin:.4f}",
            )
        )
    return checks


def _recorded_check(
    student: ModelEvaluation,
    champion: Champion,
    margin: float,
    dataset_fingerprint: str | None,
    measured: SameDataAccuracy | None,
) -> GateCheck:
    """Today's comparison when the champion could not be re-run: its accuracy as recorded at registration."""
    floor = champion.accuracy - margin
    note = ""
    if measured is not None and measured.champion_unusable:
        note = f" (recorded at its registration: {measured.champion_unusable})"
    elif dataset_fingerprint and champion.dataset_fingerprint not in (None, dataset_fingerprint):
        note = " (champion was evaluated on a different dataset fingerprint)"
    return _check(
        "champion",
        student.accuracy >= floor,
        student.accuracy,
        floor,
        f"accuracy {student.accuracy:.4f} vs champion v{champion.version} {champion.accuracy:.4f} "
        f"minus margin {margin:.4f}{note}",
    )


def measure_on_same_data(
    candidate_onnx: str | Path,
    champion_onnx: str | Path | None,
    splits: DatasetSplits,
    threads: int | None = None,
) -> SameDataAccuracy:
    """Run the candidate, and the champion when given, on the test split and the recent split (when present).

    A champion that cannot run on this data (another input shape, class count, or a runtime error) is reported
    in `champion_unusable`, not raised: the gate then falls back to its recorded accuracy.
    """
    from slipway.compression.onnx_export import onnx_predict, ort_session

    data = {s: splits.split(s) for s in CHAMPION_CHECKS if s != "recent" or splits.has_recent}
    data = {s: xy for s, xy in data.items() if len(xy[1])}
    session = ort_session(candidate_onnx, threads)
    logits = {s: onnx_predict(session, x) for s, (x, _) in data.items()}
    measured = SameDataAccuracy(
        samples={s: len(y) for s, (_, y) in data.items()},
        candidate={s: _accuracy(logits[s], y) for s, (_, y) in data.items()},
    )
    if champion_onnx is None or not data:
        return measured
    classes = next(iter(logits.values())).shape[1]
    champion, why = _run_champion(Path(champion_onnx), data, splits.input_shape, classes, threads)
    return measured.model_copy(update={"champion": champion, "champion_unusable": why})


def _run_champion(
    path: Path,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    input_shape: tuple[int, ...],
    classes: int,
    threads: int | None,
) -> tuple[dict[str, float], str | None]:
    """The champion's accuracy per split, or ({}, why it cannot run on this data)."""
    from slipway.compression.onnx_export import onnx_predict, ort_session

    session = ort_session(path, threads)
    dims = list(session.get_inputs()[0].shape)[1:]
    fixed = [d if isinstance(d, int) else None for d in dims]
    if len(dims) != len(input_shape) or any(
        d not in (None, w) for d, w in zip(fixed, input_shape, strict=True)
    ):
        shown = [d if isinstance(d, int) else "?" for d in dims]
        return {}, f"the champion's model takes samples of shape {shown}, this data has {list(input_shape)}"
    accuracy = {}
    for split, (x, y) in data.items():
        try:
            logits = onnx_predict(session, x)
        except Exception as err:  # onnxruntime raises its own types for a wrong shape or dtype
            return {}, f"the champion's model cannot run on this data: {type(err).__name__}: {err}"
        if logits.ndim != 2 or logits.shape[1] != classes:
            width = logits.shape[1] if logits.ndim == 2 else list(logits.shape[1:])
            return {}, f"the champion's model scores {width} classes per row, the candidate {classes}"
        accuracy[split] = _accuracy(logits, y)
    return accuracy, None


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())
