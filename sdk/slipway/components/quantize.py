"""Component: INT8 (static, QDQ) and FP16 ONNX from an FP32 ONNX model, each checked against it."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def quantize(
    config: dict,
    dataset: Input[Dataset],
    onnx_model: Input[Model],
    int8_model: Output[Model],
    fp16_model: Output[Model],
):
    from pathlib import Path

    from slipway import steps

    results = steps.quantize_onnx(
        steps.begin(config),
        Path(dataset.path),
        Path(onnx_model.path),
        Path(int8_model.path),
        Path(fp16_model.path),
    )
    for name, output in (("int8", int8_model), ("fp16", fp16_model)):
        output.metadata.update(
            {k: v for k, v in results.get(name, {"skipped": True}).items() if k != "attempts"}
        )
