"""Component: register the student in MLflow as a new version with alias `challenger`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    config: dict,
    run_id: str,
    student_onnx: Input[Model],
    checkpoint: Input[Model],
    dataset: Input[Dataset],
    report: Input[Artifact],
    decision: Input[Artifact],
) -> str:
    """Returns the registered model version."""
    from pathlib import Path

    from slipway import steps

    version = steps.register_candidate(
        steps.begin(config),
        run_id,
        Path(student_onnx.path),
        Path(checkpoint.path),
        Path(dataset.path),
        Path(report.path),
        Path(decision.path),
    )
    return version.version
