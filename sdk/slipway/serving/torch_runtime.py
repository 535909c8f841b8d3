"""A torch runtime for `slipway serve`, beside ONNX Runtime: it serves a Triton Python-backend model folder that
holds a Slipway AOTInductor package (REPO/<model>/<version>/model.pt2 + its metadata, and the model.py that
Triton itself would run).

slipway serve never runs the folder's model.py: it loads the verified .pt2 bytes with
`torch._inductor.aoti_load_package`, exactly what model.py does inside Triton. A session here speaks the
ONNX Runtime session interface that the loader and batcher use (run, get_inputs, get_outputs, get_providers),
with tensor names and shapes from the package's metadata. torch is imported only when such a model loads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from slipway.core.aoti_package import PACKAGE_FILE, check_serving_compatibility
from slipway.core.artifacts import ModelArtifact
from slipway.core.errors import TritonConfigError

PYTHON_BACKEND = "python"
# numpy dtype name -> ONNX Runtime's element type spelling, which the loader maps to Triton types.
_ORT_ELEMENT = {
    "float32": "float",
    "float16": "float16",
    "float64": "double",
    "int64": "int64",
    "int32": "int32",
}


def check_python_config(config: mc.ModelConfig, model_dir: Path, path: Path) -> None:
    """A Python-backend model slipway serve can honour: a Slipway AOTInductor package in its version folders
    (any other Python model runs only in Triton), no platform (Triton's Python backend has none), no reshape
    (the package's shapes are served as they are)."""
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not any((v / PACKAGE_FILE).is_file() for v in versions):
        raise TritonConfigError(
            f"{path}: backend {PYTHON_BACKEND!r} cannot run in slipway serve without a Slipway AOTInductor "
            f"package ({PACKAGE_FILE} beside model.py in a version folder); serve this model with Triton"
        )
    if config.platform:
        raise TritonConfigError(
            f"{path}: backend {PYTHON_BACKEND!r} takes no `platform` (got {config.platform!r}); drop it"
        )
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            if tensor.HasField("reshape"):
                raise TritonConfigError(
                    f"{path}: {kind} {tensor.name!r}: `reshape` is not supported for AOTInductor packages "
                    "in slipway serve; give the package's own dims"
                )


def package_path(model_dir: Path, version: int) -> Path:
    """Where the AOTInductor package of one version lives (model.py finds it at the same place)."""
    return model_dir / str(version) / PACKAGE_FILE


@dataclass(frozen=True)
class _Arg:
    """A graph tensor as ONNX Runtime describes it (NodeArg): name, shape with -1 for dynamic, type string."""

    name: str
    shape: list[int]
    type: str


def local_capability() -> str | None:
    """This machine's CUDA compute capability ("major.minor"), None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


class TorchSession:
    """One loaded AOTInductor package (one per model instance), refused when this machine's torch release or
    device differs from the one it was compiled for."""

    inputs_reshape: dict[str, Any] = {}  # the loader sets these on every session; reshape is refused above
    outputs_reshape: dict[str, Any] = {}

    def __init__(self, data: bytes, artifact: ModelArtifact, where: str, threads: int | None = None) -> None:
        import torch

        check_serving_compatibility(artifact, torch.__version__, local_capability(), f"{where}: this server")
        if threads:
            torch.set_num_threads(threads)
        self.artifact = artifact
        self.device = "cuda" if artifact.compute_capability else "cpu"
        self._runner = torch._inductor.aoti_load_package(io.BytesIO(data))  # the verified bytes
        self._inputs = [_Arg(t.name, list(t.shape), _element(t.dtype)) for t in artifact.inputs]
        self._outputs = [_Arg(t.name, list(t.shape), _element(t.dtype)) for t in artifact.outputs]

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"AOTInductor({self.device})"]

    def run(self, output_names: list[str] | None, input_feed: dict[str, np.ndarray], run_options: Any = None):
        """ONNX Runtime's call: the outputs named (all when None) for the inputs fed, as numpy arrays."""
        import torch

        with torch.inference_mode():
            args = [
                torch.from_numpy(np.ascontiguousarray(input_feed[a.name])).to(self.device)
                for a in self._inputs
            ]
            result = self._runner(*args)
        tensors = list(result) if isinstance(result, list | tuple) else [result]
        by_name = {a.name: t.cpu().numpy() for a, t in zip(self._outputs, tensors, strict=True)}
        return [by_name[name] for name in (output_names or list(by_name))]


def _element(dtype: str) -> str:
    return f"tensor({_ORT_ELEMENT.get(dtype, dtype)})"
