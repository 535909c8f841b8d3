"""Component: measure teacher and student (quality, size, CPU latency and throughput) on the test split."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from slipway.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    config: dict,
    run_id: str,
    dataset: Input[Dataset],
    teacher: Input[Model],
    teacher_onnx: Input[Model],
    student_onnx: Input[Model],
    report: Output[Artifact],
    confusion_matrix: Output[Artifact],
    metrics: Output[Metrics],
):
    from pathlib import Path

    from slipway import steps

    result = steps.evaluate_candidates(
        steps.begin(config),
        run_id,
        Path(dataset.path),
        Path(teacher.path),
        Path(teacher_onnx.path),
        Path(student_onnx.path),
        Path(report.path),
        Path(confusion_matrix.path),
    )
    for role, e in (("teacher", result.teacher), ("student", result.student)):
        for name in ("accuracy", "macro_f1", "latency_ms_p99_b1", "throughput_ips_b64"):
            metrics.log_metric(f"{role}_{name}", getattr(e, name))
