"""The release steps: gate the candidate, register it, promote it, package it for Triton."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from slipway import registry
from slipway.core import data as data_lib
from slipway.core.artifacts import sha256_file, verify_artifact
from slipway.core.config import SlipwayConfig
from slipway.core.errors import ArtifactIntegrityError
from slipway.evaluation.gate import GateDecision, decide
from slipway.evaluation.model_card import ModelCard, ModelDetails, build_card, read_explanation, write_card
from slipway.steps.common import EvaluationReport

log = logging.getLogger(__name__)


def gate_candidate(
    cfg: SlipwayConfig,
    run_id: str,
    report_path: Path,
    decision_path: Path,
    *,
    dataset_path: Path | None = None,
    candidate_onnx: Path | None = None,
) -> GateDecision:
    """Decide against thresholds, the teacher and the registry's champion; the decision is data, not an error.

    Given this run's dataset and the candidate's ONNX, the champion's registered ONNX is downloaded and both run
    on the test split (and the recent split, when the data has one), so the champion is judged on the same rows;
    otherwise, or when it cannot run on this data, the gate uses the champion's recorded accuracy.
    """
    import tempfile

    from slipway.core.errors import DataError
    from slipway.evaluation.gate import SameDataAccuracy, measure_on_same_data

    report = EvaluationReport.model_validate_json(report_path.read_text())
    champion = registry.champion(cfg.registry)
    measured: SameDataAccuracy | None = None
    if dataset_path is not None and candidate_onnx is not None:
        verify_artifact(candidate_onnx)
        splits = data_lib.load_splits(dataset_path)
        if splits.fingerprint != report.dataset_fingerprint:
            raise DataError(
                f"gate: the report was measured on dataset {report.dataset_fingerprint[:12]}, "
                f"but the gate was given {splits.name} {splits.fingerprint[:12]}"
            )
        with tempfile.TemporaryDirectory(prefix="slipway-champion-") as tmp:
            champion_onnx = registry.download_model(cfg.registry, champion.version, tmp) if champion else None
            measured = measure_on_same_data(candidate_onnx, champion_onnx, splits, cfg.evaluate.threads)
        metrics = {f"gate.{split}_accuracy": acc for split, acc in measured.candidate.items()}
        metrics |= {f"gate.champion_{split}_accuracy": acc for split, acc in measured.champion.items()}
        registry.log_metrics(cfg.registry, run_id, metrics)
    decision = decide(
        report.student,
        report.teacher,
        cfg.gate,
        champion,
        report.dataset_fingerprint,
        measured,
        report.fairness,
    )
    decision_path.write_text(decision.model_dump_json(indent=2))
    registry.set_tags(
        cfg.registry, run_id, {"slipway.gate": {"passed": decision.passed, "reasons": decision.reasons}}
    )
    for line in decision.reasons:
        log.info("gate: %s", line)
    return decision


def register_candidate(
    cfg: SlipwayConfig,
    run_id: str,
    student_onnx: Path,
    checkpoint: Path,
    dataset_path: Path,
    report_path: Path,
    decision_path: Path,
    *,
    selection_path: Path | None = None,
    explanation_dir: Path | None = None,
    teacher_path: Path | None = None,
    card_dir: Path | None = None,
    served_path: Path | None = None,
) -> registry.RegisteredVersion:
    """Register the student as a new version (alias challenger) with its lineage, gate outcome, signature and
    input example, and the PyTorch checkpoint it came from (so that it can be optimized again).

    With `card_dir`, the version's model card is written there and logged with it (docs/model-card.md), from
    this run's files: the selection report, the explain step's folder and the teacher's checkpoint add their
    sections (a missing one is "not computed"). `served_path`: the file Triton will serve when it is not
    `student_onnx` itself (an AOTInductor package registered through its ONNX twin), named in the card.
    """
    verify_artifact(student_onnx)
    report = EvaluationReport.model_validate_json(report_path.read_text())
    decision = GateDecision.model_validate_json(decision_path.read_text())
    splits = data_lib.load_splits(dataset_path)
    tags = {
        "slipway.source_run": run_id,
        "slipway.dataset_fingerprint": report.dataset_fingerprint,
        "slipway.accuracy": f"{report.student.accuracy:.6f}",
        "slipway.format": report.student.format,
        "slipway.gate_passed": str(decision.passed).lower(),
    }
    version = registry.register_onnx(cfg.registry, run_id, student_onnx, tags, splits.x_test[:2])
    checkpoint_sha256 = registry.log_checkpoint(cfg.registry, run_id, version.version, checkpoint)
    if card_dir is not None:
        card = build_model_card(
            cfg, version, report, decision, splits, served_path or student_onnx, checkpoint, checkpoint_sha256,
            selection_path, explanation_dir, teacher_path,
        )  # fmt: skip
        write_card(card, card_dir)
        registry.log_model_card(cfg.registry, run_id, version.version, card_dir)
        log.info("model card: %s v%s, logged with the version", version.model_name, version.version)
    registry.set_tags(cfg.registry, run_id, {"slipway.registry": version.model_dump()})
    return version


def build_model_card(
    cfg: SlipwayConfig,
    version: registry.RegisteredVersion,
    report: EvaluationReport,
    decision: GateDecision,
    splits: data_lib.DatasetSplits,
    served_path: Path,
    checkpoint: Path,
    checkpoint_sha256: str,
    selection_path: Path | None,
    explanation_dir: Path | None,
    teacher_path: Path | None,
) -> ModelCard:
    """The card of a just-registered version, from the files of the run that produced it."""
    from slipway import __version__
    from slipway.compression.selection import Selection
    from slipway.core.models import load_model
    from slipway.serving.triton_repository import MODEL_FILES

    served = verify_artifact(served_path)
    details = ModelDetails(
        name=version.model_name,
        version=version.version,
        aliases=version.aliases,
        registered_at=registry.registered_at(cfg.registry, version.version),
        owners=cfg.card.owners,
        mlflow_run_id=version.run_id,
        served_file=MODEL_FILES.get(served.framework, served_path.name),
        served_sha256=served.sha256,
        checkpoint_sha256=checkpoint_sha256,
        slipway_version=__version__,
    )
    selection = None
    if selection_path is not None:
        selection = Selection.model_validate_json(selection_path.read_text())
    teacher_spec = load_model(teacher_path)[1]["spec"] if teacher_path is not None else None
    return build_card(
        details=details,
        text=cfg.card,
        splits=splits,
        teacher=report.teacher,
        student=report.student,
        fairness=report.fairness,
        selection=selection,
        teacher_spec=teacher_spec,
        student_payload=load_model(checkpoint)[1],
        explanation=read_explanation(explanation_dir),
        decision=decision,
        triton=cfg.triton,
        threads=cfg.evaluate.threads,
    )


def promote_candidate(cfg: SlipwayConfig, run_id: str, version: str) -> registry.RegisteredVersion:
    """Move `champion` to the gated version, unless `registry.promote` is off (it stays `challenger`)."""
    if not cfg.registry.promote:
        log.info("registry.promote is false: v%s stays challenger; the champion keeps its alias", version)
        promoted = registry.describe_version(cfg.registry, version)
    else:
        promoted = registry.promote(cfg.registry, version)
    registry.set_tags(cfg.registry, run_id, {"slipway.registry": promoted.model_dump()})
    return promoted


def drift_reference(student_onnx: Path, reference: Path, output: Path) -> int:
    """The drift reference with the packaged model's probabilities on it, so that the monitor compares outputs
    (predicted class, confidence, entropy) as well as inputs. Returns its row count."""
    from slipway.compression.onnx_export import onnx_predict, ort_session

    with np.load(reference, allow_pickle=False) as ref:
        x, y = ref["x"], ref["y"]
        groups = {k: ref[k] for k in ref.files if k.startswith(data_lib.GROUP_PREFIX)}  # for sliced drift
    logits = onnx_predict(ort_session(student_onnx), x).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    with open(output, "wb") as fh:
        np.savez(fh, x=x, y=y, probs=probs.astype(np.float32), **groups)
    return len(x)


def package_for_triton(
    cfg: SlipwayConfig,
    run_id: str,
    version: str,
    student_onnx: Path,
    reference: Path,
    repo_dir: Path,
    reference_out: Path,
    *,
    served_model: Path | None = None,
    model_card: Path | None = None,
    checkpoint: Path | None = None,
) -> Path:
    """Write the Triton model repository for the student and the drift reference with its probabilities;
    log both with the registered version.

    `served_model`: the file Triton serves when it is not `student_onnx` (an AOTInductor package); the drift
    reference's probabilities still come from `student_onnx`, the registered ONNX twin of the same checkpoint.
    Beside the model, the version folder gets the model card (`model_card`: register's card folder, checked
    against the digest logged with the version) and the PyTorch checkpoint for explanations (`checkpoint`).
    """
    from slipway.serving.triton_repository import MODEL_CARD_FILES, write_explain_checkpoint, write_model

    # Triton's version number is the registry's: a server holding two versions serves the newer one.
    served = served_model or student_onnx
    model_dir = write_model(repo_dir, cfg.registry.model_name, served, cfg.triton, version=int(version))
    version_dir = model_dir / str(int(version))
    if model_card is not None:
        expected = registry.model_card_sha256(cfg.registry, version)
        if (actual := registry.directory_sha256(model_card)) != expected:
            raise ArtifactIntegrityError(
                f"{model_card}: the model card has digest {actual}, but {cfg.registry.model_name} v{version} "
                f"was registered with {expected}; it was not packaged"
            )
        for name in MODEL_CARD_FILES.values():
            shutil.copyfile(model_card / name, version_dir / name)
    if checkpoint is not None:
        expected = registry.checkpoint_sha256(cfg.registry, version)
        if (actual := sha256_file(checkpoint)) != expected:
            raise ArtifactIntegrityError(
                f"{checkpoint}: the checkpoint has sha256 {actual}, but {cfg.registry.model_name} v{version} "
                f"was registered with {expected}; it was not packaged"
            )
        write_explain_checkpoint(version_dir, checkpoint)
    registry.log_model_repository(cfg.registry, version, repo_dir)
    rows = drift_reference(student_onnx, reference, reference_out)
    registry.log_artifact(cfg.registry, run_id, reference_out, "drift", "reference.npz")
    registry.set_tags(cfg.registry, run_id, {"slipway.drift_reference": str(reference_out)})
    log.info("drift reference: %d rows with the packaged model's probabilities", rows)
    registry.set_tags(cfg.registry, run_id, {"slipway.model_repository": str(repo_dir)})
    return model_dir
