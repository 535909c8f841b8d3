"""Post-training quantization with ONNX Runtime: static INT8 (QDQ, calibrated) and FP16, each checked.

Every output is compared with the FP32 ONNX model it came from: top-1 agreement (parity) on validation data
and the accuracy delta on the test split. Over budget, the documented fallback runs: keep the first and last
layers in FP32, then try another calibration method. When nothing fits, the best attempt is still written, marked
rejected with the numbers (outcome and metadata), so that selection drops it and the run goes on.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel

from slipway.compression.onnx_export import check_parity, describe_onnx, onnx_predict, ort_session
from slipway.core.artifacts import ModelArtifact, read_metadata, write_metadata
from slipway.core.config import CalibrationMethod, QuantizeConfig
from slipway.core.errors import ExportError

log = logging.getLogger(__name__)
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class Attempt(BaseModel):
    """One quantization try and how it measured against FP32."""

    label: str
    calibration_method: str | None
    excluded_nodes: list[str]
    accuracy: float
    accuracy_delta_points: float
    top1_agreement: float
    passed: bool
    failure: str | None = None


class QuantizeOutcome(BaseModel):
    """The kept attempt of one precision, with every attempt that led to it; `rejected` says why it is over
    budget (None when within), and the file's metadata `extra["rejected"]` says the same to later steps."""

    precision: str
    path: str
    fp32_accuracy: float
    accuracy: float
    accuracy_delta_points: float
    top1_agreement: float
    attempts: list[Attempt]
    artifact: ModelArtifact
    rejected: str | None = None


class CalibrationReader:
    """Feeds calibration batches to ONNX Runtime (implements the CalibrationDataReader protocol)."""

    def __init__(self, x: np.ndarray, input_name: str, batch_size: int = 32) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = iter(
            {self.input_name: self.x[i : i + self.batch_size]} for i in range(0, len(self.x), self.batch_size)
        )

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)


def calibration_sample(x_train: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """A seeded random subset of the training split (never test data: that would leak into the measurement)."""
    rng = np.random.default_rng(seed)
    take = min(samples, len(x_train))
    return x_train[np.sort(rng.choice(len(x_train), size=take, replace=False))]


def boundary_nodes(onnx_path: str | Path) -> list[str]:
    """Names of the first and last compute nodes (conv/matmul): the layers most sensitive to quantization."""
    graph = onnx.load(str(onnx_path)).graph
    compute = [n.name for n in graph.node if n.op_type in COMPUTE_OPS]
    if not compute:
        return []
    return sorted({compute[0], compute[-1]}, key=compute.index)


def _predict(path: Path, threads: int | None, *inputs: np.ndarray) -> list[np.ndarray]:
    """Logits for each input set from one ONNX Runtime session."""
    session = ort_session(path, threads)
    return [onnx_predict(session, x) for x in inputs]


def _measure(
    label: str,
    method: str | None,
    excluded: list[str],
    candidate: Path,
    reference: dict[str, Any],
    cfg: QuantizeConfig,
    threads: int | None,
) -> Attempt:
    test_logits, logits = _predict(candidate, threads, reference["x_test"], reference["x_parity"])
    acc = float((test_logits.argmax(1) == reference["y_test"]).mean())
    delta = (reference["accuracy"] - acc) * 100
    agreement = float((logits.argmax(1) == reference["logits"].argmax(1)).mean())
    failure = None
    try:
        check_parity(
            reference["logits"], logits, None, cfg.parity_min_agreement, f"{label} ({candidate.name})"
        )
    except ExportError as err:
        failure = str(err)
    if failure is None and delta > cfg.accuracy_budget_points:
        failure = (
            f"accuracy {acc:.4f} is {delta:.2f} points below FP32 {reference['accuracy']:.4f} "
            f"(budget {cfg.accuracy_budget_points:.2f})"
        )
    attempt = Attempt(
        label=label,
        calibration_method=method,
        excluded_nodes=excluded,
        accuracy=acc,
        accuracy_delta_points=delta,
        top1_agreement=agreement,
        passed=failure is None,
        failure=failure,
    )
    log.info(
        "%s: accuracy %.4f (delta %.2f points), top-1 agreement %.4f -> %s",
        label,
        acc,
        delta,
        agreement,
        "ok" if attempt.passed else "over budget",
    )
    return attempt


def _reference(
    fp32_onnx: Path,
    x_parity: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    threads: int | None,
) -> dict[str, Any]:
    test_logits, logits = _predict(fp32_onnx, threads, x_test, x_parity)
    accuracy = float((test_logits.argmax(1) == y_test).mean())
    return {"accuracy": accuracy, "logits": logits, "x_parity": x_parity, "x_test": x_test, "y_test": y_test}


Rung = tuple[str, CalibrationMethod | None, list[str]]  # label, calibration method, nodes kept in FP32


def _kept(attempts: list[Attempt]) -> Attempt:
    """The first attempt within budget; else the highest test accuracy, then agreement, then the earlier rung
    (fewer layers left in FP32): the one the selection report should show numbers for."""
    passed = next((a for a in attempts if a.passed), None)
    if passed is not None:
        return passed
    return max(attempts, key=lambda a: (a.accuracy, a.top1_agreement))  # max keeps the first of ties


def _climb_ladder(
    ladder: list[Rung],
    build: Callable[[Path, Any, list[str]], None],
    out_path: Path,
    reference: dict[str, Any],
    cfg: QuantizeConfig,
    threads: int | None,
) -> list[Attempt]:
    """Build and measure each rung until one is within budget; the kept one (`_kept`) goes to out_path."""
    attempts: list[Attempt] = []
    with tempfile.TemporaryDirectory() as tmp:
        files: list[Path] = []
        for label, method, exclude in ladder:
            files.append(Path(tmp) / f"attempt{len(attempts)}.onnx")
            build(files[-1], method, exclude)
            attempts.append(_measure(label, method, exclude, files[-1], reference, cfg, threads))
            if attempts[-1].passed:
                break
        out_path.write_bytes(files[attempts.index(_kept(attempts))].read_bytes())
    return attempts


def _finish(
    precision: str,
    out_path: Path,
    fp32_onnx: Path,
    reference: dict[str, Any],
    attempts: list[Attempt],
    cfg: QuantizeConfig,
) -> QuantizeOutcome:
    chosen = _kept(attempts)
    rejected = None
    if not chosen.passed:
        lines = "; ".join(
            f"{a.label}: accuracy {a.accuracy:.4f} ({a.accuracy_delta_points:+.2f} points), "
            f"agreement {a.top1_agreement:.4f}"
            for a in attempts
        )
        rejected = (
            f"{precision.upper()} of {fp32_onnx.name} stays outside the budget (max drop "
            f"{cfg.accuracy_budget_points:.2f} points vs FP32 {reference['accuracy']:.4f}, top-1 agreement >= "
            f"{cfg.parity_min_agreement:.2%}) after every fallback: {lines}; kept {chosen.label} (highest "
            "accuracy) for the record, not for selection. To use it, raise "
            "compress.quantize.accuracy_budget_points or calibrate with more samples."
        )
        log.warning("%s", rejected)
    source = read_metadata(fp32_onnx)
    artifact = describe_onnx(
        out_path,
        precision="int8" if precision == "int8" else "fp16",
        **source.extra,
        source_sha256=source.sha256,
        calibration_method=chosen.calibration_method,
        fp32_excluded_nodes=chosen.excluded_nodes,
        accuracy=chosen.accuracy,
        accuracy_delta_points=chosen.accuracy_delta_points,
        top1_agreement=chosen.top1_agreement,
        **({"rejected": rejected} if rejected else {}),
    )
    write_metadata(out_path, artifact)
    return QuantizeOutcome(
        precision=precision,
        path=str(out_path),
        fp32_accuracy=reference["accuracy"],
        accuracy=chosen.accuracy,
        accuracy_delta_points=chosen.accuracy_delta_points,
        top1_agreement=chosen.top1_agreement,
        attempts=attempts,
        artifact=artifact,
        rejected=rejected,
    )


def _ort_calibration(method: CalibrationMethod):
    from onnxruntime.quantization import CalibrationMethod as OrtMethod

    return {"minmax": OrtMethod.MinMax, "entropy": OrtMethod.Entropy, "percentile": OrtMethod.Percentile}[
        method
    ]


def quantize_static_int8(
    preprocessed: Path,
    out_path: Path,
    calibration: np.ndarray,
    cfg: QuantizeConfig,
    method: CalibrationMethod,
    exclude: list[str],
) -> None:
    """One ORT static quantization run: QDQ, per-channel weights as configured, INT8 weights."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    input_name = onnx.load(str(preprocessed)).graph.input[0].name
    symmetric = cfg.activation_type == "int8"
    quantize_static(
        str(preprocessed),
        str(out_path),
        CalibrationReader(calibration, input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=cfg.per_channel,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or None,
        calibrate_method=_ort_calibration(method),
        # TensorRT consumes only symmetric INT8; on x86 CPUs asymmetric uint8 activations are fastest.
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
    )


def quantize_int8(
    fp32_onnx: str | Path,
    out_path: str | Path,
    x_calibration: np.ndarray,
    x_parity: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: QuantizeConfig,
    threads: int | None = None,
) -> QuantizeOutcome:
    """Static INT8 (QDQ) with the fallback ladder; writes `out_path` and its metadata sidecar."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    reference = _reference(fp32_onnx, x_parity, x_test, y_test, threads)
    boundary = boundary_nodes(fp32_onnx)
    ladder: list[Rung] = [(f"int8 ({cfg.calibration_method})", cfg.calibration_method, [])]
    if cfg.fallback_fp32_nodes and boundary:
        ladder.append(
            (f"int8 ({cfg.calibration_method}, first/last in FP32)", cfg.calibration_method, boundary)
        )
    fallback = cfg.fallback_calibration_method
    if fallback is not None and fallback != cfg.calibration_method:
        keep = boundary if cfg.fallback_fp32_nodes else []
        ladder.append((f"int8 ({fallback}{', first/last in FP32' if keep else ''})", fallback, keep))
    with tempfile.TemporaryDirectory() as tmp:
        preprocessed = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32_onnx), str(preprocessed))

        def build(candidate: Path, method: CalibrationMethod, exclude: list[str]) -> None:
            quantize_static_int8(preprocessed, candidate, x_calibration, cfg, method, exclude)

        attempts = _climb_ladder(ladder, build, out_path, reference, cfg, threads)
    return _finish("int8", out_path, fp32_onnx, reference, attempts, cfg)


def convert_fp16(
    fp32_onnx: str | Path,
    out_path: str | Path,
    x_parity: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: QuantizeConfig,
    threads: int | None = None,
) -> QuantizeOutcome:
    """FP16 weights and activations with FP32 inputs/outputs kept (callers and Triton configs stay the same)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32_onnx, out_path = Path(fp32_onnx), Path(out_path)
    reference = _reference(fp32_onnx, x_parity, x_test, y_test, threads)
    ladder: list[Rung] = [("fp16", None, [])]
    boundary = boundary_nodes(fp32_onnx)
    if cfg.fallback_fp32_nodes and boundary:
        ladder.append(("fp16 (first/last in FP32)", None, boundary))

    def build(candidate: Path, _: None, block: list[str]) -> None:
        model = convert_float_to_float16(
            onnx.load(str(fp32_onnx)), keep_io_types=True, node_block_list=block or None
        )
        onnx.save(model, str(candidate))

    attempts = _climb_ladder(ladder, build, out_path, reference, cfg, threads)
    return _finish("fp16", out_path, fp32_onnx, reference, attempts, cfg)
