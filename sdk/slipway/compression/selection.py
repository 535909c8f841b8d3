"""Format selection: among candidates within the accuracy budget, the fastest wins.

A candidate is eligible when it loses at most `compress.accuracy_budget_points` of test accuracy against the
source's FP32 ONNX model; among eligible ones the highest throughput at batch 64 wins, p99 latency at batch 1
breaking ties (within TIE_TOLERANCE).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from slipway.core.errors import NotFoundError
from slipway.evaluation.evaluate import ModelEvaluation

log = logging.getLogger(__name__)
TIE_TOLERANCE = 0.02  # throughputs within 2% are a tie on a shared machine; p99 decides


class Candidate(BaseModel):
    """One format the optimizer considered, measured or not, and why it was (not) eligible."""

    format: str
    eligible: bool
    accuracy_drop_points: float | None = None
    evaluation: ModelEvaluation | None = None
    note: str = ""


class Selection(BaseModel):
    """The chosen format and the reasons, kept in the run's tags and in summary.json's MLflow record."""

    chosen: str
    reference_accuracy: float
    budget_points: float
    reasons: list[str]
    candidates: list[Candidate]


def _rank_key(e: ModelEvaluation) -> tuple[float, float]:
    return (e.throughput_ips_b64, -e.latency_ms_p99_b1)


def choose(
    evaluations: dict[str, ModelEvaluation],
    reference_accuracy: float,
    budget_points: float,
    skipped: dict[str, str] | None = None,
) -> Selection:
    """Pick the fastest eligible candidate (batch-64 throughput, p99 as tiebreak); say why for every one."""
    candidates: list[Candidate] = []
    for fmt, e in evaluations.items():
        drop = (reference_accuracy - e.accuracy) * 100
        ok = drop <= budget_points + 1e-9
        note = "" if ok else f"accuracy drop {drop:.2f} points > budget {budget_points:.2f}"
        candidates.append(
            Candidate(format=fmt, eligible=ok, accuracy_drop_points=drop, evaluation=e, note=note)
        )
    for fmt, why in (skipped or {}).items():
        candidates.append(Candidate(format=fmt, eligible=False, note=why))
    eligible = [c for c in candidates if c.eligible and c.evaluation is not None]
    if not eligible:
        raise NotFoundError(
            f"no candidate format is within {budget_points:.2f} points of the source accuracy "
            f"{reference_accuracy:.4f}: " + "; ".join(f"{c.format}: {c.note}" for c in candidates)
        )
    top = max(c.evaluation.throughput_ips_b64 for c in eligible if c.evaluation)
    tied = [
        c for c in eligible if c.evaluation and c.evaluation.throughput_ips_b64 >= top * (1 - TIE_TOLERANCE)
    ]
    best = min(tied, key=lambda c: c.evaluation.latency_ms_p99_b1 if c.evaluation else float("inf"))
    assert best.evaluation is not None
    b = best.evaluation
    reasons = [
        f"chose {best.format}: {b.throughput_ips_b64:,.0f} img/s at batch 64, p99 {b.latency_ms_p99_b1:.3f} ms "
        f"at batch 1, accuracy {b.accuracy:.4f} ({best.accuracy_drop_points:+.2f} points vs source "
        f"{reference_accuracy:.4f}, budget {budget_points:.2f}), {b.size_bytes / 1024:,.0f} KiB"
    ]
    if len(tied) > 1:
        reasons.append(
            "tie within {:.0%} on throughput between {}: lowest p99 wins".format(
                TIE_TOLERANCE, ", ".join(c.format for c in tied)
            )
        )
    for c in candidates:
        if c is best:
            continue
        if c.evaluation is None:
            reasons.append(f"{c.format}: not measured ({c.note})")
        elif not c.eligible:
            reasons.append(f"{c.format}: excluded, {c.note}")
        else:
            e = c.evaluation
            reasons.append(
                f"{c.format}: {e.throughput_ips_b64:,.0f} img/s ({e.throughput_ips_b64 / b.throughput_ips_b64:.2f}x "
                f"the chosen), p99 {e.latency_ms_p99_b1:.3f} ms, accuracy {e.accuracy:.4f}"
            )
    return Selection(
        chosen=best.format,
        reference_accuracy=reference_accuracy,
        budget_points=budget_points,
        reasons=reasons,
        candidates=candidates,
    )
