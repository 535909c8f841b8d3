"""Component: the release gate (thresholds, drop vs teacher, the registry's champion re-run on this run's data)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def gate(
    config: dict,
    run_id: str,
    report: Input[Artifact],
    dataset: Input[Dataset],
    chosen_model: Input[Model],
    decision: Output[Artifact],
) -> bool:
    """Returns True when the candidate may become champion; the reasons are in `decision`.

    `chosen_model` (select_format's choice) and the champion are both run on `dataset`'s test and recent splits.
    """
    from pathlib import Path

    from slipway import steps

    result = steps.gate_candidate(
        steps.begin(config),
        run_id,
        Path(report.path),
        Path(decision.path),
        dataset_path=Path(dataset.path),
        candidate_onnx=Path(chosen_model.path),
    )
    decision.metadata.update(
        {
            "passed": result.passed,
            "reasons": result.reasons,
            "candidate_accuracy": result.candidate_accuracy,
            "champion_accuracy": result.champion_accuracy,
        }
    )
    return result.passed
