"""Components: the student step with the compression search (cached: its slice only), and the record of its
report into this run's MLflow run (uncached: it takes the run id)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def search_student(
    config: dict,
    dataset: Input[Dataset],
    teacher: Input[Model],
    model: Output[Model],
    search_report: Output[Artifact],
    search_summary: Output[Markdown],
    search_plot: Output[Artifact],
) -> float:
    """Returns the chosen student's best validation accuracy; `search_summary` is what the KFP UI shows."""
    from pathlib import Path

    from slipway import steps

    outcome = steps.search_student(
        steps.begin(config),
        Path(dataset.path),
        Path(teacher.path),
        Path(model.path),
        Path(search_report.path),
        Path(search_summary.path),
        Path(search_plot.path),
    )
    model.metadata.update(steps.training_metadata("student", outcome.training, Path(model.path)))
    search_report.metadata.update(steps.search_metadata(outcome))
    return outcome.training.best_val_accuracy


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def record_search(
    config: dict,
    run_id: str,
    search_report: Input[Artifact],
    search_summary: Input[Markdown],
    search_plot: Input[Artifact],
):
    from pathlib import Path

    from slipway import steps

    steps.record_search(
        steps.begin(config),
        run_id,
        Path(search_report.path),
        Path(search_summary.path),
        Path(search_plot.path),
    )
