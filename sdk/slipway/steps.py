"""The pipeline's steps as plain functions over files: what each KFP component calls, and what tests call.

Each step takes the validated config and paths, writes its outputs, records what matters in the pipeline
run's MLflow run, and returns a small typed result for the component to expose.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from slipway import data as data_lib
from slipway import distributed, registry
from slipway.artifacts import read_metadata, verify_artifact, write_metadata
from slipway.config import DistributedConfig, ModelSpec, SlipwayConfig, TrainConfig, validate_config
from slipway.convert import check_parity, export_onnx, onnx_predict, ort_session
from slipway.evaluate import (
    ModelEvaluation,
    evaluate_model,
    onnx_predictor,
    plot_confusion_matrix,
    torch_predictor,
)
from slipway.gate import GateDecision, decide
from slipway.logs import setup_logging
from slipway.models import build_model, count_parameters, load_model, save_model
from slipway.training import TrainResult, predict_logits, train

log = logging.getLogger(__name__)
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


class DataInfo(BaseModel):
    run_id: str
    fingerprint: str
    input_shape: list[int]
    num_classes: int
    samples: dict[str, int]


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


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def prepare_data(cfg: SlipwayConfig, run_key: str, dataset_path: Path, reference_path: Path) -> DataInfo:
    """Load and split the data, save the splits and the drift reference, open the MLflow run."""
    splits = data_lib.load_dataset(cfg.data, cfg.seed)
    data_lib.save_splits(splits, dataset_path)
    data_lib.save_reference(splits, reference_path, cfg.data.reference_samples, cfg.seed)
    params = _flatten("", cfg.model_dump(mode="json"), {})
    run_id = registry.start_run(cfg.registry, run_key, cfg.registry.artifact_location, params)
    registry.set_tags(
        cfg.registry,
        run_id,
        {"slipway.dataset_fingerprint": splits.fingerprint, "slipway.dataset": splits.name},
    )
    samples = {s: len(splits.split(s)[1]) for s in data_lib.SPLITS}
    registry.log_metrics(cfg.registry, run_id, {f"data.{k}_samples": v for k, v in samples.items()})
    return DataInfo(
        run_id=run_id,
        fingerprint=splits.fingerprint,
        input_shape=list(splits.input_shape),
        num_classes=splits.num_classes,
        samples=samples,
    )


def _checkpoint_dir(cfg: TrainConfig, role: str, fingerprint: str, spec: ModelSpec, fallback: Path) -> Path:
    """A stable folder per (data, model, training config): rerunning the same work resumes from it."""
    if cfg.checkpoint_dir is None:
        return fallback
    key = json.dumps(
        [fingerprint, spec.model_dump(), cfg.model_dump(exclude={"checkpoint_dir"})], sort_keys=True
    )
    return Path(cfg.checkpoint_dir) / f"{role}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _fit(
    cfg: SlipwayConfig,
    role: str,
    run_id: str,
    dataset_path: Path,
    model_path: Path,
    teacher_path: Path | None,
) -> TrainResult:
    """Train (or distil) in this process, or on `workers` local DDP processes under torchrun."""
    train_cfg = cfg.train if teacher_path is None else cfg.distill
    if train_cfg.workers > 1 and not distributed.launched_by_torchrun():
        payload = distributed.launch(
            "slipway.steps:_fit_worker",
            {
                "config": cfg.model_dump(mode="json"),
                "role": role,
                "run_id": run_id,
                "dataset_path": str(dataset_path),
                "model_path": str(model_path),
                "teacher_path": None if teacher_path is None else str(teacher_path),
                "device": train_cfg.device,
            },
            train_cfg.workers,
            threads_per_process=train_cfg.num_threads or 1,
        )
        return TrainResult(**payload)
    return _fit_in_process(cfg, role, run_id, dataset_path, model_path, teacher_path)


def _fit_worker(
    config: dict[str, Any],
    role: str,
    run_id: str,
    dataset_path: str,
    model_path: str,
    teacher_path: str | None,
    device: str,
) -> dict[str, Any]:
    """One torchrun rank of `_fit` (called by slipway.distributed_worker); returns the result as JSON."""
    del device  # the worker joined the process group with it already
    result = _fit_in_process(
        validate_config(config),
        role,
        run_id,
        Path(dataset_path),
        Path(model_path),
        None if teacher_path is None else Path(teacher_path),
    )
    return dataclasses.asdict(result)


def _fit_in_process(
    cfg: SlipwayConfig,
    role: str,
    run_id: str,
    dataset_path: Path,
    model_path: Path,
    teacher_path: Path | None,
) -> TrainResult:
    """The training step proper; under DDP every rank runs it and rank 0 alone logs and writes the model."""
    splits = data_lib.load_splits(dataset_path)
    spec, train_cfg = (cfg.teacher, cfg.train) if teacher_path is None else (cfg.student, cfg.distill)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, splits.input_shape, splits.num_classes)
    teacher = load_model(teacher_path)[0] if teacher_path is not None else None
    # How many processes train, and on how many threads, changes nothing in the math: the checkpoint folder
    # ignores it, so a run resumes at another world size.
    resumable = train_cfg.model_copy(
        update={"workers": 1, "num_threads": None, "distributed": DistributedConfig.model_validate({})}
    )
    ckpt = _checkpoint_dir(
        resumable, role, splits.fingerprint, spec, model_path.parent / f"{role}-checkpoints"
    )
    is_main = distributed.current(train_cfg.device).is_main

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        registry.log_metrics(
            cfg.registry, run_id, {f"{role}.{k}": v for k, v in metrics.items() if k != "epoch"}, step=epoch
        )

    result = train(
        model,
        splits.x_train,
        splits.y_train,
        splits.x_val,
        splits.y_val,
        train_cfg,
        cfg.seed,
        ckpt,
        teacher=teacher,
        on_epoch=on_epoch,
        label=role,
    )
    if not is_main:
        return result
    save_model(model, spec, splits.input_shape, splits.num_classes, model_path)
    registry.log_metrics(
        cfg.registry,
        run_id,
        {
            f"{role}.best_val_accuracy": result.best_val_accuracy,
            f"{role}.epochs_run": result.epochs_run,
            f"{role}.params": count_parameters(model),
        },
    )
    return result


def train_teacher(cfg: SlipwayConfig, run_id: str, dataset_path: Path, model_path: Path) -> TrainResult:
    return _fit(cfg, "teacher", run_id, dataset_path, model_path, None)


def distill_student(
    cfg: SlipwayConfig, run_id: str, dataset_path: Path, teacher_path: Path, model_path: Path
) -> TrainResult:
    return _fit(cfg, "student", run_id, dataset_path, model_path, teacher_path)


def export_model(cfg: SlipwayConfig, model_path: Path, dataset_path: Path, onnx_path: Path) -> dict[str, Any]:
    """Export to ONNX and check parity with PyTorch on validation data; a failed check fails the step."""
    model, _ = load_model(model_path)
    splits = data_lib.load_splits(dataset_path)
    artifact = export_onnx(model, splits.input_shape, onnx_path, cfg.export.opset)
    # ONNX folds BatchNorm into convolutions, so the PyTorch parameter count travels in the metadata.
    artifact = artifact.model_copy(update={"extra": {"params": count_parameters(model)}})
    write_metadata(onnx_path, artifact)
    x = splits.x_val[: cfg.export.parity_samples]
    reference = predict_logits(model, x).numpy()
    candidate = onnx_predict(ort_session(onnx_path), x)
    parity = check_parity(
        reference,
        candidate,
        cfg.export.parity_atol,
        cfg.export.parity_min_agreement,
        f"ONNX export of {onnx_path.name}",
    )
    return {"artifact": artifact.model_dump(), "parity": parity.__dict__}


def evaluate_candidates(
    cfg: SlipwayConfig,
    run_id: str,
    dataset_path: Path,
    teacher_path: Path,
    teacher_onnx: Path,
    student_onnx: Path,
    report_path: Path,
    confusion_png: Path,
) -> EvaluationReport:
    """Measure teacher (ONNX Runtime and eager PyTorch) and student (ONNX Runtime) on the test split."""
    splits = data_lib.load_splits(dataset_path)
    x, y, k = splits.x_test, splits.y_test, splits.num_classes
    teacher_model, _ = load_model(teacher_path)
    params = count_parameters(teacher_model)
    student_params = int(read_metadata(student_onnx).extra["params"])
    ev = cfg.evaluate

    def measure(
        role: str, fmt: str, runtime: str, predictor: Any, n_params: int, path: Path
    ) -> ModelEvaluation:
        return evaluate_model(role, fmt, runtime, predictor, x, y, k, n_params, path.stat().st_size, ev)

    teacher = measure("teacher", "onnx-fp32", "onnxruntime", onnx_predictor(teacher_onnx, ev.threads), params,
                      teacher_onnx)  # fmt: skip
    teacher_eager = measure("teacher", "pytorch-fp32", "torch-eager", torch_predictor(teacher_model, ev.threads),
                            params, teacher_path)  # fmt: skip
    student = measure("student", "onnx-fp32", "onnxruntime", onnx_predictor(student_onnx, ev.threads),
                      student_params, student_onnx)  # fmt: skip
    report = EvaluationReport(
        dataset_fingerprint=splits.fingerprint, teacher=teacher, teacher_eager=teacher_eager, student=student
    )
    report_path.write_text(report.model_dump_json(indent=2))
    plot_confusion_matrix(student.confusion_matrix, confusion_png, f"student on {splits.name} (test)")
    metrics: dict[str, float] = {}
    for role, e in (("teacher", teacher), ("teacher_eager", teacher_eager), ("student", student)):
        metrics |= {f"{role}.{f}": float(getattr(e, f)) for f in SUMMARY_FIELDS if f != "format"}
    registry.log_metrics(cfg.registry, run_id, metrics)
    registry.set_tags(
        cfg.registry,
        run_id,
        {
            "slipway.teacher": _summary_view(teacher, teacher_eager),
            "slipway.student": _summary_view(student),
        },
    )
    registry.log_artifact(cfg.registry, run_id, report_path, "evaluation", "report.json")
    registry.log_artifact(cfg.registry, run_id, confusion_png, "evaluation", "confusion_matrix.png")
    return report


def _summary_view(e: ModelEvaluation, eager: ModelEvaluation | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {f: getattr(e, f) for f in SUMMARY_FIELDS}
    if eager is not None:
        view["eager"] = {f: getattr(eager, f) for f in SUMMARY_FIELDS}
    return view


def gate_candidate(cfg: SlipwayConfig, run_id: str, report_path: Path, decision_path: Path) -> GateDecision:
    """Decide against thresholds, the teacher and the registry's champion; the decision is data, not an error."""
    report = EvaluationReport.model_validate_json(report_path.read_text())
    decision = decide(
        report.student, report.teacher, cfg.gate, registry.champion(cfg.registry), report.dataset_fingerprint
    )
    decision_path.write_text(decision.model_dump_json(indent=2))
    registry.set_tags(
        cfg.registry, run_id, {"slipway.gate": {"passed": decision.passed, "reasons": decision.reasons}}
    )
    for line in decision.reasons:
        log.info("gate: %s", line)
    return decision


def register_candidate(
    cfg: SlipwayConfig, run_id: str, student_onnx: Path, report_path: Path, decision_path: Path
) -> registry.RegisteredVersion:
    """Register the student as a new version (alias challenger) with its lineage and gate outcome."""
    artifact = verify_artifact(student_onnx)
    report = EvaluationReport.model_validate_json(report_path.read_text())
    decision = GateDecision.model_validate_json(decision_path.read_text())
    tags = {
        "slipway.sha256": artifact.sha256,
        "slipway.source_run": run_id,
        "slipway.dataset_fingerprint": report.dataset_fingerprint,
        "slipway.accuracy": f"{report.student.accuracy:.6f}",
        "slipway.format": report.student.format,
        "slipway.gate_passed": str(decision.passed).lower(),
    }
    version = registry.register_onnx(cfg.registry, run_id, student_onnx, tags)
    registry.set_tags(cfg.registry, run_id, {"slipway.registry": version.model_dump()})
    return version


def promote_candidate(cfg: SlipwayConfig, run_id: str, version: str) -> registry.RegisteredVersion:
    promoted = registry.promote(cfg.registry, version)
    registry.set_tags(cfg.registry, run_id, {"slipway.registry": promoted.model_dump()})
    return promoted


def package_for_triton(cfg: SlipwayConfig, run_id: str, student_onnx: Path, repo_dir: Path) -> Path:
    """Write the Triton model repository for the student from its typed metadata."""
    from slipway.triton import write_model

    model_dir = write_model(repo_dir, cfg.registry.model_name, student_onnx, cfg.triton)
    registry.set_tags(cfg.registry, run_id, {"slipway.model_repository": str(repo_dir)})
    return model_dir
