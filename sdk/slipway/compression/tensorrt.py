"""TensorRT engines from ONNX (GPU image only): FP16, or INT8 from a QDQ model (explicit quantization).

`tensorrt` is imported lazily: this module imports anywhere, and says clearly what is missing when a build is
asked for on a machine without TensorRT or without a GPU. The engine gets an optimization profile for the
batch axis (min/opt/max from config), a workspace limit, and a timing cache reused across builds; its parity
is checked against ONNX Runtime before the metadata (TensorRT version, GPU, compute capability) is written.
An engine only runs on the TensorRT version and GPU architecture it was built for: the GPU image builds with
the same TensorRT as the Triton release in slipway.core.images.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slipway.compression.onnx_export import check_parity, onnx_predict, ort_session
from slipway.core.artifacts import ModelArtifact, TensorSpec, read_metadata, sha256_file, write_metadata
from slipway.core.config import TensorRTConfig
from slipway.core.errors import ExportError, SlipwayError
from slipway.core.images import TENSORRT_VERSION

log = logging.getLogger(__name__)


class TensorRTUnavailableError(SlipwayError):
    """TensorRT or a CUDA GPU is missing on this machine."""


def import_tensorrt() -> Any:
    """The `tensorrt` module, or a clear error naming the image that has it."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise TensorRTUnavailableError(
            f"TensorRT is not installed here ({err}); build engines in the GPU image "
            f"(slipway.core.images.GPU_IMAGE, TensorRT {TENSORRT_VERSION}) on a machine with an NVIDIA GPU, or "
            "serve the ONNX model with triton.tensorrt_accelerator=true"
        ) from None
    return trt


def gpu_info() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of the current CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(
            "no CUDA GPU is visible: TensorRT engines are built on the GPU they run on"
        )
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def _has_uint8_quantization(graph: onnx.GraphProto) -> bool:
    """TensorRT takes symmetric INT8 only; ORT's CPU default (uint8 activations) must be re-quantized."""
    inits = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if (
            node.op_type == "QuantizeLinear"
            and len(node.input) > 2
            and node.input[2] in inits
            and inits[node.input[2]].data_type == onnx.TensorProto.UINT8
        ):
            return True
    return False


def _load_timing_cache(trt: Any, config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(
    onnx_path: str | Path, engine_path: str | Path, cfg: TensorRTConfig, x_parity: np.ndarray
) -> ModelArtifact:
    """Parse ONNX, build a serialized engine, check parity with ONNX Runtime, write the metadata sidecar."""
    trt = import_tensorrt()
    gpu_name, capability = gpu_info()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    model = onnx.load(str(onnx_path))
    is_qdq = any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if is_qdq and _has_uint8_quantization(model.graph):
        raise ExportError(
            f"{onnx_path.name} quantizes activations to uint8; TensorRT needs symmetric int8: "
            "set compress.quantize.activation_type=int8 for TensorRT builds"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    if cfg.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if is_qdq:
        # Explicit quantization: Q/DQ nodes say where INT8 runs; TensorRT 10 still wants the INT8 flag set.
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        sample = tuple(int(d) for d in tensor.shape[1:])
        profile.set_shape(
            tensor.name, (cfg.min_batch, *sample), (cfg.opt_batch, *sample), (cfg.max_batch, *sample)
        )
    config.add_optimization_profile(profile)
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else engine_path.with_suffix(".timing.cache")
    _load_timing_cache(trt, config, cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT could not build an engine from {onnx_path.name} (see the TensorRT log above)"
        )
    engine_path.write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))

    reference = onnx_predict(ort_session(onnx_path), x_parity)
    candidate = TensorRTRunner(engine_path).predict(x_parity)
    parity = check_parity(
        reference, candidate, None, cfg.parity_min_agreement, f"TensorRT engine {engine_path.name}"
    )
    source = read_metadata(onnx_path)
    artifact = ModelArtifact(
        file=engine_path.name,
        sha256=sha256_file(engine_path),
        size_bytes=engine_path.stat().st_size,
        framework="tensorrt",
        precision="int8" if is_qdq else ("fp16" if cfg.fp16 else "fp32"),
        inputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[-1, *t.shape[1:]]) for t in source.inputs],
        outputs=[TensorSpec(name=t.name, dtype=t.dtype, shape=[-1, *t.shape[1:]]) for t in source.outputs],
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        extra={
            **source.extra,
            "source_sha256": source.sha256,
            "profile": [cfg.min_batch, cfg.opt_batch, cfg.max_batch],
            "workspace_mb": cfg.workspace_mb,
            "top1_agreement": parity.top1_agreement,
            "max_abs_diff": parity.max_abs_diff,
        },
    )
    write_metadata(engine_path, artifact)
    log.info("TensorRT %s engine for %s (%s): %s", trt.__version__, gpu_name, capability, engine_path)
    return artifact


class TensorRTRunner:
    """Runs a serialized engine on the current CUDA device with torch tensors as buffers (FP32 in and out)."""

    def __init__(self, engine_path: str | Path) -> None:
        import torch

        trt = import_tensorrt()
        self._torch = torch
        self._trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ExportError(
                f"{engine_path}: TensorRT cannot deserialize this engine (other version or GPU?)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def predict_tensor(self, x: Any) -> Any:
        """x: a CUDA float32 tensor; returns the first output as a CUDA float32 tensor."""
        torch = self._torch
        name = self.inputs[0]
        x = x.contiguous()
        self.context.set_input_shape(name, tuple(x.shape))
        self.context.set_tensor_address(name, x.data_ptr())
        outputs = []
        for out in self.outputs:
            shape = tuple(self.context.get_tensor_shape(out))
            buf = torch.empty(shape, dtype=torch.float32, device=x.device)
            self.context.set_tensor_address(out, buf.data_ptr())
            outputs.append(buf)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed")
        stream.synchronize()
        return outputs[0]

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        torch = self._torch
        max_batch = int(self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])
        batch_size = min(batch_size, max_batch)
        parts = []
        for i in range(0, len(x), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32)).cuda()
            parts.append(self.predict_tensor(chunk).cpu().numpy())
        return np.concatenate(parts)
