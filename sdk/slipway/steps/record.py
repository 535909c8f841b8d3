"""The record step: put what the cached steps produced into this pipeline run's MLflow run.

The cached steps write their numbers into their outputs (artifact metadata and files); this uncached step logs
them, so every pipeline run has its own complete MLflow run even when every step before it was a cache hit.
Lineage: each input's URI is tagged `slipway.artifact.<name>`, and `slipway.produced_by.<name>` names the
MLflow run that first recorded that URI, the run that produced a cached model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway import registry
from slipway.compression.selection import Selection
from slipway.core.config import SlipwayConfig
from slipway.evaluation.fairness import FairnessReport, fairness_metrics, write_fairness_table
from slipway.steps.common import EvaluationReport, summary_view

log = logging.getLogger(__name__)
ARTIFACT_TAG = "slipway.artifact."
PRODUCED_BY_TAG = "slipway.produced_by."


@dataclass
class Produced:
    """One upstream output as this step sees it: where it lives, its file, and the metadata its step wrote."""

    uri: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def _numbers(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    return {
        f"{prefix}.{k}": float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def producer_run(cfg: SlipwayConfig, name: str, uri: str, run_id: str) -> str:
    """The MLflow run that first recorded this artifact URI (a cache hit reuses the producer's URI)."""
    client = registry.mlflow_client(cfg.registry)
    experiment = client.get_experiment_by_name(cfg.registry.experiment)
    if experiment is None:
        return run_id
    quoted = uri.replace("'", "\\'")
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{ARTIFACT_TAG}{name}` = '{quoted}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return str(runs[0].info.run_id) if runs else run_id


def record_lineage(cfg: SlipwayConfig, run_id: str, inputs: dict[str, Produced]) -> dict[str, str]:
    """Tag each input's URI and the run that produced it; returns name -> producing MLflow run id."""
    produced_by = {name: producer_run(cfg, name, p.uri, run_id) for name, p in inputs.items()}
    tags: dict[str, Any] = {f"{ARTIFACT_TAG}{name}": p.uri for name, p in inputs.items()}
    tags |= {f"{PRODUCED_BY_TAG}{name}": producer for name, producer in produced_by.items()}
    registry.set_tags(cfg.registry, run_id, tags)
    reused = sorted(name for name, producer in produced_by.items() if producer != run_id)
    if reused:
        log.info("cached outputs reused from earlier runs: %s", ", ".join(reused))
    return produced_by


def record_training(cfg: SlipwayConfig, run_id: str, role: str, metadata: dict[str, Any]) -> None:
    """A trained model's history (one MLflow step per epoch) and outcome."""
    for row in metadata.get("history") or []:
        epoch = int(row.get("epoch", 0))
        registry.log_metrics(
            cfg.registry, run_id, _numbers(role, {k: v for k, v in row.items() if k != "epoch"}), step=epoch
        )
    outcome: dict[str, Any] = {
        k: metadata[k] for k in ("best_val_accuracy", "epochs_run", "params") if k in metadata
    }
    registry.log_metrics(cfg.registry, run_id, _numbers(role, outcome))


def record_fairness(cfg: SlipwayConfig, run_id: str, report: FairnessReport) -> None:
    """Per-group numbers as metrics (`fairness.<feature>.<model>...`) and the per-group table as a CSV."""
    import tempfile

    registry.log_metrics(cfg.registry, run_id, fairness_metrics(report))
    with tempfile.TemporaryDirectory(prefix="slipway-fairness-") as tmp:
        table = write_fairness_table(report, Path(tmp) / "fairness.csv")
        registry.log_artifact(cfg.registry, run_id, table, "evaluation")


@dataclass
class ChosenEvaluation:
    """The chosen candidate's evaluation as the KFP UI shows it: a Metrics and a ClassificationMetrics artifact."""

    metrics: dict[str, float]
    class_names: list[str]
    confusion_matrix: list[list[int]]


def chosen_evaluation(evaluation: EvaluationReport) -> ChosenEvaluation:
    """The packaged candidate (the report's student) on the test split, beside the teacher it came from."""
    chosen, teacher = evaluation.student, evaluation.teacher
    metrics = {
        name: float(getattr(chosen, name))
        for name in ("accuracy", "macro_f1", "params", "size_bytes", "latency_ms_p50_b1", "latency_ms_p99_b1")
    }
    metrics |= {
        "throughput_ips_b64": chosen.throughput_ips_b64,
        "teacher_accuracy": teacher.accuracy,
        "accuracy_drop_points": 100 * (teacher.accuracy - chosen.accuracy),
    }
    names = [str(label) for label in range(len(chosen.confusion_matrix))]  # datasets carry class indices
    return ChosenEvaluation(metrics, names, chosen.confusion_matrix)


def record_run(
    cfg: SlipwayConfig,
    run_id: str,
    dataset: Produced,
    models: dict[str, Produced],
    quantized: dict[str, Produced],
    report: Produced,
    selection: Produced,
    confusion_matrix: Produced,
) -> ChosenEvaluation:
    """Log the data, training, pruning, quantization and selection outcomes, their files and their lineage;
    returns the chosen candidate's numbers and confusion matrix for the pipeline UI.

    `models` maps a role (teacher, student, pruned) to its checkpoint; `quantized` a precision to its ONNX.
    """
    reg = cfg.registry
    data = dataset.metadata
    registry.set_tags(
        reg,
        run_id,
        {"slipway.dataset_fingerprint": data.get("fingerprint", ""), "slipway.dataset": data.get("name", "")},
    )
    registry.log_metrics(
        reg, run_id, _numbers("data", {f"{k}_samples": v for k, v in data.get("samples", {}).items()})
    )
    for role, model in models.items():
        if model.metadata.get("history") is not None:
            record_training(cfg, run_id, role, model.metadata)
    if (pruned := models.get("pruned")) is not None and "params_after" in pruned.metadata:
        m = pruned.metadata
        registry.log_metrics(
            reg,
            run_id,
            {
                "pruned.params": m["params_after"],
                "pruned.macs": m.get("macs_after", 0),
                "pruned.sparsity": m.get("sparsity", 0.0),
                "pruned.val_accuracy": m.get("val_accuracy_finetuned", 0.0),
            },
        )
        pruning = {k: v for k, v in m.items() if k not in ("framework", "role", "channels")}
        registry.set_tags(reg, run_id, {"slipway.pruning": pruning})
    for precision, onnx in quantized.items():
        m = onnx.metadata
        if m.get("skipped"):
            continue
        keys = ("accuracy", "accuracy_delta_points", "top1_agreement")
        registry.log_metrics(reg, run_id, _numbers(precision, {k: m[k] for k in keys if k in m}))
        if m.get("rejected"):
            registry.set_tags(reg, run_id, {f"slipway.quantize.{precision}.rejected": m["rejected"]})
    evaluation = EvaluationReport.model_validate_json(report.path.read_text())
    chosen = Selection.model_validate_json(selection.path.read_text())
    metrics: dict[str, float] = {}
    for role, e in (
        ("teacher", evaluation.teacher),
        ("teacher_eager", evaluation.teacher_eager),
        ("student", evaluation.student),
    ):
        metrics |= _numbers(role, summary_view(e))
    for c in chosen.candidates:
        if c.evaluation is not None:
            metrics |= _numbers(f"candidate.{c.format}", summary_view(c.evaluation))
    registry.log_metrics(reg, run_id, metrics)
    registry.set_tags(
        reg,
        run_id,
        {
            "slipway.teacher": summary_view(evaluation.teacher, evaluation.teacher_eager),
            "slipway.student": summary_view(evaluation.student),
            "slipway.optimize": {"chosen": chosen.chosen, "reasons": chosen.reasons},
        },
    )
    registry.log_artifact(reg, run_id, report.path, "evaluation", "report.json")
    registry.log_artifact(reg, run_id, selection.path, "evaluation", "selection.json")
    registry.log_artifact(reg, run_id, confusion_matrix.path, "evaluation", "confusion_matrix.png")
    if evaluation.fairness is not None:
        record_fairness(cfg, run_id, evaluation.fairness)
    inputs = {"dataset": dataset, **models, **quantized, "report": report}
    record_lineage(cfg, run_id, inputs)
    log.info("recorded %s into MLflow run %s", ", ".join(inputs), run_id)
    return chosen_evaluation(evaluation)
