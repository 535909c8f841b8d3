"""Component: explain the teacher and the chosen student on the test split, log it into this run's MLflow run, and
show the report in the KFP UI (uncached: it takes the run id)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def explain_models(
    config: dict,
    run_id: str,
    dataset: Input[Dataset],
    teacher: Input[Model],
    student: Input[Model],
    explanation: Output[Artifact],
    explanation_summary: Output[Markdown],
):
    """`explanation` is a folder (explanation.json, report.md, report.html, figures); `student` is the
    select-format step's PyTorch checkpoint of the chosen candidate."""
    from pathlib import Path

    from slipway import steps

    report = steps.explain_models(
        steps.begin(config),
        run_id,
        Path(dataset.path),
        Path(teacher.path),
        Path(student.path),
        Path(explanation.path),
        Path(explanation_summary.path),
    )
    explanation.metadata.update(
        {
            "enabled": report.enabled,
            "mean_rank_correlation": report.mean_rank_correlation,
            "sanity_passed": {role: check.passed for role, check in report.sanity.items()},
        }
    )
