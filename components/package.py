"""Component: write the Triton model repository for the student and the drift reference with the packaged
model's probabilities; both are logged with the registered version."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def package_triton(
    config: dict,
    run_id: str,
    version: str,
    student_onnx: Input[Model],
    reference: Input[Dataset],
    model_repository: Output[Model],
    drift_reference: Output[Dataset],
):
    from pathlib import Path

    from slipway import steps

    model_dir = steps.package_for_triton(
        steps.begin(config),
        run_id,
        version,
        Path(student_onnx.path),
        Path(reference.path),
        Path(model_repository.path),
        Path(drift_reference.path),
    )
    model_repository.metadata.update({"format": "triton-model-repository", "model": model_dir.name})
    drift_reference.metadata.update(
        {"purpose": "drift reference", "with": "x, y, probs of the packaged model"}
    )
