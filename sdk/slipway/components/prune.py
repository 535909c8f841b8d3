"""Component: prune the student (structured or unstructured) and fine-tune it by distillation (cached)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prune(
    config: dict,
    dataset: Input[Dataset],
    model: Input[Model],
    teacher: Input[Model],
    pruned_model: Output[Model],
) -> float:
    """Returns the validation accuracy after fine-tuning."""
    from pathlib import Path

    from slipway import steps

    report = steps.prune_student(
        steps.begin(config),
        Path(dataset.path),
        Path(model.path),
        Path(teacher.path),
        Path(pruned_model.path),
    )
    pruned_model.metadata.update(
        {"framework": "pytorch", "role": "pruned", **report.model_dump(exclude={"channels"})}
    )
    return report.val_accuracy_finetuned
