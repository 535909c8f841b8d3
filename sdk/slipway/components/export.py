"""Component: export a model to one ONNX file and check its parity with PyTorch."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export_onnx(config: dict, dataset: Input[Dataset], model: Input[Model], onnx_model: Output[Model]):
    from pathlib import Path

    from slipway import steps

    result = steps.export_model(
        steps.begin(config), Path(model.path), Path(dataset.path), Path(onnx_model.path)
    )
    onnx_model.metadata.update(result)
