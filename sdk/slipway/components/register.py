"""Component: register the student in MLflow as a new version with alias `challenger`, and its model card."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def register(
    config: dict,
    run_id: str,
    student_onnx: Input[Model],
    served_model: Input[Model],
    checkpoint: Input[Model],
    teacher: Input[Model],
    dataset: Input[Dataset],
    report: Input[Artifact],
    selection_report: Input[Artifact],
    explanation: Input[Artifact],
    decision: Input[Artifact],
    model_card: Output[Artifact],
) -> str:
    """Returns the registered model version; `model_card` is a folder (model_card.md, .html, .json)."""
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
        selection_path=Path(selection_report.path),
        explanation_dir=Path(explanation.path),
        teacher_path=Path(teacher.path),
        card_dir=Path(model_card.path),
        served_path=Path(served_model.path),
    )
    model_card.metadata.update({"model": version.model_name, "version": version.version})
    return version.version
