"""Triton model repository: written only from typed config, read back and checked with Triton's protobuf.

Layout: REPO/<model>/config.pbtxt and REPO/<model>/<version>/model.<onnx|plan> (+ metadata sidecar). An
AOTInductor package is served by Triton's Python backend: REPO/<model>/<version>/model.pt2 (+ sidecar) and the
model.py that loads it (slipway.serving.triton_aoti_model, copied verbatim), with `backend: "python"`.
Tensor names, dtypes and shapes come from the exported graph's metadata, never typed by hand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from slipway.core.artifacts import ModelArtifact, TensorSpec, sha256_file, verify_artifact, write_metadata
from slipway.core.config import TritonConfig
from slipway.core.errors import NotFoundError, TritonConfigError
from slipway.serving.datatypes import NUMPY_TO_V2, triton_type

CONFIG_FILE = "config.pbtxt"
PLATFORMS = {"onnx": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
BACKENDS = {"aoti": "python"}  # frameworks Triton serves through a backend rather than a platform
MODEL_FILES = {"onnx": "model.onnx", "tensorrt": "model.plan", "aoti": "model.pt2"}
PYTHON_MODEL_FILE = "model.py"  # what Triton's Python backend loads (its default_model_filename)
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_aoti_model.py")
# Beside the served model, for explanations: the PyTorch checkpoint the version came from (with a digest sidecar),
# and the version's model card. Triton loads only the model file and ignores them.
EXPLAIN_CHECKPOINT = Path("explain") / "model.pt"
MODEL_CARD_FILES = {"markdown": "model_card.md", "html": "model_card.html"}


def _tensor(spec: TensorSpec, batched: bool, message: mc.ModelInput | mc.ModelOutput) -> None:
    datatype = NUMPY_TO_V2.get(spec.dtype)
    if datatype is None:
        raise TritonConfigError(f"tensor {spec.name!r}: dtype {spec.dtype} has no Triton type")
    dims = spec.shape[1:] if batched else spec.shape
    message.name = spec.name
    message.data_type = mc.DataType.Value(triton_type(datatype))
    message.dims.extend(dims)


def build_model_config(name: str, artifact: ModelArtifact, triton: TritonConfig) -> mc.ModelConfig:
    """Triton ModelConfig for an ONNX or TensorRT artifact, or an AOTInductor package (Python backend), batch
    axis taken from the graph's first dim."""
    if artifact.framework not in PLATFORMS and artifact.framework not in BACKENDS:
        raise TritonConfigError(
            f"framework {artifact.framework!r} cannot be served by Triton; export it first"
        )
    batched = triton.max_batch_size > 0 and all(t.shape and t.shape[0] == -1 for t in artifact.inputs)
    config = mc.ModelConfig(name=name, max_batch_size=triton.max_batch_size if batched else 0)
    if artifact.framework in BACKENDS:
        config.backend = BACKENDS[artifact.framework]  # the Python backend loads model.py by default
    else:
        config.platform = PLATFORMS[artifact.framework]
        config.default_model_filename = MODEL_FILES[artifact.framework]
    for spec in artifact.inputs:
        _tensor(spec, batched, config.input.add())
    for spec in artifact.outputs:
        _tensor(spec, batched, config.output.add())
    if batched and triton.dynamic_batching:
        config.dynamic_batching.preferred_batch_size.extend(triton.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = triton.max_queue_delay_us
    group = config.instance_group.add()
    group.count = triton.instance_count
    group.kind = mc.ModelInstanceGroup.Kind.Value(triton.instance_kind)
    if artifact.framework == "aoti":  # a package runs only on the device it was compiled for
        group.kind = (
            mc.ModelInstanceGroup.KIND_GPU if artifact.compute_capability else mc.ModelInstanceGroup.KIND_CPU
        )
    if triton.tensorrt_accelerator and artifact.framework == "onnx":
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
        accel.name = "tensorrt"
        accel.parameters["precision_mode"] = "FP16"
        accel.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return config


def parse_model_config(text: str, source: str = CONFIG_FILE) -> mc.ModelConfig:
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as err:
        raise TritonConfigError(f"{source}: not a valid Triton model config: {err}") from None


def validate_model_config(config: mc.ModelConfig, model_dir: Path) -> None:
    """The checks Triton would make at load time, for the subset of features we write."""
    where = model_dir / CONFIG_FILE
    if config.name != model_dir.name:
        raise TritonConfigError(f"{where}: name {config.name!r} must equal the directory {model_dir.name!r}")
    if config.backend in BACKENDS.values():
        missing = [
            v for v in model_versions(model_dir) if not (model_dir / str(v) / PYTHON_MODEL_FILE).is_file()
        ]
        if config.platform or missing:
            raise TritonConfigError(
                f"{where}: backend {config.backend!r} takes no platform (got {config.platform!r}) and needs "
                f"{PYTHON_MODEL_FILE} in every version folder (missing in {missing})"
            )
    elif config.platform not in PLATFORMS.values():
        raise TritonConfigError(f"{where}: platform {config.platform!r} not in {sorted(PLATFORMS.values())}")
    if not config.input or not config.output:
        raise TritonConfigError(f"{where}: needs at least one input and one output")
    for tensor in [*config.input, *config.output]:
        if any(d == 0 or d < -1 for d in tensor.dims):
            raise TritonConfigError(f"{where}: tensor {tensor.name!r} has invalid dims {list(tensor.dims)}")
    prefs = list(config.dynamic_batching.preferred_batch_size)
    if config.max_batch_size and any(p > config.max_batch_size for p in prefs):
        raise TritonConfigError(f"{where}: preferred_batch_size {prefs} exceeds max_batch_size")


def read_model_config(model_dir: str | Path) -> mc.ModelConfig:
    model_dir = Path(model_dir)
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        raise NotFoundError(f"{model_dir}: no {CONFIG_FILE}")
    config = parse_model_config(path.read_text(), str(path))
    validate_model_config(config, model_dir)
    return config


def model_versions(model_dir: str | Path) -> list[int]:
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())


def list_models(repo: str | Path) -> list[str]:
    repo = Path(repo)
    if not repo.is_dir():
        raise NotFoundError(f"model repository {repo} does not exist")
    return sorted(p.name for p in repo.iterdir() if (p / CONFIG_FILE).is_file())


def write_model(
    repo: str | Path,
    name: str,
    model_path: str | Path,
    triton: TritonConfig,
    version: int = 1,
) -> Path:
    """Copy a verified artifact into REPO/<name>/<version>/ and write its config.pbtxt; returns the model dir."""
    artifact = verify_artifact(model_path)
    model_dir = Path(repo) / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / MODEL_FILES[artifact.framework]
    shutil.copyfile(model_path, target)
    write_metadata(target, artifact.model_copy(update={"file": target.name}))
    if artifact.framework in BACKENDS:
        shutil.copyfile(PYTHON_MODEL_SOURCE, version_dir / PYTHON_MODEL_FILE)
    config = build_model_config(name, artifact, triton)
    (model_dir / CONFIG_FILE).write_text(text_format.MessageToString(config))
    read_model_config(model_dir)  # read back through Triton's own protobuf
    verify_artifact(target)
    return model_dir


def stage_version(source_model_dir: str | Path, version: int, repo: str | Path) -> Path:
    """Copy one version of a model (its folder and config.pbtxt) into a served repository, atomically: the
    folder is staged under a non-numeric name and renamed, so a server never sees half of it. The same
    version again replaces the old copy. Returns REPO/<model>/<version>."""
    source = Path(source_model_dir)
    if not (source / str(version)).is_dir():
        raise NotFoundError(
            f"{source}: no version folder {version} (versions there: {model_versions(source)})"
        )
    target = Path(repo) / source.name
    target.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=target))
    shutil.copytree(source / str(version), staged, dirs_exist_ok=True)
    shutil.copyfile(source / CONFIG_FILE, staged / CONFIG_FILE)
    shutil.rmtree(target / str(version), ignore_errors=True)
    os.replace(staged / CONFIG_FILE, target / CONFIG_FILE)
    os.replace(staged, target / str(version))
    return target / str(version)


def write_explain_checkpoint(version_dir: str | Path, checkpoint: str | Path) -> Path:
    """Copy the version's PyTorch checkpoint to VERSION/explain/model.pt with a sha256 sidecar."""
    target = Path(version_dir) / EXPLAIN_CHECKPOINT
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, target)
    artifact = ModelArtifact(
        file=target.name,
        sha256=sha256_file(target),
        size_bytes=target.stat().st_size,
        framework="pytorch",
        precision="fp32",
        inputs=[],
        outputs=[],
    )
    write_metadata(target, artifact)
    return target


def explain_checkpoint(version_dir: str | Path) -> Path:
    """The verified checkpoint of a served version; NotFoundError when it was packaged without one."""
    path = Path(version_dir) / EXPLAIN_CHECKPOINT
    if not path.is_file():
        raise NotFoundError(
            f"{Path(version_dir).parent.name} version {Path(version_dir).name} has no PyTorch checkpoint "
            f"at {EXPLAIN_CHECKPOINT}: only versions packaged with their checkpoint can be explained"
        )
    verify_artifact(path)
    return path
