"""TensorRT engines (FP16, INT8 from QDQ): built, parity-checked against ONNX Runtime, metadata recorded.

Needs `tensorrt` and a CUDA GPU (the GPU image); skipped elsewhere with the reason printed.
"""

from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (only the GPU image has it)")
torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT needs a CUDA GPU; none is visible"),
]


@pytest.fixture(scope="module")
def onnx_models(digits_splits, tmp_path_factory):
    from slipway.compression.onnx_export import export_onnx
    from slipway.compression.quantize import calibration_sample, quantize_int8
    from slipway.core.artifacts import write_metadata
    from slipway.core.config import ModelSpec, QuantizeConfig, TrainConfig
    from slipway.core.models import build_model
    from slipway.training.loop import train

    s = digits_splits
    out = tmp_path_factory.mktemp("trt")
    model = build_model(ModelSpec(architecture="student_cnn"), s.input_shape, s.num_classes)
    train(model, s.x_train, s.y_train, s.x_val, s.y_val, TrainConfig(epochs=3), 0, out / "ckpt")
    fp32 = out / "model.onnx"
    write_metadata(fp32, export_onnx(model, s.input_shape, fp32))
    int8 = out / "int8.onnx"
    quantize_int8(
        fp32,
        int8,
        calibration_sample(s.x_train, 128, 0),
        s.x_val,
        s.x_test,
        s.y_test,
        QuantizeConfig(activation_type="int8"),
    )
    return fp32, int8


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_builds_with_profile_cache_and_metadata(precision, onnx_models, digits_splits, tmp_path: Path):
    from slipway.compression.tensorrt import TensorRTRunner, build_engine
    from slipway.core.artifacts import read_metadata
    from slipway.core.config import TensorRTConfig

    fp32, int8 = onnx_models
    cfg = TensorRTConfig(
        int8=precision == "int8",
        min_batch=1,
        opt_batch=32,
        max_batch=64,
        workspace_mb=256,
        timing_cache=str(tmp_path / "timing.cache"),
    )
    engine = tmp_path / "model.plan"
    artifact = build_engine(int8 if precision == "int8" else fp32, engine, cfg, digits_splits.x_val[:256])
    assert artifact.framework == "tensorrt" and artifact.precision == precision
    assert artifact.tensorrt_version == trt.__version__ and artifact.compute_capability and artifact.gpu_name
    assert artifact.extra["top1_agreement"] >= 0.99
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert read_metadata(engine).sha256 == artifact.sha256
    assert TensorRTRunner(engine).predict(digits_splits.x_test[:100]).shape == (100, 10)
