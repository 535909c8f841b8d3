"""Component: write the Triton model repository for the student and log it with the registered version."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def package_triton(
    config: dict, run_id: str, version: str, student_onnx: Input[Model], model_repository: Output[Model]
):
    from pathlib import Path

    from slipway import steps

    model_dir = steps.package_for_triton(
        steps.begin(config), run_id, version, Path(student_onnx.path), Path(model_repository.path)
    )
    model_repository.metadata.update({"format": "triton-model-repository", "model": model_dir.name})
