"""Component: log what the cached steps produced (numbers, files, lineage) into this run's MLflow run."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def record_run(
    config: dict,
    run_id: str,
    dataset: Input[Dataset],
    teacher: Input[Model],
    student: Input[Model],
    pruned: Input[Model],
    int8_model: Input[Model],
    fp16_model: Input[Model],
    report: Input[Artifact],
    selection_report: Input[Artifact],
    confusion_matrix: Input[Artifact],
):
    from pathlib import Path

    from slipway import steps

    def produced(artifact) -> "steps.Produced":
        return steps.Produced(artifact.uri, Path(artifact.path), dict(artifact.metadata))

    steps.record_run(
        steps.begin(config),
        run_id,
        produced(dataset),
        {"teacher": produced(teacher), "student": produced(student), "pruned": produced(pruned)},
        {"int8": produced(int8_model), "fp16": produced(fp16_model)},
        produced(report),
        produced(selection_report),
        produced(confusion_matrix),
    )
