"""Load a Triton model repository for the local server: config.pbtxt, a version (the newest unless named),
verified bytes, ORT sessions.

Every model file is checked against the sha256 in its metadata sidecar before ONNX Runtime sees it, so a
tampered or truncated file is refused at load, never served.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2 as mc

from slipway.core.artifacts import ModelArtifact, verify_artifact
from slipway.core.errors import ConfigError, NotFoundError, TritonConfigError
from slipway.serving.datatypes import V2_TO_NUMPY, from_triton_type
from slipway.serving.triton_repository import MODEL_FILES, list_models, model_versions, read_model_config

log = logging.getLogger(__name__)

ALLOW_NON_FINITE_PARAMETER = "allow_non_finite"
SUPPORTED_PLATFORMS = ("onnxruntime_onnx",)


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the protocol sees it: v2 datatype, numpy dtype, dims without the batch axis."""

    name: str
    datatype: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]


@dataclass
class LoadedModel:
    """One served model: its Triton config, the version loaded and one ORT session per instance."""

    name: str
    version: str
    config: mc.ModelConfig
    artifact: ModelArtifact
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    sessions: list[ort.InferenceSession] = field(repr=False)
    allow_non_finite: bool = False

    @property
    def max_batch_size(self) -> int:
        return int(self.config.max_batch_size)

    @property
    def batched(self) -> bool:
        return self.config.max_batch_size > 0

    @property
    def dynamic_batching(self) -> bool:
        return self.batched and self.config.HasField("dynamic_batching")

    def protocol_shape(self, info: TensorInfo) -> list[int]:
        """Shape as reported in metadata: -1 leads for batched models, like Triton."""
        return [-1, *info.dims] if self.batched else list(info.dims)


@dataclass(frozen=True)
class SessionOptions:
    """How many threads each ORT session uses; None lets ONNX Runtime decide (all cores)."""

    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    prefer_cuda: bool = True


def _tensor_info(tensor: mc.ModelInput | mc.ModelOutput) -> TensorInfo:
    triton_name = mc.DataType.Name(tensor.data_type)
    datatype = from_triton_type(triton_name)
    if datatype is None:
        raise TritonConfigError(f"tensor {tensor.name!r}: datatype {triton_name} is not supported here")
    return TensorInfo(tensor.name, datatype, V2_TO_NUMPY[datatype], tuple(int(d) for d in tensor.dims))


def _providers(prefer_cuda: bool, kind: int) -> list[str]:
    available = ort.get_available_providers()
    wants_gpu = kind in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO)
    if prefer_cuda and wants_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _check_graph(name: str, session: ort.InferenceSession, inputs: dict[str, TensorInfo]) -> None:
    """The config must name the graph's tensors: a mismatch would fail every request, so fail at load."""
    graph_inputs = {i.name for i in session.get_inputs()}
    if set(inputs) != graph_inputs:
        raise TritonConfigError(
            f"model {name!r}: config inputs {sorted(inputs)} differ from the graph's {sorted(graph_inputs)}"
        )


def load_model_dir(
    model_dir: str | Path, options: SessionOptions | None = None, version: int | None = None
) -> LoadedModel:
    """Load one version of a model (default: the newest), refusing a file whose sha256 differs from its
    metadata; a version that is not there is a NotFoundError naming it and the versions that are."""
    options = options or SessionOptions()
    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    if config.platform not in SUPPORTED_PLATFORMS:
        raise TritonConfigError(
            f"model {config.name!r}: platform {config.platform} cannot run in the local server "
            f"(supported: {', '.join(SUPPORTED_PLATFORMS)}); serve it with Triton"
        )
    versions = model_versions(model_dir)
    if not versions:
        raise NotFoundError(f"model {config.name!r}: no numeric version directory under {model_dir}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise NotFoundError(
            f"model {config.name!r}: no version {version} under {model_dir} (versions there: {versions})"
        )
    filename = config.default_model_filename or MODEL_FILES["onnx"]
    model_path = model_dir / str(version) / filename
    if not model_path.is_file():
        raise NotFoundError(f"model {config.name!r}: {model_path} does not exist")
    artifact = verify_artifact(model_path)  # raises ArtifactIntegrityError on a sha256 mismatch
    inputs = {t.name: _tensor_info(t) for t in config.input}
    outputs = {t.name: _tensor_info(t) for t in config.output}
    groups = list(config.instance_group) or [mc.ModelInstanceGroup(count=1)]
    sessions: list[ort.InferenceSession] = []
    model_bytes = model_path.read_bytes()
    for group in groups:
        for _ in range(max(1, group.count)):
            so = ort.SessionOptions()
            if options.intra_op_threads:
                so.intra_op_num_threads = options.intra_op_threads
            so.inter_op_num_threads = options.inter_op_threads
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(
                model_bytes, sess_options=so, providers=_providers(options.prefer_cuda, group.kind)
            )
            _check_graph(config.name, session, inputs)
            sessions.append(session)
    param = config.parameters.get(ALLOW_NON_FINITE_PARAMETER)
    allow_non_finite = param is not None and param.string_value.strip().lower() in ("true", "1", "yes")
    log.info(
        "model loaded name=%s version=%d instances=%d providers=%s threads=%s sha256=%s",
        config.name,
        version,
        len(sessions),
        sessions[0].get_providers(),
        options.intra_op_threads or "auto",
        artifact.sha256[:12],
    )
    return LoadedModel(
        name=config.name,
        version=str(version),
        config=config,
        artifact=artifact,
        inputs=inputs,
        outputs=outputs,
        sessions=sessions,
        allow_non_finite=allow_non_finite,
    )


MODEL_CONTROL_MODES = ("none", "explicit")
LOAD_ALL = "*"


def check_model_control_mode(mode: str) -> None:
    if mode not in MODEL_CONTROL_MODES:
        raise ConfigError(f"model control mode {mode!r} is not one of {', '.join(MODEL_CONTROL_MODES)}")


def startup_models(repo: str | Path, mode: str = "none", load_models: Sequence[str] = ()) -> list[str]:
    """The models to load before the server opens its ports, with Triton's rules for the two control modes.

    none: every model of the repository (and --load-model is refused: it would have no effect). explicit: only
    the --load-model names, `*` alone meaning all of them; an empty list starts the server with no model.
    """
    check_model_control_mode(mode)
    available = list_models(repo)
    if mode == "none":
        if load_models:
            raise ConfigError(
                "--load-model needs --model-control-mode explicit (in mode none every model loads)"
            )
        if not available:
            raise NotFoundError(f"model repository {repo} holds no model (expected <model>/config.pbtxt)")
        return available
    if LOAD_ALL in load_models:
        if len(load_models) > 1:
            raise ConfigError(
                f"--load-model {LOAD_ALL} loads every model; give it alone, not with other names"
            )
        return available
    unknown = sorted(set(load_models) - set(available))
    if unknown:
        raise NotFoundError(
            f"--load-model {unknown}: not in model repository {repo} (models there: {available})"
        )
    return sorted(set(load_models))


def load_repository(
    repo: str | Path, options: SessionOptions | None = None, names: Sequence[str] | None = None
) -> dict[str, LoadedModel]:
    """Load the named models (default: all); any refused model stops the server from starting (fail loudly)."""
    if names is None:
        names = startup_models(repo)
    return {name: load_model_dir(Path(repo) / name, options) for name in names}
