"""The release gate: absolute thresholds, the drop against the teacher, and the registry's champion."""

from __future__ import annotations

from pydantic import BaseModel

from slipway.core.config import GateConfig
from slipway.evaluation.evaluate import ModelEvaluation


class Champion(BaseModel):
    """The registry's current champion, as far as the gate needs it."""

    version: str
    accuracy: float
    dataset_fingerprint: str | None = None


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


def _check(name: str, ok: bool, value: float, threshold: float, message: str) -> GateCheck:
    return GateCheck(name=name, passed=ok, value=value, threshold=threshold, message=message)


def decide(
    student: ModelEvaluation,
    teacher: ModelEvaluation,
    cfg: GateConfig,
    champion: Champion | None = None,
    dataset_fingerprint: str | None = None,
) -> GateDecision:
    """Pass only when every check passes; the reasons say which checks failed and by how much."""
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
    if champion is not None:
        floor = champion.accuracy - cfg.champion_margin
        note = ""
        if dataset_fingerprint and champion.dataset_fingerprint not in (None, dataset_fingerprint):
            note = " (champion was evaluated on a different dataset fingerprint)"
        checks.append(
            _check(
                "champion",
                student.accuracy >= floor,
                student.accuracy,
                floor,
                f"accuracy {student.accuracy:.4f} vs champion v{champion.version} {champion.accuracy:.4f} "
                f"minus margin {cfg.champion_margin:.4f}{note}",
            )
        )
    passed = all(c.passed for c in checks)
    reasons = [("FAIL " if not c.passed else "ok   ") + c.message for c in checks]
    if champion is None:
        reasons.append("ok   no champion in the registry yet: this candidate may become the first")
    return GateDecision(
        passed=passed, reasons=reasons, checks=checks, champion_version=champion.version if champion else None
    )
