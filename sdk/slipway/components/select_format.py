"""Component: measure every candidate format on the test split and keep the fastest within budget (cached)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from slipway.core.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_format(
    config: dict,
    dataset: Input[Dataset],
    teacher: Input[Model],
    teacher_onnx: Input[Model],
    student: Input[Model],
    student_onnx: Input[Model],
    pruned: Input[Model],
    pruned_onnx: Input[Model],
    int8_onnx: Input[Model],
    fp16_onnx: Input[Model],
    aoti_fp32: Input[Model],
    chosen_model: Output[Model],
    served_model: Output[Model],
    checkpoint: Output[Model],
    report: Output[Artifact],
    selection_report: Output[Artifact],
    confusion_matrix: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Returns the chosen format (e.g. onnx-int8); `report` is what the gate reads. `served_model` is the chosen
    file (ONNX or an AOTInductor .pt2), `chosen_model` the ONNX model registered for it (the same file, or the
    package's ONNX twin)."""
    from pathlib import Path

    from slipway import steps

    evaluation, selection = steps.select_format(
        steps.begin(config),
        Path(dataset.path),
        Path(teacher.path),
        Path(teacher_onnx.path),
        {
            "onnx-fp32": Path(student_onnx.path),
            "onnx-pruned-fp32": Path(pruned_onnx.path),
            "onnx-int8": Path(int8_onnx.path),
            "onnx-fp16": Path(fp16_onnx.path),
            "aoti-fp32": Path(aoti_fp32.path),
        },
        {
            "onnx-fp32": Path(student.path),
            "onnx-pruned-fp32": Path(pruned.path),
            "onnx-int8": Path(pruned.path),
            "onnx-fp16": Path(pruned.path),
            "aoti-fp32": Path(pruned.path),
        },
        Path(chosen_model.path),
        Path(checkpoint.path),
        Path(report.path),
        Path(selection_report.path),
        Path(confusion_matrix.path),
        served_path=Path(served_model.path),
    )
    chosen_model.metadata.update({"format": selection.chosen, "reasons": selection.reasons})
    served_model.metadata.update({"format": selection.chosen})
    checkpoint.metadata.update({"framework": "pytorch", "format": selection.chosen})
    dropped = {c.format: c.note for c in selection.candidates if not c.eligible}
    selection_report.metadata.update({"chosen": selection.chosen, "dropped": dropped})
    for role, e in (("teacher", evaluation.teacher), ("student", evaluation.student)):
        for name in ("accuracy", "macro_f1", "latency_ms_p99_b1", "throughput_ips_b64"):
            metrics.log_metric(f"{role}_{name}", getattr(e, name))
    return selection.chosen
