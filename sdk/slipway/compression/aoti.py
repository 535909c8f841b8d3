"""PyTorch's own deployment path: torch.export + AOTInductor into one self-contained `.pt2` package.

The package holds the compiled kernels (a shared library) and the weights; it runs with
`torch._inductor.aoti_load_package` and no Python model code, on the device and torch release it was compiled
for. So the metadata records both (torch version, device, CUDA compute capability), the package embeds the same
keys (`aot_inductor.metadata`), and `check_serving_compatibility` (slipway.core.aoti_package) refuses a mismatch before anything is served.
Inputs and outputs stay FP32 at every precision (the model casts inside), like the ONNX FP16 model.
"""

from __future__ import annotations

import copy
import io
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slipway.compression.onnx_export import INPUT_NAME, MAX_BATCH, OUTPUT_NAME, ParityResult, check_parity
from slipway.core.artifacts import ModelArtifact, TensorSpec, sha256_file, write_metadata
from slipway.core.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)
AotiPrecision = Literal["fp32", "fp16", "bf16"]
# format name (as in compress.candidates) -> precision; fp16/bf16 compile for CUDA only (CPU kernels in
# reduced precision are slower than FP32 here and not what a GPU deployment measures).
AOTI_FORMATS: dict[str, AotiPrecision] = {"aoti-fp32": "fp32", "aoti-fp16": "fp16", "aoti-bf16": "bf16"}
GPU_ONLY: frozenset[AotiPrecision] = frozenset({"fp16", "bf16"})
# Max abs logit difference against eager FP32 per precision (FP32: the ONNX export's bound; reduced
# precisions: their rounding over a small CNN's logits), with the top-1 agreement as the second bound.
PARITY_ATOL: dict[AotiPrecision, float] = {"fp32": 1e-4, "fp16": 5e-2, "bf16": 2e-1}
PARITY_MIN_AGREEMENT: dict[AotiPrecision, float] = {"fp32": 0.999, "fp16": 0.99, "bf16": 0.98}
# Keys embedded in the package (AOTICompiledModel.get_metadata()) besides torch's own AOTI_* keys.
META_TORCH_VERSION = "slipway.torch_version"
META_DEVICE = "slipway.device"
META_CAPABILITY = "slipway.compute_capability"
META_PRECISION = "slipway.precision"


def _dtype(precision: AotiPrecision) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def device_capability(device: str) -> tuple[str | None, str | None]:
    """(GPU name, compute capability "major.minor") of a CUDA device; (None, None) for the CPU."""
    import torch

    if not device.startswith("cuda"):
        return None, None
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def _cast_wrapper(model: nn.Module, precision: AotiPrecision) -> nn.Module:
    """The model in `precision` behind FP32 inputs and outputs, so the Triton config and callers stay the same."""
    from torch import nn

    dtype = _dtype(precision)

    class CastIO(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.to(dtype)).float()

    return CastIO(model.to(dtype)) if precision != "fp32" else model


def compile_aoti(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | Path,
    precision: AotiPrecision = "fp32",
    device: str = "cpu",
) -> ModelArtifact:
    """Export with a dynamic batch axis (1..MAX_BATCH), compile with AOTInductor into `path` (a .pt2) and write
    the metadata sidecar. Compiling takes tens of seconds on CPU (a C++ compiler builds the kernels)."""
    import torch

    path = Path(path)
    if precision not in AOTI_FORMATS.values():
        raise ConfigError(f"precision {precision!r}: expected one of {sorted(set(AOTI_FORMATS.values()))}")
    if precision in GPU_ONLY and not device.startswith("cuda"):
        raise ConfigError(
            f"precision {precision!r} compiles for CUDA only (device {device!r} given); use aoti-fp32 on CPU"
        )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine")
    gpu_name, capability = device_capability(device)
    example = torch.zeros(2, *input_shape, device=device)
    model = copy.deepcopy(model).float().eval().to(device)  # the caller's model keeps its dtype and device
    with torch.no_grad():
        classes = int(model(example).shape[-1])
    wrapped = _cast_wrapper(model, precision).eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    embedded = {
        META_TORCH_VERSION: torch.__version__,
        META_DEVICE: device.split(":")[0],
        META_CAPABILITY: capability or "",
        META_PRECISION: precision,
    }
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(path), inductor_configs={"aot_inductor.metadata": embedded}
            )
    except Exception as err:  # export and inductor raise many types; the message says what failed
        raise ExportError(
            f"AOTInductor compile failed for {type(model).__name__} ({precision}, {device}): {err}"
        ) from None
    seconds = time.perf_counter() - start
    artifact = ModelArtifact(
        file=path.name,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        framework="aoti",
        precision=precision,
        inputs=[TensorSpec(name=INPUT_NAME, dtype="float32", shape=[-1, *input_shape])],
        outputs=[TensorSpec(name=OUTPUT_NAME, dtype="float32", shape=[-1, classes])],
        torch_version=torch.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        extra={"device": embedded[META_DEVICE], "max_batch": MAX_BATCH, "compile_s": round(seconds, 1)},
    )
    write_metadata(path, artifact)
    log.info("AOTInductor package %s (%s, %s) compiled in %.1f s", path.name, precision, device, seconds)
    return artifact


def load_aoti(source: str | Path | bytes, device_index: int = -1) -> Any:
    """An AOTICompiledModel from a .pt2 file or from bytes already checked against their digest. A file is read
    into memory first: torch opens only paths ending in .pt2, and KFP names its outputs without a suffix."""
    import torch

    package = io.BytesIO(source if isinstance(source, bytes) else Path(source).read_bytes())
    return torch._inductor.aoti_load_package(package, device_index=device_index)


def aoti_predictor(path: str | Path, threads: int | None = None, device: str = "cpu"):
    """numpy in, numpy out, like `evaluate.onnx_predictor`: what selection and the bench measure."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    runner = load_aoti(path)

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = runner(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
        return out.float().cpu().numpy()

    return predict


def check_aoti_parity(
    model: nn.Module,
    path: str | Path,
    x: np.ndarray,
    precision: AotiPrecision = "fp32",
    device: str = "cpu",
    batch_size: int = 256,
) -> ParityResult:
    """The package's logits against eager FP32 on the same inputs, within the precision's bounds (ExportError
    with both numbers when not): the same check the ONNX export passes."""
    import torch

    predict = aoti_predictor(path, device=device)
    model = model.float().eval().to(device)
    with torch.inference_mode():
        reference = np.concatenate(
            [
                model(torch.from_numpy(x[i : i + batch_size]).to(device)).float().cpu().numpy()
                for i in range(0, len(x), batch_size)
            ]
        )
    candidate = np.concatenate([predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return check_parity(
        reference,
        candidate,
        PARITY_ATOL[precision],
        PARITY_MIN_AGREEMENT[precision],
        f"AOTInductor {precision} package {Path(path).name}",
    )
