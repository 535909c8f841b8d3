"""Components of the recurring drift pipeline."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def export_captured_window(config: dict, window: Output[Dataset]):
    """Dump the monitor store's most recent events as the window to check."""
    from pathlib import Path

    from slipway import steps

    steps.export_captured_window(steps.begin(config), Path(window.path))
    window.metadata["format"] = "npz"


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def detect_drift(
    config: dict, window: Input[Dataset], report: Output[HTML], summary: Output[Artifact]
) -> bool:
    """Returns drift_detected; the Evidently report and a JSON summary are artifacts."""
    import shutil
    import tempfile
    from pathlib import Path

    from slipway import steps

    with tempfile.TemporaryDirectory() as tmp:
        result = steps.check_window(steps.begin(config), Path(window.path), Path(tmp))
        shutil.copyfile(result.html_path, report.path)
        shutil.copyfile(result.json_path, summary.path)
    summary.metadata.update(
        {"drift_detected": result.drift_detected, "share_of_drifted_columns": result.share_of_drifted_columns}
    )
    return result.drift_detected


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def retrain(config: dict, window: Input[Dataset], dataset: Output[Dataset], outcome: Output[Artifact]) -> str:
    """Run the training pipeline again on its data plus the window's labelled rows (`monitor.retrain`).

    Returns the outcome's status (off, too_few_labels, submitted, or the local run's succeeded/rejected);
    `dataset` is the retraining data, `outcome` says what was launched."""
    import json
    from pathlib import Path

    from slipway import steps

    result = steps.retrain(steps.begin(config), Path(window.path), Path(dataset.path), dataset.uri)
    Path(outcome.path).write_text(json.dumps(result, indent=2))
    outcome.metadata.update(result)
    return str(result["status"])
