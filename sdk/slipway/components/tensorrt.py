"""Component: build a TensorRT engine from ONNX on a GPU node (GPU image: TensorRT matched to Triton)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def build_tensorrt(
    config: dict,
    dataset: Input[Dataset],
    onnx_model: Input[Model],
    int8_model: Input[Model],
    engine: Output[Model],
):
    from pathlib import Path

    from slipway import steps

    result = steps.build_tensorrt_engine(
        steps.begin(config),
        Path(dataset.path),
        Path(onnx_model.path),
        Path(int8_model.path),
        Path(engine.path),
    )
    engine.metadata.update(
        {
            k: result[k]
            for k in (
                "framework",
                "precision",
                "tensorrt_version",
                "gpu_name",
                "compute_capability",
                "sha256",
            )
        }
    )
