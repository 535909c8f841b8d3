"""What every step shares: the config handshake and the evaluation report the format steps write."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from slipway.core.config import SlipwayConfig, validate_config
from slipway.core.logs import setup_logging
from slipway.evaluation.evaluate import ModelEvaluation

SUMMARY_FIELDS = (
    "format",
    "accuracy",
    "macro_f1",
    "params",
    "size_bytes",
    "latency_ms_p50_b1",
    "latency_ms_p99_b1",
    "throughput_ips_b64",
)


class EvaluationReport(BaseModel):
    """The candidates side by side on the same test data: teacher (ORT and eager) and student (ORT)."""

    dataset_fingerprint: str
    teacher: ModelEvaluation
    teacher_eager: ModelEvaluation
    student: ModelEvaluation


def begin(config: dict[str, Any]) -> SlipwayConfig:
    """What every step does first: validate the config it was handed and set up logging."""
    setup_logging()
    return validate_config(config)


def summary_view(e: ModelEvaluation, eager: ModelEvaluation | None = None) -> dict[str, Any]:
    """The few numbers of an evaluation that summary.json and the run's tags show."""
    view: dict[str, Any] = {f: getattr(e, f) for f in SUMMARY_FIELDS}
    if eager is not None:
        view["eager"] = {f: getattr(eager, f) for f in SUMMARY_FIELDS}
    return view
