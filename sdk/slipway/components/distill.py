"""Component: distil the student from the frozen teacher (cached: its slice only)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def distill_student(
    config: dict, dataset: Input[Dataset], teacher: Input[Model], model: Output[Model]
) -> float:
    """Returns the best validation accuracy."""
    from pathlib import Path

    from slipway import steps

    cfg = steps.begin(config)
    result = steps.distill_student(cfg, Path(dataset.path), Path(teacher.path), Path(model.path))
    model.metadata.update(steps.training_metadata("student", result, Path(model.path)))
    return result.best_val_accuracy
