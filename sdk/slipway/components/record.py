"""Component: log what the cached steps produced (numbers, files, lineage) into this run's MLflow run, and show
the chosen candidate's evaluation in the KFP UI (its metrics and confusion matrix)."""

from kfp import dsl
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

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
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
):
    from pathlib import Path

    from slipway import steps

    def produced(artifact) -> "steps.Produced":
        return steps.Produced(artifact.uri, Path(artifact.path), dict(artifact.metadata))

    chosen = steps.record_run(
        steps.begin(config),
        run_id,
        produced(dataset),
        {"teacher": produced(teacher), "student": produced(student), "pruned": produced(pruned)},
        {"int8": produced(int8_model), "fp16": produced(fp16_model)},
        produced(report),
        produced(selection_report),
        produced(confusion_matrix),
    )
    for name, value in chosen.metrics.items():
        metrics.log_metric(name, value)
    classification_metrics.log_confusion_matrix(chosen.class_names, chosen.confusion_matrix)
