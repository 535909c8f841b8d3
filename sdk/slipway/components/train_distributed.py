"""Component: train the teacher (or distil the student) as a Kubeflow TrainJob / PyTorchJob on GPU nodes.

The task pod only submits and follows the job (`slipway.steps.train_in_cluster`); the job's pods train.
Its service account needs create/get on trainjobs.trainer.kubeflow.org (or pytorchjobs.kubeflow.org).
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from slipway.core.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train_teacher_distributed(config: dict, dataset: Input[Dataset], model: Output[Model]) -> float:
    """Returns the best validation accuracy; the model also stays at the job's object-storage URI."""
    from pathlib import Path

    from slipway import steps

    out = steps.train_in_cluster(steps.begin(config), "teacher", dataset.uri, Path(model.path))
    model.metadata.update(steps.training_metadata("teacher", out.result, Path(model.path)))
    model.metadata.update({"job": out.job_name, "job_model_uri": out.model_uri})
    return float(out.result["best_val_accuracy"])


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def distill_student_distributed(
    config: dict, dataset: Input[Dataset], teacher: Input[Model], model: Output[Model]
) -> float:
    """Returns the best validation accuracy; the model also stays at the job's object-storage URI."""
    from pathlib import Path

    from slipway import steps

    out = steps.train_in_cluster(
        steps.begin(config), "student", dataset.uri, Path(model.path), teacher_uri=teacher.uri
    )
    model.metadata.update(steps.training_metadata("student", out.result, Path(model.path)))
    model.metadata.update({"job": out.job_name, "job_model_uri": out.model_uri})
    return float(out.result["best_val_accuracy"])
