"""ONNX export (single self-contained file, dynamic batch axis) and the parity check against PyTorch."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from slipway.core.artifacts import ModelArtifact, Precision, TensorSpec, sha256_file, write_metadata
from slipway.core.errors import ExportError

log = logging.getLogger(__name__)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 4096


def describe_onnx(path: str | Path, precision: Precision = "fp32", **extra: object) -> ModelArtifact:
    """Metadata from the graph itself: tensor names, dtypes and shapes (-1 for symbolic dims)."""
    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        return TensorSpec(name=value.name, dtype=dtype, shape=shape)

    opset = next((o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelArtifact(
        file=path.name,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        framework="onnx",
        precision=precision,
        inputs=[spec(v) for v in graph.input if v.name not in initializers],
        outputs=[spec(v) for v in graph.output],
        opset=opset,
        extra=dict(extra),
    )


def export_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | Path, opset: int = 18
) -> ModelArtifact:
    """Export with the torch.export-based exporter into one file; writes the metadata sidecar."""
    path = Path(path)
    model = model.eval()
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises a zoo of types; the message is what matters
        raise ExportError(f"ONNX export failed for {type(model).__name__}: {err}") from None
    onnx.checker.check_model(str(path), full_check=True)
    artifact = describe_onnx(path)
    write_metadata(path, artifact)
    return artifact


def ort_session(path: str | Path, threads: int | None = None, providers: Sequence[str] | None = None):
    """An ONNX Runtime session with deterministic thread settings (intra-op only, sequential execution)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def onnx_predict(session, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    name = session.get_inputs()[0].name
    dtype = np.float16 if "float16" in session.get_inputs()[0].type else np.float32
    outs = [
        session.run(None, {name: x[i : i + batch_size].astype(dtype)})[0]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


@dataclass(frozen=True)
class ParityResult:
    max_abs_diff: float
    top1_agreement: float
    samples: int


def check_parity(
    reference_logits: np.ndarray,
    candidate_logits: np.ndarray,
    atol: float | None,
    min_agreement: float,
    what: str,
) -> ParityResult:
    """Compare logits; fail with both numbers when the candidate disagrees beyond the bounds."""
    diff = float(np.max(np.abs(reference_logits - candidate_logits))) if len(reference_logits) else 0.0
    agreement = float((reference_logits.argmax(1) == candidate_logits.argmax(1)).mean())
    result = ParityResult(diff, agreement, len(reference_logits))
    too_far = atol is not None and diff > atol
    if too_far or agreement < min_agreement:
        raise ExportError(
            f"{what}: parity check failed on {len(reference_logits)} samples: max abs logit difference "
            f"{diff:.3g} (limit {atol if atol is not None else 'none'}), top-1 agreement {agreement:.4%} "
            f"(minimum {min_agreement:.2%})"
        )
    log.info("%s parity: max abs diff %.3g, top-1 agreement %.4f", what, diff, agreement)
    return result
