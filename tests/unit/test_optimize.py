"""The optimizer's choice (fastest within budget, p99 tiebreak), skipped outputs, config and Triton TRT accelerator."""

from pathlib import Path

import pytest
from evaluations import evaluation
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from slipway.compression.tensorrt import TensorRTUnavailableError, import_tensorrt
from slipway.core.artifacts import ModelArtifact, TensorSpec
from slipway.core.config import ConfigError, load_config
from slipway.core.errors import NotFoundError
from slipway.serving.triton_repository import build_model_config
from slipway.steps.compress import choose, mark_skipped, produced, skip_reason


def test_chooses_the_fastest_candidate_within_budget() -> None:
    evs = {
        "onnx-fp32": evaluation("onnx-fp32", 0.98, 1000),
        "onnx-int8": evaluation("onnx-int8", 0.975, 3000),
        "onnx-fp16": evaluation("onnx-fp16", 0.95, 9000),  # fastest, but 3 points worse: excluded
    }
    sel = choose(evs, reference_accuracy=0.98, budget_points=1.0, skipped={"tensorrt": "no GPU"})
    assert sel.chosen == "onnx-int8"
    assert sel.reasons[0].startswith("chose onnx-int8: 3,000 img/s")
    assert any("onnx-fp16: excluded, accuracy drop 3.00 points > budget 1.00" in r for r in sel.reasons)
    assert any(r == "tensorrt: not measured (no GPU)" for r in sel.reasons)
    assert {c.format: c.eligible for c in sel.candidates} == {
        "onnx-fp32": True,
        "onnx-int8": True,
        "onnx-fp16": False,
        "tensorrt": False,
    }


def test_throughput_tie_is_broken_by_p99() -> None:
    evs = {
        "onnx-fp32": evaluation("onnx-fp32", 0.98, 1000, p99=0.5),
        "onnx-int8": evaluation("onnx-int8", 0.98, 1010, p99=0.9),
    }
    sel = choose(evs, 0.98, 1.0)
    assert sel.chosen == "onnx-fp32"
    assert "lowest p99 wins" in sel.reasons[1]


def test_nothing_within_budget_is_an_error_with_the_numbers() -> None:
    with pytest.raises(NotFoundError, match=r"onnx-int8: accuracy drop 5.00 points > budget 1.00"):
        choose({"onnx-int8": evaluation("onnx-int8", 0.93, 3000)}, 0.98, 1.0)


def test_skipped_outputs_are_not_candidates(tmp_path: Path) -> None:
    path = tmp_path / "int8"
    mark_skipped(path, "compress.quantize.int8 is false")
    assert not produced(path) and not produced(None)
    assert skip_reason(path) == "compress.quantize.int8 is false" and skip_reason(None) == "not produced"


def test_compress_config_defaults_and_validation() -> None:
    cfg = load_config("quickstart")
    assert cfg.compress.prune.method == "structured" and cfg.compress.quantize.per_channel
    assert cfg.triton.tensorrt_accelerator is False
    for preset in ("mnist1d", "optimize"):
        assert load_config(preset).compress.accuracy_budget_points == 1.0
    with pytest.raises(ConfigError, match=r"compress\.quantize\.calibration_method"):
        load_config("quickstart", ["compress.quantize.calibration_method=kl"])
    with pytest.raises(ConfigError, match=r"min_batch <= opt_batch <= max_batch"):
        load_config("quickstart", ["compress.tensorrt.opt_batch=512"])
    with pytest.raises(ConfigError, match=r"compress\.prune\.ratio"):
        load_config("quickstart", ["compress.prune.ratio=1.5"])


def test_triton_tensorrt_accelerator_renders_and_parses_with_tritons_protobuf() -> None:
    cfg = load_config("quickstart", ["triton.tensorrt_accelerator=true", "triton.instance_kind=KIND_GPU"])
    artifact = ModelArtifact(
        file="model.onnx",
        sha256="0" * 64,
        size_bytes=1,
        framework="onnx",
        precision="fp32",
        inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 1, 8, 8])],
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 10])],
    )
    config = build_model_config("m", artifact, cfg.triton)
    parsed = text_format.Parse(text_format.MessageToString(config), mc.ModelConfig())
    (accel,) = parsed.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"


def test_tensorrt_import_error_is_clear() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(TensorRTUnavailableError, match="GPU image"):
            import_tensorrt()
    else:
        pytest.skip("tensorrt is installed here; tests/gpu covers it")
