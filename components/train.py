"""Component: train the teacher."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def train_teacher(config: dict, run_id: str, dataset: Input[Dataset], model: Output[Model]) -> float:
    """Returns the best validation accuracy."""
    from pathlib import Path

    from slipway import steps

    result = steps.train_teacher(steps.begin(config), run_id, Path(dataset.path), Path(model.path))
    model.metadata.update({"framework": "pytorch", "role": "teacher", "best_epoch": result.best_epoch})
    return result.best_val_accuracy
