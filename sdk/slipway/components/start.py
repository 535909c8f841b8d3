"""Component: resolve the config, open this pipeline run's MLflow run, cut each cached step's config slice."""

from typing import NamedTuple

from kfp import dsl

from slipway.core.images import CPU_IMAGE

# The outputs are spelled out in the signature: KFP runs the function's source alone, without this module.
# Their names after `config` are the keys of slipway.steps.start.STEP_SLICES, in order.


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def start_run(
    config: dict,
    run_key: str,
    pipeline: str,
    data_source: str = "",
    teacher_epochs: int = 0,
    student_epochs: int = 0,
    min_accuracy: float = -1.0,
    max_accuracy_drop: float = -1.0,
    model_name: str = "",
) -> NamedTuple(  # type: ignore[valid-type]  # KFP reads the outputs from this call
    "Outputs",
    [
        ("run_id", str),
        ("config", dict),
        ("data", dict),
        ("teacher", dict),
        ("student", dict),
        ("export", dict),
        ("prune", dict),
        ("quantize", dict),
        ("aoti", dict),
        ("select", dict),
        ("tensorrt", dict),
    ],
):
    """`run_id` is this run's MLflow run; `config` the resolved config (for the uncached steps); the rest are
    the cached steps' slices."""
    from typing import NamedTuple

    from slipway import steps

    steps.begin(config)  # logging, and a clear error naming the key before anything else runs
    parameters = {
        "data_source": data_source,
        "teacher_epochs": teacher_epochs,
        "student_epochs": student_epochs,
        "min_accuracy": min_accuracy,
        "max_accuracy_drop": max_accuracy_drop,
        "model_name": model_name,
    }
    start = steps.start_run(config, run_key, parameters, pipeline)
    fields = [("run_id", str), ("config", dict), *((name, dict) for name in start.slices)]
    outputs = NamedTuple("Outputs", fields)  # type: ignore[misc]
    return outputs(start.run_id, start.config, *start.slices.values())  # type: ignore[call-arg]
