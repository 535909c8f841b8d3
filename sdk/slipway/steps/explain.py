"""The explain step: attributions of the teacher and the chosen student on the test split, written as a folder
(explanation.json, report.md, report.html, figures) and logged into this pipeline run's MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path

from slipway import registry
from slipway.core import data as data_lib
from slipway.core.config import SlipwayConfig
from slipway.core.models import load_model
from slipway.evaluation.explain import ExplanationReport, explain, inline_figures

log = logging.getLogger(__name__)
ARTIFACT_DIR = "explain"  # in the MLflow run


def explanation_metrics(report: ExplanationReport) -> dict[str, float]:
    """The report's numbers as MLflow metrics (none when explanations are off)."""
    if not report.enabled:
        return {}
    metrics: dict[str, float] = {}
    if report.mean_rank_correlation is not None:
        metrics["explain_mean_rank_correlation"] = report.mean_rank_correlation
    for role, check in report.sanity.items():
        metrics[f"explain_sanity_passed_{role}"] = float(check.passed)
        metrics[f"explain_sanity_rank_correlation_{role}"] = check.rank_correlation
    for role, per in report.cost_ms_per_image.items():
        metrics |= {f"explain_ms_per_image_{method}_{role}": ms for method, ms in per.items()}
    return metrics


def explain_models(
    cfg: SlipwayConfig,
    run_id: str,
    dataset_path: Path,
    teacher_path: Path,
    student_path: Path,
    output_dir: Path,
    summary_path: Path,
) -> ExplanationReport:
    """Explain teacher and student (PyTorch checkpoints) on the test split into `output_dir`; `summary_path`
    gets report.md with its figures inlined (the KFP UI shows a Markdown artifact on its own)."""
    splits = data_lib.load_splits(dataset_path)
    teacher, _ = load_model(teacher_path)
    student, _ = load_model(student_path)
    report = explain(
        teacher,
        student,
        splits.x_test,
        splits.y_test,
        cfg.explain,
        output_dir,
        seed=cfg.seed,
        class_names=[str(k) for k in range(splits.num_classes)],
    )
    summary_path.write_text(inline_figures((output_dir / "report.md").read_text(), output_dir))
    for path in sorted(p for p in output_dir.iterdir() if p.is_file()):
        registry.log_artifact(cfg.registry, run_id, path, ARTIFACT_DIR)
    metrics = explanation_metrics(report)
    if metrics:
        registry.log_metrics(cfg.registry, run_id, metrics)
    if report.enabled:
        log.info(
            "explain: mean rank correlation %.3f (%s); sanity teacher %s, student %s; %.1f s",
            report.mean_rank_correlation,
            report.compared_method,
            "passed" if report.sanity["teacher"].passed else "FAILED",
            "passed" if report.sanity["student"].passed else "FAILED",
            report.seconds,
        )
    else:
        log.info("explain: skipped (%s)", report.reason)
    return report
