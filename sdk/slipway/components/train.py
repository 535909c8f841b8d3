"""Component: train the teacher (cached: its slice only; the numbers travel in the model's metadata)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_teacher(config: dict, dataset: Input[Dataset], model: Output[Model]) -> float:
    """Returns the best validation accuracy."""
    from pathlib import Path

    from slipway import steps

    result = steps.train_teacher(steps.begin(config), Path(dataset.path), Path(model.path))
    model.metadata.update(steps.training_metadata("teacher", result, Path(model.path)))
    return result.best_val_accuracy
