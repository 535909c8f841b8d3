"""Triton repository: typed config from graph metadata, parsed back with Triton's protobuf, sha256 enforced."""

from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from slipway.compression.onnx_export import export_onnx
from slipway.core.artifacts import read_metadata
from slipway.core.config import ModelSpec, TritonConfig
from slipway.core.errors import ArtifactIntegrityError, TritonConfigError
from slipway.core.models import build_model
from slipway.serving.triton_repository import (
    build_model_config,
    list_models,
    model_versions,
    parse_model_config,
    read_model_config,
    validate_model_config,
    write_model,
)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    export_onnx(build_model(ModelSpec(architecture="student_cnn"), (1, 8, 8), 10), (1, 8, 8), path)
    return path


def test_repository_layout_and_config(tmp_path: Path, onnx_model: Path) -> None:
    cfg = TritonConfig(
        max_batch_size=32, preferred_batch_sizes=[4, 16], max_queue_delay_us=250, instance_count=2
    )
    model_dir = write_model(tmp_path, "digits", onnx_model, cfg)
    assert (model_dir / "1" / "model.onnx").is_file() and (model_dir / "config.pbtxt").is_file()
    assert list_models(tmp_path) == ["digits"] and model_versions(model_dir) == [1]
    config = read_model_config(model_dir)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [("input", [1, 8, 8], mc.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [10])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert (
        config.instance_group[0].count == 2
        and config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    )
    assert read_metadata(model_dir / "1" / "model.onnx").file == "model.onnx"


def test_tampered_artifact_is_refused(tmp_path: Path, onnx_model: Path) -> None:
    copy = tmp_path / "m.onnx"
    copy.write_bytes(onnx_model.read_bytes() + b"\0")
    (tmp_path / "m.onnx.meta.json").write_text((onnx_model.parent / "student.onnx.meta.json").read_text())
    with pytest.raises(ArtifactIntegrityError, match="does not match metadata"):
        write_model(tmp_path / "repo", "m", copy, TritonConfig())


def test_tensorrt_accelerator_renders_into_optimization(onnx_model: Path) -> None:
    config = build_model_config("m", read_metadata(onnx_model), TritonConfig(tensorrt_accelerator=True))
    back = parse_model_config(text_format.MessageToString(config))
    accel = back.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"


def test_unbatched_when_max_batch_size_is_zero(onnx_model: Path) -> None:
    config = build_model_config(
        "m", read_metadata(onnx_model), TritonConfig(max_batch_size=0, preferred_batch_sizes=[])
    )
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 1, 8, 8]
    assert not config.HasField("dynamic_batching")


def test_batched_without_dynamic_batching(onnx_model: Path) -> None:
    config = build_model_config("m", read_metadata(onnx_model), TritonConfig(max_batch_size=8,
                                preferred_batch_sizes=[], dynamic_batching=False))  # fmt: skip
    assert config.max_batch_size == 8 and list(config.input[0].dims) == [1, 8, 8]
    assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'name: "other" platform: "onnxruntime_onnx" input {name: "a" dims: 1} output {name: "b" dims: 1}',
            "must equal the directory",
        ),
        (
            'name: "m" platform: "pytorch_libtorch" input {name: "a" dims: 1} output {name: "b" dims: 1}',
            "platform",
        ),
        ('name: "m" platform: "onnxruntime_onnx"', "at least one input"),
        (
            'name: "m" platform: "onnxruntime_onnx" input {name: "a" dims: 0} output {name: "b" dims: 1}',
            "invalid dims",
        ),
    ],
)
def test_invalid_configs_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(TritonConfigError, match=message):
        validate_model_config(parse_model_config(text), tmp_path / "m")


def test_unparseable_config_names_the_file() -> None:
    with pytest.raises(TritonConfigError, match="not a valid Triton model config"):
        parse_model_config("name: 3 3 3")
