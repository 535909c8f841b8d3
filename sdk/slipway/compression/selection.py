"""Format selection: among candidates within the accuracy budget, the fastest wins; FP32 ONNX is the floor.

A candidate is eligible when it loses at most `compress.accuracy_budget_points` of test accuracy against the
source's FP32 ONNX model and no earlier step rejected it (INT8 or FP16 over the quantize budget); among eligible
ones the highest throughput at batch 64 wins, p99 latency at batch 1 breaking ties (within TIE_TOLERANCE).
A dropped candidate never fails the run: it stays listed with its numbers and why, and when none is eligible the
measured FP32 ONNX model (FLOOR) is chosen.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from slipway.core.errors import NotFoundError
from slipway.evaluation.evaluate import ModelEvaluation

log = logging.getLogger(__name__)
TIE_TOLERANCE = 0.02  # throughputs within 2% are a tie on a shared machine; p99 decides
FLOOR = "onnx-fp32"  # the source's FP32 ONNX model: chosen when nothing else is eligible


class Candidate(BaseModel):
    """One format the optimizer considered, measured or not, and why it was (not) eligible."""

    format: str
    eligible: bool
    accuracy_drop_points: float | None = None
    evaluation: ModelEvaluation | None = None
    note: str = ""
    rejected: str | None = None  # why an earlier step rejected it, as the caller passed it (also in `note`)


class Selection(BaseModel):
    """The chosen format and the reasons, kept in the run's tags and in summary.json's MLflow record."""

    chosen: str
    reference_accuracy: float
    budget_points: float
    reasons: list[str]
    candidates: list[Candidate]
    floor: bool = False  # True when `chosen` is FLOOR because no candidate was eligible


def _numbers(c: Candidate) -> str:
    """A dropped candidate's measurements, so the report shows what was given up and by how much."""
    assert c.evaluation is not None and c.accuracy_drop_points is not None
    e = c.evaluation
    return (
        f"accuracy {e.accuracy:.4f}, drop {c.accuracy_drop_points:.2f} points, "
        f"{e.throughput_ips_b64:,.0f} img/s at batch 64, p99 {e.latency_ms_p99_b1:.3f} ms"
    )


def _candidates(
    evaluations: dict[str, ModelEvaluation],
    reference_accuracy: float,
    budget_points: float,
    skipped: dict[str, str],
    rejected: dict[str, str],
) -> list[Candidate]:
    candidates: list[Candidate] = []
    for fmt, e in evaluations.items():
        drop = (reference_accuracy - e.accuracy) * 100
        within = drop <= budget_points + 1e-9
        why = rejected.get(fmt, skipped.get(fmt))  # a measured format in `skipped` counts as rejected
        notes = [why] if why is not None else []
        if not within:
            notes.append(f"accuracy drop {drop:.2f} points > budget {budget_points:.2f}")
        candidates.append(
            Candidate(
                format=fmt,
                eligible=within and why is None,
                accuracy_drop_points=drop,
                evaluation=e,
                note="; ".join(notes),
                rejected=why,
            )
        )
    for fmt, why in rejected.items():
        if fmt not in evaluations:
            candidates.append(Candidate(format=fmt, eligible=False, note=why, rejected=why))
    for fmt, why in skipped.items():
        if fmt not in evaluations and fmt not in rejected:
            candidates.append(Candidate(format=fmt, eligible=False, note=why))
    return candidates


def choose(
    evaluations: dict[str, ModelEvaluation],
    reference_accuracy: float,
    budget_points: float,
    skipped: dict[str, str] | None = None,
    rejected: dict[str, str] | None = None,
) -> Selection:
    """Pick the fastest eligible candidate (batch-64 throughput, p99 as tiebreak), else FLOOR; say why for each.

    `skipped`: formats not measured, with why. `rejected`: formats an earlier step rejected (measured or not),
    with why; measured ones keep their numbers. Raises NotFoundError only when nothing is eligible and FLOOR
    was not measured.
    """
    candidates = _candidates(evaluations, reference_accuracy, budget_points, skipped or {}, rejected or {})
    eligible = [c for c in candidates if c.eligible]
    if eligible:
        top = max(c.evaluation.throughput_ips_b64 for c in eligible if c.evaluation)
        tied = [
            c
            for c in eligible
            if c.evaluation and c.evaluation.throughput_ips_b64 >= top * (1 - TIE_TOLERANCE)
        ]
        best = min(tied, key=lambda c: c.evaluation.latency_ms_p99_b1 if c.evaluation else float("inf"))
        head = f"chose {best.format}"
    else:
        floor = next((c for c in candidates if c.format == FLOOR and c.evaluation is not None), None)
        if floor is None:
            raise NotFoundError(
                f"no candidate format is within {budget_points:.2f} points of the source accuracy "
                f"{reference_accuracy:.4f}, and the floor {FLOOR} (the source's FP32 ONNX model) was not "
                "measured: " + "; ".join(f"{c.format}: {c.note}" for c in candidates)
            )
        best, tied = floor, [floor]
        others = ", ".join(c.format for c in candidates if c is not floor) or "no other format"
        head = f"chose {best.format} as the floor (none of {others} is eligible, see below)"
    assert best.evaluation is not None and best.accuracy_drop_points is not None
    b = best.evaluation
    reasons = [
        f"{head}: {b.throughput_ips_b64:,.0f} img/s at batch 64, p99 {b.latency_ms_p99_b1:.3f} ms "
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
            reasons.append(f"{c.format}: excluded, {c.note} ({_numbers(c)})")
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
        floor=not eligible,
    )
