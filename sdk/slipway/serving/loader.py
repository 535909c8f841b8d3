"""Load a Triton model repository for the local server as Triton's ONNX Runtime backend would: any ONNX model
folder, hand-written or packaged by Slipway.

A model's `config.pbtxt` is completed the way Triton completes it (name from the folder, platform and backend
from the model file, inputs, outputs and max_batch_size from the ONNX graph when the config omits them), its
version is chosen by the config's `version_policy`, and the config is checked against the graph at load, so
that a mismatch fails the start rather than every request. Config features the local server cannot honour
are refused at load with the field named.

Digests: a model file with Slipway's metadata sidecar is checked against its sha256 before ONNX Runtime sees
the bytes (a tampered or truncated file is refused, never served); a file without one loads with a log line
saying that no digest was checked, unless `SessionOptions.require_digest` (`slipway serve --require-digest`)
makes the sidecar mandatory.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2 as mc

from slipway.core.artifacts import ModelArtifact, metadata_path, read_metadata
from slipway.core.errors import ArtifactIntegrityError, ConfigError, NotFoundError, TritonConfigError
from slipway.serving.datatypes import NUMPY_TO_V2, V2_TO_NUMPY, from_triton_type, triton_type
from slipway.serving.torch_runtime import PYTHON_BACKEND, TorchSession, check_python_config, package_path
from slipway.serving.triton_repository import CONFIG_FILE, MODEL_FILES, list_models, parse_model_config

log = logging.getLogger(__name__)

# Opt-in refusal of NaN/Inf in float inputs (Triton accepts them; its load generator sends them):
# parameters { key: "reject_non_finite" value { string_value: "true" } }
REJECT_NON_FINITE_PARAMETER = "reject_non_finite"
# Before Triton's default was adopted, refusal was the default and this parameter opted out; now it has no effect.
OBSOLETE_ALLOW_NON_FINITE_PARAMETER = "allow_non_finite"
ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
ONNX_FILE = MODEL_FILES["onnx"]
# Triton's --backend-config=default-max-batch-size: what autocomplete gives a batchable model without one.
DEFAULT_MAX_BATCH_SIZE = 4

# ONNX element types (as ONNX Runtime spells them) -> Triton config types, for autocomplete and graph checks.
_ORT_TO_TRITON = {
    **{name: triton_type(v2) for name, v2 in NUMPY_TO_V2.items() if name not in ("float32", "float64")},
    "float": "TYPE_FP32",
    "double": "TYPE_FP64",
    "string": "TYPE_STRING",
    "bfloat16": "TYPE_BF16",
}
# Config features the local server cannot honour: refused at load, naming the field.
_UNSUPPORTED_FIELDS = {
    "sequence_batching": "stateful models (sequence batching)",
    "ensemble_scheduling": "ensembles",
    "batch_input": "batch inputs",
    "batch_output": "batch outputs",
    "model_operations": "custom operator libraries",
}
_UNSUPPORTED_TENSOR_FIELDS = {
    "optional": "optional inputs",
    "allow_ragged_batch": "ragged batching",
    "is_shape_tensor": "shape tensors (TensorRT only)",
    "is_non_linear_format_io": "non-linear I/O formats (TensorRT only)",
}
# Accepted and without effect here (Triton uses them for GPUs, caching, warm-up, metric labels): logged at load.
_IGNORED_FIELDS = (
    "optimization",
    "cc_model_filenames",
    "model_warmup",
    "response_cache",
    "model_metrics",
    "metric_tags",
)
# Of Triton's repository agents only its checksum agent runs here (triton-inference-server/checksum_repository_agent:
# parameters `MD5:<file relative to the model folder>` = hex digest, checked before every load); others are refused.
CHECKSUM_AGENT = "checksum"
# dynamic_batching's queue: the batcher (serving/batcher.py) honours preserve_ordering and, of
# default_queue_policy, max_queue_size and default_timeout_microseconds with timeout_action REJECT. It keeps one
# FIFO queue per model, so these are refused at load:
_UNSUPPORTED_BATCHING_FIELDS = {
    "priority_levels": "priority queues",
    "default_priority_level": "priority queues",
    "priority_queue_policy": "per-priority queue policies",
}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the protocol sees it: v2 datatype, numpy dtype, dims without the batch axis."""

    name: str
    datatype: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]


@dataclass(frozen=True)
class _Reshape:
    """Triton's `reshape` for one tensor: the dims on the far side of the model boundary; the -1s there take,
    in order, the sizes of the -1 positions `fill` of the near side (the batch axis stays as it is)."""

    to: tuple[int, ...]
    fill: tuple[int, ...]
    batched: bool

    def apply(self, array: np.ndarray) -> np.ndarray:
        inner = array.shape[1:] if self.batched else array.shape
        sizes = iter([inner[i] for i in self.fill])
        shape = tuple(next(sizes) if d == -1 else d for d in self.to)
        return array.reshape((array.shape[0], *shape) if self.batched else shape)


class TritonSession(ort.InferenceSession):
    """An ONNX Runtime session that applies the config's reshapes: requests' shapes to the graph's on the way
    in, the graph's outputs to the config's dims on the way out."""

    inputs_reshape: Mapping[str, _Reshape] = {}
    outputs_reshape: Mapping[str, _Reshape] = {}

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        if self.inputs_reshape:
            input_feed = {
                name: self.inputs_reshape[name].apply(a) if name in self.inputs_reshape else a
                for name, a in input_feed.items()
            }
        outputs = super().run(output_names, input_feed, run_options)
        if self.outputs_reshape and output_names:
            outputs = [
                self.outputs_reshape[name].apply(out) if name in self.outputs_reshape else out
                for name, out in zip(output_names, outputs, strict=True)
            ]
        return outputs


@dataclass
class LoadedModel:
    """One served model: its (completed) Triton config, the version loaded and one ORT session per instance.

    `artifact` is the Slipway metadata the file was verified against; None when the model came without it
    (an ordinary Triton repository) and no digest was checked.
    """

    name: str
    version: str
    config: mc.ModelConfig
    artifact: ModelArtifact | None
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    sessions: list[ort.InferenceSession] = field(repr=False)
    reject_non_finite: bool = False

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
    """How models load: ORT threads per session (None lets ONNX Runtime decide: all cores), CUDA when a config
    asks for a GPU, and whether a model without Slipway's metadata sidecar (no digest to check) is refused.

    `allow_spinning` is off: ONNX Runtime's intra-op threads otherwise busy-wait after every run, and at
    1,000 single-image requests/s on 2 cores they took the CPU the server's own event loop needs (gRPC p99
    194 ms with spinning, 6.5 ms without; docs/benchmarks.md). Triton keeps ORT's default; Slipway's server
    shares its cores with a Python event loop, so it differs on purpose (`slipway serve --ort-spinning`)."""

    intra_op_threads: int | None = None
    inter_op_threads: int = 1
    prefer_cuda: bool = True
    require_digest: bool = False
    allow_spinning: bool = False


def _tensor_info(model: str, tensor: mc.ModelInput | mc.ModelOutput) -> TensorInfo:
    triton_name = mc.DataType.Name(tensor.data_type)
    datatype = from_triton_type(triton_name)
    if datatype is None:
        raise TritonConfigError(
            f"model {model!r} tensor {tensor.name!r}: data_type {triton_name} is not supported by slipway serve "
            f"(supported: {', '.join(triton_type(t) for t in V2_TO_NUMPY)})"
        )
    return TensorInfo(tensor.name, datatype, V2_TO_NUMPY[datatype], tuple(int(d) for d in tensor.dims))


def _providers(prefer_cuda: bool, kind: int) -> list[str]:
    available = ort.get_available_providers()
    wants_gpu = kind in (mc.ModelInstanceGroup.KIND_GPU, mc.ModelInstanceGroup.KIND_AUTO)
    if prefer_cuda and wants_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _parse_bool(where: str, value: str) -> bool:
    """Triton's boolean parameter values: true/false/1/0, any case."""
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise TritonConfigError(f'{where}: expected "true" or "false", got {value!r}')


def read_serving_config(model_dir: str | Path) -> mc.ModelConfig:
    """REPO/<model>/config.pbtxt read with Triton's protobuf and completed as Triton's server does before the
    backend sees it: name from the folder, platform, backend and default_model_filename for an ONNX model,
    version_policy latest 1. A config Triton would refuse, or one the local server cannot honour, is refused
    with the field named."""
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise NotFoundError(f"{model_dir}: no {CONFIG_FILE}")
    config = parse_model_config(path.read_text(), str(path))
    if not config.name:
        config.name = model_dir.name
    elif config.name != model_dir.name:
        raise TritonConfigError(
            f"{path}: name {config.name!r} must equal the model folder {model_dir.name!r} (Triton refuses it "
            f"too); rename one of them or drop `name`"
        )
    _complete_backend(config, model_dir, path)
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if config.max_batch_size < 0:
        raise TritonConfigError(f"{path}: max_batch_size {config.max_batch_size} must be >= 0")
    _refuse_unsupported(config, path)
    _run_checksum_agent(config, model_dir, path)
    _log_ignored(config)
    return config


def _run_checksum_agent(config: mc.ModelConfig, model_dir: Path, path: Path) -> None:
    """Triton's checksum repository agent: every listed file must have its MD5 before the model loads."""
    for agent in config.model_repository_agents.agents:
        if agent.name != CHECKSUM_AGENT:
            raise TritonConfigError(
                f"{path}: model_repository_agents: agent {agent.name!r} is not supported by slipway serve (only "
                f"Triton's {CHECKSUM_AGENT!r} agent is); remove it, or serve this model with Triton"
            )
        for key, expected in agent.parameters.items():
            algorithm, _, relative = key.partition(":")
            if algorithm != "MD5" or not relative:
                raise TritonConfigError(
                    f"{path}: checksum agent parameter {key!r}: expected MD5:<file relative to the model folder>"
                )
            file = (model_dir / relative).resolve()
            if not file.is_relative_to(model_dir.resolve()) or not file.is_file():
                raise NotFoundError(
                    f"{path}: checksum agent parameter {key!r}: no file {relative} in {model_dir}"
                )
            actual = hashlib.md5(file.read_bytes(), usedforsecurity=False).hexdigest()
            if actual != expected.lower():
                raise ArtifactIntegrityError(
                    f"{path}: checksum agent: {relative} has MD5 {actual}, expected {expected}; refusing to load it"
                )


def _complete_backend(config: mc.ModelConfig, model_dir: Path, path: Path) -> None:
    """Triton's AutoCompleteBackendFields for ONNX: `backend: "onnxruntime"`, `platform: "onnxruntime_onnx"`,
    `default_model_filename: "model.onnx"`, or neither platform nor backend with a model.onnx in the first
    version folder. Backend "python" runs here only for a Slipway AOTInductor package (see
    slipway.serving.torch_runtime); any other backend cannot run here."""
    if config.backend == PYTHON_BACKEND:
        check_python_config(config, model_dir, path)
        return
    if not config.platform and not config.backend and not config.default_model_filename:
        first = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())[:1]
        if first and (first[0] / ONNX_FILE).exists():
            config.backend = ONNX_BACKEND
    if not config.backend and (
        config.platform == ONNX_PLATFORM or config.default_model_filename == ONNX_FILE
    ):
        config.backend = ONNX_BACKEND
    if not config.platform and not config.backend:
        raise TritonConfigError(
            f"{path}: no `platform` or `backend`, and no {ONNX_FILE} in the first version folder to infer them "
            f"from; slipway serve serves ONNX models (platform {ONNX_PLATFORM!r} or backend {ONNX_BACKEND!r})"
        )
    if config.backend != ONNX_BACKEND or config.platform not in ("", ONNX_PLATFORM):
        raise TritonConfigError(
            f"{path}: platform {config.platform!r}, backend {config.backend!r} cannot run in slipway serve, "
            f"which serves ONNX models (platform {ONNX_PLATFORM!r} or backend {ONNX_BACKEND!r}); serve this "
            f"model with Triton"
        )
    config.platform = ONNX_PLATFORM
    config.default_model_filename = config.default_model_filename or ONNX_FILE


def _refuse_unsupported(config: mc.ModelConfig, path: Path) -> None:
    for name, what in _UNSUPPORTED_FIELDS.items():
        if _present(config, name):
            raise TritonConfigError(
                f"{path}: `{name}` ({what}) is not supported by slipway serve; serve with Triton"
            )
    if config.model_transaction_policy.decoupled:
        raise TritonConfigError(
            f"{path}: `model_transaction_policy.decoupled` is not supported by slipway serve; serve with Triton"
        )
    _refuse_unsupported_queue_policy(config, path)
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            for name, what in _UNSUPPORTED_TENSOR_FIELDS.items():
                if name in tensor.DESCRIPTOR.fields_by_name and _present(tensor, name):
                    raise TritonConfigError(
                        f"{path}: {kind} {tensor.name!r}: `{name}` ({what}) is not supported by slipway serve"
                    )


def _refuse_unsupported_queue_policy(config: mc.ModelConfig, path: Path) -> None:
    """Triton's queue policy fields the batcher cannot honour (priorities, DELAY, per-request overrides)."""
    batching = config.dynamic_batching
    for name, what in _UNSUPPORTED_BATCHING_FIELDS.items():
        if _present(batching, name):
            raise TritonConfigError(
                f"{path}: `dynamic_batching.{name}` ({what}) is not supported by slipway serve, which keeps one "
                "FIFO queue per model; drop it, or serve with Triton"
            )
    policy = batching.default_queue_policy
    if policy.timeout_action != mc.ModelQueuePolicy.REJECT:
        raise TritonConfigError(
            f"{path}: `dynamic_batching.default_queue_policy.timeout_action: "
            f"{mc.ModelQueuePolicy.TimeoutAction.Name(policy.timeout_action)}` is not supported by slipway "
            "serve: a request that waits longer than default_timeout_microseconds is rejected (REJECT, the "
            "default); drop it, or serve with Triton"
        )
    if policy.allow_timeout_override:
        raise TritonConfigError(
            f"{path}: `dynamic_batching.default_queue_policy.allow_timeout_override` is not supported by slipway "
            "serve: a request's own `timeout` parameter always bounds its whole wait here (queue and run); drop "
            "the field"
        )


def _log_ignored(config: mc.ModelConfig) -> None:
    ignored = [name for name in _IGNORED_FIELDS if _present(config, name)]
    if ignored:
        log.info(
            "model config fields without effect in slipway serve model=%s fields=%s", config.name, ignored
        )


def _present(message: Any, name: str) -> bool:
    """Whether a config field is set: a non-empty repeated field, a present message, a non-default scalar."""
    descriptor = message.DESCRIPTOR.fields_by_name[name]
    value = getattr(message, name)
    if descriptor.label == descriptor.LABEL_REPEATED:
        return len(value) > 0
    if descriptor.message_type is not None:
        return bool(message.HasField(name))
    return bool(value)


def served_versions(model_dir: str | Path) -> list[int]:
    """The version folders Triton sees: numeric names not starting with 0, ascending."""
    return sorted(
        int(p.name)
        for p in Path(model_dir).iterdir()
        if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")
    )


def choose_version(config: mc.ModelConfig, model_dir: Path, version: int | None = None) -> int:
    """The one version to serve: `version` when named (an experiment's A or B), else the one the config's
    version_policy selects. A policy that selects several versions is refused: slipway serve serves one
    version per model (two during an A/B experiment)."""
    versions = served_versions(model_dir)
    where = f"model {config.name!r}"
    if not versions:
        raise NotFoundError(f"{where}: no numeric version directory under {model_dir}")
    if version is not None:
        if version not in versions:
            raise NotFoundError(
                f"{where}: no version {version} under {model_dir} (versions there: {versions})"
            )
        return version
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        wanted = sorted(set(int(v) for v in policy.specific.versions))
        missing = [v for v in wanted if v not in versions]
        if not wanted or missing:
            raise NotFoundError(
                f"{where}: version_policy specific {{versions: {wanted}}} names versions not under {model_dir} "
                f"({missing or 'none named'}; versions there: {versions})"
            )
        chosen = wanted
        spelled = f"specific {{versions: {wanted}}}"
    elif kind == "all":
        chosen = versions
        spelled = "all {}"
    else:
        count = int(policy.latest.num_versions)
        if count < 1:
            raise TritonConfigError(f"{where}: version_policy latest {{num_versions: {count}}} must be >= 1")
        chosen = versions[-count:]
        spelled = f"latest {{num_versions: {count}}}"
    if len(chosen) > 1:
        raise TritonConfigError(
            f"{where}: version_policy {spelled} selects versions {chosen}; slipway serve serves one version per "
            f"model: use latest {{num_versions: 1}} or specific with one version (or serve with Triton)"
        )
    return chosen[0]


@dataclass(frozen=True)
class _ModelSource:
    """What ONNX Runtime loads (the verified bytes, or the path of a model folder's main file, which finds its
    external data beside it) and the metadata it was verified against (None: no digest checked)."""

    data: bytes | str
    artifact: ModelArtifact | None


def _model_source(
    config: mc.ModelConfig, model_dir: Path, version: int, require_digest: bool
) -> _ModelSource:
    where = f"model {config.name!r} version {version}"
    if config.backend == PYTHON_BACKEND:  # its AOTInductor package, whose metadata names the tensors
        path = package_path(model_dir, version)
        if not path.is_file():
            raise NotFoundError(
                f"{where}: backend {PYTHON_BACKEND!r} is served from {path.name}; {path} is missing"
            )
        data = path.read_bytes()
        return _ModelSource(data, _verify_digest(where, path, data, require_digest=True))
    path = model_dir / str(version) / config.default_model_filename
    if path.is_dir():  # Triton's ONNX folder form: <file>/model.onnx beside its external data files
        main = path / ONNX_FILE
        if not main.is_file():
            raise NotFoundError(f"{where}: model folder {path} has no {ONNX_FILE}")
        if require_digest:
            raise ArtifactIntegrityError(
                f"{where}: {path} is an ONNX model folder (external data files), which Slipway metadata does "
                f"not cover; --require-digest serves only single-file models packaged by Slipway"
            )
        log.warning(
            "no digest checked model=%s version=%d path=%s (ONNX model folder)", config.name, version, path
        )
        return _ModelSource(str(main), None)
    if not path.is_file():
        raise NotFoundError(f"{where}: {path} does not exist")
    data = path.read_bytes()
    artifact = _verify_digest(where, path, data, require_digest)
    return _ModelSource(data, artifact)


def _verify_digest(where: str, path: Path, data: bytes, require_digest: bool) -> ModelArtifact | None:
    """The bytes ONNX Runtime will load, checked against the sidecar's sha256; no sidecar: None, or refused
    when a digest is required."""
    meta = metadata_path(path)
    if not meta.is_file():
        if require_digest:
            raise ArtifactIntegrityError(
                f"{where}: no Slipway metadata {meta.name} beside {path}, so its sha256 cannot be checked; "
                f"--require-digest serves only models packaged by Slipway (or serve without --require-digest)"
            )
        log.warning("no digest checked for %s: no Slipway metadata %s beside %s", where, meta.name, path)
        return None
    artifact = read_metadata(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != artifact.sha256:
        raise ArtifactIntegrityError(
            f"{path}: sha256 {actual} does not match metadata {artifact.sha256}; refusing to load it"
        )
    return artifact


def verify_version_digest(model_dir: str | Path, version: int) -> ModelArtifact:
    """Check one packaged version's file against its Slipway metadata (required), without loading it: the
    deploy step's check before it hands a version to a running server."""
    model_dir = Path(model_dir)
    config = read_serving_config(model_dir)
    source = _model_source(config, model_dir, choose_version(config, model_dir, version), require_digest=True)
    assert source.artifact is not None  # require_digest=True: a missing sidecar raised
    return source.artifact


def _new_session(source: _ModelSource, options: SessionOptions, kind: int) -> TritonSession:
    if source.artifact is not None and source.artifact.framework == "aoti":
        assert isinstance(source.data, bytes)
        # duck-typed: run/get_inputs/get_outputs/get_providers are all that serving calls on a session
        session = TorchSession(source.data, source.artifact, source.artifact.file, options.intra_op_threads)
        return cast(TritonSession, session)
    so = ort.SessionOptions()
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    return TritonSession(source.data, sess_options=so, providers=_providers(options.prefer_cuda, kind))


def _graph_dims(arg: Any) -> list[int] | None:
    """A graph tensor's shape with symbolic or unknown sizes as -1; None when ONNX Runtime knows no shape."""
    if arg.shape is None:
        return None
    return [d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape]


def _graph_type(arg: Any) -> str:
    element = str(arg.type).removeprefix("tensor(").removesuffix(")")
    return _ORT_TO_TRITON.get(element, f"ONNX {arg.type}")


def autocomplete_config(config: mc.ModelConfig, session: ort.InferenceSession) -> None:
    """Triton's ONNX Runtime autocomplete, for a config that omits its inputs or outputs: max_batch_size
    (DEFAULT_MAX_BATCH_SIZE, with dynamic batching, when every graph tensor has a variable first dim; refused
    when the graph cannot batch and the config says it can), then the missing tensors from the graph."""
    graph_inputs, graph_outputs = session.get_inputs(), session.get_outputs()
    shapes = [_graph_dims(arg) for arg in [*graph_inputs, *graph_outputs]]
    can_batch = all(s and s[0] == -1 for s in shapes)
    if can_batch:
        if config.max_batch_size == 0:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            log.warning(
                "autofilled max_batch_size=%d for model %s: the graph can batch and the config names no "
                "max_batch_size",
                DEFAULT_MAX_BATCH_SIZE,
                config.name,
            )
        if config.max_batch_size > 1 and not config.HasField("dynamic_batching"):
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        raise TritonConfigError(
            f"autofill failed for model {config.name!r}: the graph does not support batching (not every "
            f"input and output has a variable first dimension) while max_batch_size is "
            f"{config.max_batch_size}; set max_batch_size: 0"
        )
    batched = config.max_batch_size > 0
    for tensors, graph in ((config.input, graph_inputs), (config.output, graph_outputs)):
        if len(tensors):
            continue
        for arg in graph:
            tensor = tensors.add()
            tensor.name = arg.name
            data_type = _graph_type(arg)
            if data_type not in mc.DataType.DESCRIPTOR.values_by_name:
                raise TritonConfigError(
                    f"autofill failed for model {config.name!r}: tensor {arg.name!r} has type {arg.type}"
                )
            tensor.data_type = mc.DataType.Value(data_type)
            dims = (_graph_dims(arg) or [])[1 if batched else 0 :]
            if dims:
                tensor.dims.extend(dims)
            else:  # only the batch axis (or a scalar): Triton's dims [1], with reshape [] when batched
                tensor.dims.append(1)
                if batched:
                    tensor.reshape.SetInParent()
    log.info(
        "model config autocompleted from the ONNX graph model=%s max_batch_size=%d inputs=%s outputs=%s",
        config.name,
        config.max_batch_size,
        [t.name for t in config.input],
        [t.name for t in config.output],
    )


def _trunks(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs of fixed sizes between variable (-1) dims: [2, 4, -1, 6] -> [8, 6]."""
    counts = [1]
    for d in dims:
        if d == -1:
            counts.append(1)
        else:
            counts[-1] *= d
    return counts


def _check_tensors(config: mc.ModelConfig, where: Path | str) -> None:
    """Triton's shape rules (ValidateIOShape): non-empty dims of sizes >= 1 or -1; a reshape of sizes >= 1 or
    -1 with the same element count between each pair of variable dims (an empty reshape: dims of one element,
    batched models only); at least one input and one output."""
    if not config.input or not config.output:
        raise TritonConfigError(f"{where}: needs at least one input and one output")
    batched = config.max_batch_size > 0
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            label = f"{where}: {kind} {tensor.name!r}"
            dims = list(tensor.dims)
            if not dims or any(d == 0 or d < -1 for d in dims):
                raise TritonConfigError(f"{label}: dims {dims} must be non-empty, each >= 1 or -1")
            if not tensor.HasField("reshape"):
                continue
            shape = list(tensor.reshape.shape)
            if not shape and not batched:
                raise TritonConfigError(
                    f"{label}: an empty reshape needs max_batch_size > 0 (scalar tensors are not supported)"
                )
            if any(d == 0 or d < -1 for d in shape) or _trunks(dims) != _trunks(shape):
                raise TritonConfigError(
                    f"{label}: reshape {shape} must have sizes >= 1 or -1 and the element count of dims "
                    f"{dims} (between each pair of -1)"
                )
    prefs = list(config.dynamic_batching.preferred_batch_size)
    if any(p < 1 or p > config.max_batch_size for p in prefs):
        raise TritonConfigError(
            f"{where}: dynamic_batching.preferred_batch_size {prefs} must lie in 1..max_batch_size "
            f"({config.max_batch_size})"
        )


def _model_shape(config: mc.ModelConfig, tensor: mc.ModelInput | mc.ModelOutput) -> list[int]:
    """The shape the graph sees: the reshape (or dims), after the batch axis of a batched model."""
    inner = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    return [-1, *inner] if config.max_batch_size > 0 else inner


def _check_graph(config: mc.ModelConfig, session: ort.InferenceSession) -> None:
    """The config must match the graph, as Triton's ONNX Runtime backend checks at load: the same input names,
    known output names, equal datatypes, and shapes the graph accepts. A mismatch would fail every request."""
    name = config.name
    graph_inputs = {arg.name: arg for arg in session.get_inputs()}
    graph_outputs = {arg.name: arg for arg in session.get_outputs()}
    inputs = [t.name for t in config.input]
    if set(inputs) != set(graph_inputs):
        raise TritonConfigError(
            f"model {name!r}: config inputs {sorted(inputs)} differ from the graph's {sorted(graph_inputs)}"
        )
    unknown = sorted({t.name for t in config.output} - set(graph_outputs))
    if unknown:
        raise TritonConfigError(
            f"model {name!r}: config output(s) {unknown} not in the graph (its outputs: {sorted(graph_outputs)})"
        )
    for kind, tensors, graph in (
        ("input", config.input, graph_inputs),
        ("output", config.output, graph_outputs),
    ):
        for tensor in tensors:
            arg = graph[tensor.name]
            label = f"model {name!r} {kind} {tensor.name!r}"
            declared = mc.DataType.Name(tensor.data_type)
            if _graph_type(arg) != declared:
                raise TritonConfigError(f"{label}: data_type {declared} but the graph has {_graph_type(arg)}")
            graph_shape = _graph_dims(arg)
            if graph_shape is None:
                continue
            want = _model_shape(config, tensor)
            fits = len(want) == len(graph_shape) and all(
                g in (-1, w) for w, g in zip(want, graph_shape, strict=True)
            )
            if not fits:
                field_name = "reshape" if tensor.HasField("reshape") else "dims"
                batch = " with the batch axis of max_batch_size > 0" if config.max_batch_size > 0 else ""
                raise TritonConfigError(
                    f"{label}: {field_name} give shape {want}{batch}, but the graph's is {graph_shape} "
                    f"(-1: any size)"
                )


def _reshapes(
    config: mc.ModelConfig,
) -> tuple[dict[str, _Reshape], dict[str, _Reshape]]:
    batched = config.max_batch_size > 0
    inputs = {
        t.name: _Reshape(tuple(t.reshape.shape), tuple(i for i, d in enumerate(t.dims) if d == -1), batched)
        for t in config.input
        if t.HasField("reshape")
    }
    outputs = {
        t.name: _Reshape(tuple(t.dims), tuple(i for i, d in enumerate(t.reshape.shape) if d == -1), batched)
        for t in config.output
        if t.HasField("reshape")
    }
    return inputs, outputs


def _reject_non_finite(config: mc.ModelConfig) -> bool:
    if OBSOLETE_ALLOW_NON_FINITE_PARAMETER in config.parameters:
        log.warning(
            "model %s: parameter %s has no effect: NaN/Inf inputs are accepted by default (as Triton does); "
            'set parameter %s to "true" to refuse them',
            config.name,
            OBSOLETE_ALLOW_NON_FINITE_PARAMETER,
            REJECT_NON_FINITE_PARAMETER,
        )
    param = config.parameters.get(REJECT_NON_FINITE_PARAMETER)
    if param is None:
        return False
    return _parse_bool(f"model {config.name!r}: parameter {REJECT_NON_FINITE_PARAMETER}", param.string_value)


def load_model_dir(
    model_dir: str | Path, options: SessionOptions | None = None, version: int | None = None
) -> LoadedModel:
    """Load one version of a model (default: the one its version_policy selects), refusing a file whose sha256
    differs from its metadata (and, with `require_digest`, one without metadata); a version that is not there
    is a NotFoundError naming it and the versions that are."""
    options = options or SessionOptions()
    model_dir = Path(model_dir)
    config = read_serving_config(model_dir)
    version = choose_version(config, model_dir, version)
    source = _model_source(config, model_dir, version, options.require_digest)
    groups = list(config.instance_group) or [mc.ModelInstanceGroup(count=1)]
    first = _new_session(source, options, groups[0].kind)
    if not config.input or not config.output:
        autocomplete_config(config, first)
    _check_tensors(config, model_dir / CONFIG_FILE)
    inputs = {t.name: _tensor_info(config.name, t) for t in config.input}
    outputs = {t.name: _tensor_info(config.name, t) for t in config.output}
    _check_graph(config, first)
    inputs_reshape, outputs_reshape = _reshapes(config)
    sessions: list[ort.InferenceSession] = []
    for group in groups:
        for _ in range(max(1, group.count)):
            session = first if not sessions else _new_session(source, options, group.kind)
            session.inputs_reshape, session.outputs_reshape = inputs_reshape, outputs_reshape
            sessions.append(session)
    reject_non_finite = _reject_non_finite(config)
    log.info(
        "model loaded name=%s version=%d instances=%d providers=%s threads=%s sha256=%s reject_non_finite=%s",
        config.name,
        version,
        len(sessions),
        sessions[0].get_providers(),
        options.intra_op_threads or "auto",
        source.artifact.sha256[:12] if source.artifact else "unchecked",
        reject_non_finite,
    )
    return LoadedModel(
        name=config.name,
        version=str(version),
        config=config,
        artifact=source.artifact,
        inputs=inputs,
        outputs=outputs,
        sessions=sessions,
        reject_non_finite=reject_non_finite,
    )


MODEL_CONTROL_MODES = ("none", "explicit", "poll")
LOAD_ALL = "*"


def check_model_control_mode(mode: str) -> None:
    if mode not in MODEL_CONTROL_MODES:
        raise ConfigError(f"model control mode {mode!r} is not one of {', '.join(MODEL_CONTROL_MODES)}")


def startup_models(repo: str | Path, mode: str = "none", load_models: Sequence[str] = ()) -> list[str]:
    """The models to load before the server opens its ports, with Triton's rules for each control mode.

    none: every model of the repository (and --load-model is refused: it would have no effect). poll: the same,
    and an empty repository is allowed (models may be added later). explicit: only the --load-model names, `*`
    alone meaning all of them; an empty list starts the server with no model.
    """
    check_model_control_mode(mode)
    available = list_models(repo)
    without_config = sorted(
        p.name
        for p in Path(repo).iterdir()
        if p.is_dir() and not (p / CONFIG_FILE).exists() and served_versions(p)
    )
    if without_config:
        log.warning(
            "model folders without %s are not served (Triton would generate a config for them): %s",
            CONFIG_FILE,
            without_config,
        )
    if mode in ("none", "poll"):
        if load_models:
            raise ConfigError(
                f"--load-model needs --model-control-mode explicit (in mode {mode} every model loads)"
            )
        if not available and mode == "none":
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
