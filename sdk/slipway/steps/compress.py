"""The compression steps: export to ONNX, prune, quantize, build TensorRT, select the format, fetch a source.

Candidates: the source student in FP32 ONNX Runtime, the pruned student in FP32, INT8 QDQ and FP16, the pruned
student as an AOTInductor package (opt-in), and a TensorRT engine where a GPU is there;
`slipway.compression.selection` picks the fastest within the budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slipway import registry
from slipway.compression.onnx_export import check_parity, export_onnx, onnx_predict, ort_session
from slipway.compression.pruning import PruneReport, PruneTrial, prune_and_finetune
from slipway.compression.quantize import calibration_sample, convert_fp16, quantize_int8
from slipway.compression.selection import Selection, choose
from slipway.core import data as data_lib
from slipway.core.artifacts import metadata_path, read_metadata, sha256_file, write_metadata
from slipway.core.config import ModelSpec, PruneConfig, SlipwayConfig
from slipway.core.errors import ExportError, NotFoundError
from slipway.core.models import count_parameters, load_model, save_model
from slipway.evaluation.evaluate import (
    ModelEvaluation,
    evaluate_model,
    onnx_predictor,
    plot_confusion_matrix,
    torch_predictor,
)
from slipway.evaluation.fairness import evaluate_fairness
from slipway.steps.common import EvaluationReport
from slipway.steps.train import checkpoint_dir
from slipway.training.loop import predict_logits

log = logging.getLogger(__name__)


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


def _params(onnx_path: Path) -> int:
    return int(read_metadata(onnx_path).extra.get("params", 0))


def candidate_predictor(path: Path, threads: int | None) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """numpy in, logits out, in the runtime that serves the file: ONNX Runtime, or torch for a .pt2 package;
    with the runtime's name."""
    if read_metadata(path).framework == "aoti":
        from slipway.compression.aoti import aoti_predictor

        return aoti_predictor(path, threads), "torch-aoti"
    return onnx_predictor(path, threads), "onnxruntime"


def measure_candidate(
    fmt: str, role: str, path: Path, x: np.ndarray, y: np.ndarray, k: int, cfg: SlipwayConfig
) -> ModelEvaluation:
    """Quality and speed of one candidate file in the runtime that serves it (threads from `evaluate.threads`)."""
    ev = cfg.evaluate
    predict, runtime = candidate_predictor(path, ev.threads)
    return evaluate_model(role, fmt, runtime, predict, x, y, k, _params(path), path.stat().st_size, ev)


def produced(path: Path | None) -> bool:
    """A step output exists and came from Slipway (disabled outputs are empty files without a sidecar)."""
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        read_metadata(path)
    except NotFoundError:
        return False
    return True


def mark_skipped(path: Path, why: str) -> None:
    """KFP outputs must exist: a candidate not produced leaves a file holding why (and no sidecar)."""
    path.write_text(why)
    metadata_path(path).unlink(missing_ok=True)
    log.info("%s: skipped (%s)", path.name, why)


def skip_reason(path: Path | None) -> str:
    """Why an output was not produced, as its step wrote it with `mark_skipped`."""
    why = path.read_text(errors="replace").strip() if path is not None and path.is_file() else ""
    return why or "not produced"


# ----------------------------------------------------------------------------------------------------------
# Pipeline steps


def prune_student(
    cfg: SlipwayConfig,
    dataset_path: Path,
    model_path: Path,
    teacher_path: Path | None,
    output_path: Path,
) -> PruneReport:
    """Prune the student and fine-tune it by distillation from the teacher (the source itself when None).

    With `compress.prune.ratios` the ratio is searched: from the largest (the smallest model) down, the first
    whose fine-tuned validation accuracy stays within `max_drop_points` of the unpruned student's is kept, so the
    format selection after it still has the rest of the accuracy budget; when none does, the smallest ratio."""
    splits = data_lib.load_splits(dataset_path)
    student, payload = load_model(model_path)
    teacher = load_model(teacher_path)[0] if teacher_path is not None else load_model(model_path)[0]
    prune_cfg = cfg.compress.prune
    finetune = prune_cfg.finetune
    if finetune.checkpoint_dir is None and cfg.distill.checkpoint_dir is not None:
        finetune = finetune.model_copy(update={"checkpoint_dir": cfg.distill.checkpoint_dir})
    spec = ModelSpec.model_validate(payload["spec"])
    ratios = prune_cfg.ratios or [prune_cfg.ratio]
    source_digest = sha256_file(model_path)
    trials: list[PruneTrial] = []
    for ratio in ratios:
        tried = prune_cfg if prune_cfg.ratios is None else prune_cfg.model_copy(update={"ratio": ratio})
        # Resume only the same pruning of the same weights: the key names the source file and the prune config.
        key = hashlib.sha256((source_digest + tried.model_dump_json()).encode()).hexdigest()[:12]
        ckpt = checkpoint_dir(
            finetune, f"pruned-{key}", splits.fingerprint, spec, output_path.parent / f"prune-ckpt-{key}"
        )
        torch.manual_seed(cfg.seed)
        pruned, report = prune_and_finetune(
            student,
            teacher,
            (splits.x_train, splits.y_train, splits.x_val, splits.y_val),
            splits.input_shape,
            splits.num_classes,
            tried,
            cfg.seed,
            ckpt,
            finetune,
        )
        drop = (report.val_accuracy_before - report.val_accuracy_finetuned) * 100
        trials.append(
            PruneTrial(
                ratio=ratio,
                params_after=report.params_after,
                val_accuracy_finetuned=report.val_accuracy_finetuned,
                drop_points=drop,
                within_budget=drop <= prune_cfg.max_drop_points,
            )
        )
        if prune_cfg.ratios is not None:
            log.info("prune ratio %.2f: %s", ratio, _trial_line(trials[-1], prune_cfg.max_drop_points))
        if trials[-1].within_budget:
            break
    if prune_cfg.ratios is not None:
        report = report.model_copy(update={"search": trials, "reason": _prune_reason(trials, prune_cfg)})
        log.info("%s", report.reason)
    save_model(pruned, spec, splits.input_shape, splits.num_classes, output_path, pruning=report.model_dump())
    return report


def _trial_line(trial: PruneTrial, budget: float) -> str:
    verdict = "within" if trial.within_budget else "over"
    return (
        f"{trial.params_after:,} params, validation accuracy {trial.val_accuracy_finetuned:.4f}, "
        f"{trial.drop_points:.2f} points under the unpruned student ({verdict} the {budget:g}-point budget)"
    )


def _prune_reason(trials: list[PruneTrial], prune_cfg: PruneConfig) -> str:
    kept = trials[-1]
    line = _trial_line(kept, prune_cfg.max_drop_points)
    if kept.within_budget:
        larger = [f"{t.ratio:g}" for t in trials[:-1]]
        tried = f" ({', '.join(larger)} cost more)" if larger else ""
        return f"kept ratio {kept.ratio:g}, the largest within budget{tried}: {line}"
    return (
        f"no ratio of {[t.ratio for t in trials]} stayed within {prune_cfg.max_drop_points:g} points: kept the "
        f"smallest, {kept.ratio:g}: {line}"
    )


def quantize_onnx(
    cfg: SlipwayConfig, dataset_path: Path, onnx_path: Path, int8_path: Path, fp16_path: Path
) -> dict[str, Any]:
    """INT8 (static, QDQ) and FP16 from one FP32 ONNX model; one over budget is kept, marked rejected, and
    dropped by select_format with its numbers (never fails the step)."""
    splits = data_lib.load_splits(dataset_path)
    qcfg = cfg.compress.quantize
    threads = cfg.evaluate.threads
    x_parity = splits.x_val[: cfg.export.parity_samples]
    results: dict[str, Any] = {}
    if qcfg.int8:
        calib = calibration_sample(splits.x_train, qcfg.calibration_samples, cfg.seed)
        outcome = quantize_int8(
            onnx_path, int8_path, calib, x_parity, splits.x_test, splits.y_test, qcfg, threads
        )
        results["int8"] = outcome.model_dump(exclude={"artifact"})
    else:
        mark_skipped(int8_path, "compress.quantize.int8 is false")
    if qcfg.fp16:
        outcome = convert_fp16(onnx_path, fp16_path, x_parity, splits.x_test, splits.y_test, qcfg, threads)
        results["fp16"] = outcome.model_dump(exclude={"artifact"})
    else:
        mark_skipped(fp16_path, "compress.quantize.fp16 is false")
    return results


AOTI_CANDIDATE = "aoti-fp32"
# The ONNX model an AOTInductor candidate was compiled beside, from the same checkpoint: what the registry, the
# gate's champion comparison and the drift reference read when the package is the chosen (served) format.
ONNX_TWIN = {AOTI_CANDIDATE: "onnx-pruned-fp32"}


def compile_aoti_candidate(
    cfg: SlipwayConfig, dataset_path: Path, model_path: Path, package_path: Path
) -> dict[str, Any]:
    """The pruned student as an AOTInductor package (CPU, FP32), checked against eager PyTorch on validation data
    like the ONNX export, when `aoti-fp32` is in compress.candidates. A failed compile or parity check leaves the
    candidate out with why (select_format lists it) and never fails the run."""
    if AOTI_CANDIDATE not in cfg.compress.candidates:
        mark_skipped(package_path, f"{AOTI_CANDIDATE} is not in compress.candidates")
        return {"skipped": True}
    from slipway.compression.aoti import check_aoti_parity, compile_aoti

    model, _ = load_model(model_path)
    splits = data_lib.load_splits(dataset_path)
    try:
        with tempfile.TemporaryDirectory() as tmp:  # torch writes packages only to paths ending in .pt2
            compiled = Path(tmp) / "model.pt2"
            artifact = compile_aoti(model, splits.input_shape, compiled, "fp32", "cpu")
            shutil.copyfile(compiled, package_path)
        parity = check_aoti_parity(model, package_path, splits.x_val[: cfg.export.parity_samples], "fp32")
    except ExportError as err:
        mark_skipped(package_path, f"compile failed: {err}")
        return {"skipped": True, "error": str(err)}
    extra = {**artifact.extra, "params": count_parameters(model)}
    artifact = artifact.model_copy(update={"file": package_path.name, "extra": extra})
    write_metadata(package_path, artifact)
    return {"artifact": artifact.model_dump(), "parity": parity.__dict__}


def select_format(
    cfg: SlipwayConfig,
    dataset_path: Path,
    teacher_path: Path,
    teacher_onnx: Path,
    candidates: dict[str, Path | None],
    checkpoints: dict[str, Path],
    chosen_path: Path,
    checkpoint_path: Path,
    report_path: Path,
    selection_path: Path,
    confusion_png: Path,
    *,
    served_path: Path,
) -> tuple[EvaluationReport, Selection]:
    """Measure the teacher and every produced candidate on the test split; package the fastest in budget.

    `candidates` maps a format ("onnx-fp32" is the source and must be there) to its file (ONNX, or a .pt2 for
    aoti-fp32); `checkpoints` maps a format to the PyTorch checkpoint it came from, copied to `checkpoint_path`
    so that the registered version carries it and can be optimized again later. The chosen file goes to
    `served_path` (what Triton serves); `chosen_path` gets the ONNX model the registry holds: the chosen one, or
    for an AOTInductor package its ONNX twin (ONNX_TWIN: same checkpoint, both parity-checked against it).
    Writes an EvaluationReport (see slipway.steps.common), with the chosen candidate as the student, so that
    gate, register and package work unchanged.
    """
    splits = data_lib.load_splits(dataset_path)
    x, y, k = splits.x_test, splits.y_test, splits.num_classes
    ev = cfg.evaluate
    teacher_model, _ = load_model(teacher_path)
    params = count_parameters(teacher_model)
    teacher = evaluate_model(
        "teacher", "onnx-fp32", "onnxruntime", onnx_predictor(teacher_onnx, ev.threads), x, y, k, params,
        teacher_onnx.stat().st_size, ev,
    )  # fmt: skip
    teacher_eager = evaluate_model(
        "teacher", "pytorch-fp32", "torch-eager", torch_predictor(teacher_model, ev.threads), x, y, k, params,
        teacher_path.stat().st_size, ev,
    )  # fmt: skip
    allowed = set(cfg.compress.candidates)
    evaluations: dict[str, ModelEvaluation] = {}
    skipped: dict[str, str] = {}
    rejected: dict[str, str] = {}
    for fmt, path in candidates.items():
        if fmt not in allowed and fmt != "onnx-fp32":
            skipped[fmt] = "not in compress.candidates"
        elif not produced(path):
            skipped[fmt] = skip_reason(path)
        else:
            assert path is not None
            evaluations[fmt] = measure_candidate(fmt, "student", path, x, y, k, cfg)
            if (why := read_metadata(path).extra.get("rejected")) is not None:
                rejected[fmt] = why
    if "onnx-fp32" not in evaluations:
        raise NotFoundError("select_format needs the source model as candidate 'onnx-fp32'")
    reference = evaluations["onnx-fp32"].accuracy
    if "onnx-fp32" not in allowed:
        rejected["onnx-fp32"] = "not in compress.candidates (measured as the accuracy reference only)"
    selection = choose(evaluations, reference, cfg.compress.accuracy_budget_points, skipped, rejected)
    registered = ONNX_TWIN.get(selection.chosen, selection.chosen)
    for source_format, target in ((selection.chosen, served_path), (registered, chosen_path)):
        source = candidates.get(source_format)
        if not produced(source):
            raise NotFoundError(
                f"select_format: no {source_format} file for the chosen format {selection.chosen}"
            )
        assert source is not None
        shutil.copyfile(source, target)
        artifact = read_metadata(source)
        extra = {**artifact.extra, "format": source_format, "served_format": selection.chosen}
        write_metadata(target, artifact.model_copy(update={"file": target.name, "extra": extra}))
    student = evaluations[selection.chosen]
    fairness = evaluate_fairness(
        onnx_predictor(teacher_onnx, ev.threads), candidate_predictor(served_path, ev.threads)[0], x, y,
        splits.groups_of("test"), k,
    )  # fmt: skip
    report = EvaluationReport(
        dataset_fingerprint=splits.fingerprint,
        teacher=teacher,
        teacher_eager=teacher_eager,
        student=student,
        fairness=fairness,
    )
    report_path.write_text(report.model_dump_json(indent=2))
    selection_path.write_text(selection.model_dump_json(indent=2))
    plot_confusion_matrix(
        student.confusion_matrix, confusion_png, f"{selection.chosen} on {splits.name} (test)"
    )
    parent = checkpoints.get(selection.chosen)
    if parent is None or not parent.is_file():
        raise NotFoundError(f"select_format: no PyTorch checkpoint for the chosen format {selection.chosen}")
    shutil.copyfile(parent, checkpoint_path)
    for line in selection.reasons:
        log.info("optimizer: %s", line)
    return report, selection


def resolve_source(cfg: SlipwayConfig, run_id: str, model_path: Path) -> dict[str, Any]:
    """Fetch what the optimize pipeline starts from: `source.checkpoint`, or a registered version's checkpoint.

    Registered versions hold ONNX; the PyTorch parent that pruning needs is the checkpoint registered with the
    version, verified against its digest on download.
    """
    src = cfg.source
    if src.checkpoint is not None:
        path = Path(src.checkpoint)
        if not path.is_file():
            raise NotFoundError(f"source.checkpoint: {path} is not a file; expected a Slipway .pt checkpoint")
        load_model(path)  # fail early on a foreign file
        shutil.copyfile(path, model_path)
        origin: dict[str, Any] = {"checkpoint": str(path)}
    else:
        name = src.model_name or cfg.registry.model_name
        with tempfile.TemporaryDirectory() as tmp:
            local, mv = registry.download_checkpoint(
                cfg.registry, name, tmp, version=src.version, alias=src.alias
            )
            shutil.copyfile(local, model_path)
        origin = {"model_name": name, "version": mv.version, "source_run": mv.run_id}
    model, payload = load_model(model_path)
    origin |= {"params": count_parameters(model), "spec": payload["spec"]}
    registry.set_tags(cfg.registry, run_id, {"slipway.source": origin})
    return origin


def build_tensorrt_engine(
    cfg: SlipwayConfig,
    dataset_path: Path,
    onnx_path: Path,
    int8_onnx: Path | None,
    engine_path: Path,
) -> dict[str, Any]:
    """Build and check a TensorRT engine (GPU image only); what it built travels in the engine's metadata."""
    from slipway.compression.tensorrt import build_engine

    splits = data_lib.load_splits(dataset_path)
    trt_cfg = cfg.compress.tensorrt
    usable_int8 = (
        int8_onnx is not None and produced(int8_onnx) and "rejected" not in read_metadata(int8_onnx).extra
    )
    source = int8_onnx if trt_cfg.int8 and usable_int8 and int8_onnx is not None else onnx_path
    artifact = build_engine(source, engine_path, trt_cfg, splits.x_val[: cfg.export.parity_samples])
    return json.loads(artifact.model_dump_json())
