"""Component: write the Triton model repository for the served model (with its model card and PyTorch checkpoint)
and the drift reference with the registered ONNX model's probabilities; both are logged with the version."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def package_triton(
    config: dict,
    run_id: str,
    version: str,
    student_onnx: Input[Model],
    served_model: Input[Model],
    checkpoint: Input[Model],
    model_card: Input[Artifact],
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
        served_model=Path(served_model.path),
        model_card=Path(model_card.path),
        checkpoint=Path(checkpoint.path),
    )
    model_repository.metadata.update({"format": "triton-model-repository", "model": model_dir.name})
    drift_reference.metadata.update(
        {"purpose": "drift reference", "with": "x, y, probs of the packaged model"}
    )
