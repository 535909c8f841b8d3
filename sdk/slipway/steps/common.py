"""What every step shares: the config handshake and the evaluation report the format steps write."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import BaseModel

from slipway.core.config import SlipwayConfig, validate_config
from slipway.core.logs import setup_logging
from slipway.core.summary import STEP_ERRORS_ENV
from slipway.evaluation.evaluate import ModelEvaluation
from slipway.evaluation.fairness import FairnessReport

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
    fairness: FairnessReport | None = None  # by group, teacher vs student, when the data carries group labels


def _report_failures() -> None:
    """Under `slipway run`, a step that fails appends its error to a file, so summary.json can name it."""
    path = os.environ.get(STEP_ERRORS_ENV)
    previous = sys.excepthook
    if not path or getattr(previous, "slipway", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        with open(path, "a") as f:
            f.write(json.dumps({"error": f"{kind.__name__}: {value}"}) + "\n")
        previous(kind, value, tb)

    hook.slipway = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def begin(config: dict[str, Any]) -> SlipwayConfig:
    """What every step does first: set up logging and error reporting, validate the config it was handed."""
    setup_logging()
    _report_failures()
    return validate_config(config)


def summary_view(e: ModelEvaluation, eager: ModelEvaluation | None = None) -> dict[str, Any]:
    """The few numbers of an evaluation that summary.json and the run's tags show."""
    view: dict[str, Any] = {f: getattr(e, f) for f in SUMMARY_FIELDS}
    if eager is not None:
        view["eager"] = {f: getattr(eager, f) for f in SUMMARY_FIELDS}
    return view
