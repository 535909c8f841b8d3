"""A run's files up to the gate, written by the real steps on tiny models with group labels (the fairness preset):
what register and package read to build and ship the model card (tests/unit/test_model_card.py,
tests/components/test_model_card_local.py). Test fixtures, kept out of the installed library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kfp import dsl

from slipway import steps
from slipway.core.config import SlipwayConfig, load_config, to_parameter, validate_config
from slipway.registry import local_store

TINY = [  # models are trained, not good ones: the tests follow the files, not the accuracy
    "train.epochs=2",
    "teacher.kwargs={width: 16}",
    "student.kwargs={width: 8}",
    "distill.epochs=2",
    "compress.prune.finetune.epochs=1",
    "compress.quantize.fp16=false",
    "compress.quantize.calibration_samples=64",
    "evaluate.warmup=1",
    "evaluate.latency_iterations=10",
    "evaluate.throughput_iterations=1",
    "evaluate.repeats=1",
    "export.parity_samples=32",
    "data.reference_samples=100",
    "explain.samples=8",
    "explain.steps=4",
    "explain.examples=1",
    "gate.min_accuracy=0",
    "gate.max_accuracy_drop=1",
    "gate.max_latency_ms_p99=10000",
    "gate.min_worst_group_accuracy=0",
    "gate.max_group_accuracy_gap=1",
    "gate.max_worst_group_drop_vs_teacher=1",
    # user text with markup, so the HTML card must escape it
    "card.intended_use='Sorting <b>digits</b> & co | for tests'",
    "card.owners=[ml-team <ml@example.com>]",
]


@dataclass
class RunFiles:
    cfg: SlipwayConfig
    run_id: str
    dataset: Path
    reference: Path
    teacher: Path
    chosen: Path  # the selected ONNX
    checkpoint: Path  # its PyTorch parent
    report: Path
    selection: Path
    decision: Path
    explanation: Path  # the explain step's folder


def released_run(out: Path) -> RunFiles:
    """start -> data -> teacher -> student -> prune -> ONNX -> INT8 -> select -> explain -> gate, on files."""
    uri, artifacts = local_store(out / "store")
    cfg = load_config(
        "fairness", [*TINY, f"registry.tracking_uri={uri}", f"registry.artifact_location={artifacts}"]
    )
    start = steps.start_run(to_parameter(cfg), "card", {}, "quickstart")
    sliced = lambda step: validate_config(start.slices[step])  # noqa: E731  what each cached step receives
    f = {n: out / n for n in ("dataset", "reference", "teacher", "student", "pruned", "report", "decision")}
    steps.prepare_data(sliced("data"), f["dataset"], f["reference"])
    steps.train_teacher(sliced("teacher"), f["dataset"], f["teacher"])
    steps.distill_student(sliced("student"), f["dataset"], f["teacher"], f["student"])
    steps.prune_student(sliced("prune"), f["dataset"], f["student"], f["teacher"], f["pruned"])
    onnx = {role: out / f"{role}.onnx" for role in ("teacher", "student", "pruned")}
    for role, path in onnx.items():
        steps.export_model(sliced("export"), f[role], f["dataset"], path)
    int8, fp16 = out / "int8.onnx", out / "fp16.onnx"
    steps.quantize_onnx(sliced("quantize"), f["dataset"], onnx["pruned"], int8, fp16)
    chosen, checkpoint, selection = out / "chosen.onnx", out / "chosen.pt", out / "selection.json"
    steps.select_format(
        sliced("select"),
        f["dataset"],
        f["teacher"],
        onnx["teacher"],
        {
            "onnx-fp32": onnx["student"],
            "onnx-pruned-fp32": onnx["pruned"],
            "onnx-int8": int8,
            "onnx-fp16": fp16,
        },
        {
            "onnx-fp32": f["student"],
            "onnx-pruned-fp32": f["pruned"],
            "onnx-int8": f["pruned"],
            "onnx-fp16": f["pruned"],
        },
        chosen,
        checkpoint,
        f["report"],
        selection,
        out / "cm.png",
        served_path=out / "served.onnx",
    )
    explanation = out / "explanation"
    explain(cfg, start.run_id, f["dataset"], f["teacher"], checkpoint, explanation)
    steps.gate_candidate(
        cfg, start.run_id, f["report"], f["decision"], dataset_path=f["dataset"], candidate_onnx=chosen
    )
    return RunFiles(
        cfg, start.run_id, f["dataset"], f["reference"], f["teacher"], chosen, checkpoint, f["report"],
        selection, f["decision"], explanation,
    )  # fmt: skip


def explain(cfg: SlipwayConfig, run_id: str, dataset: Path, teacher: Path, student: Path, out: Path) -> None:
    """The explain component's body (`.python_func`) on these files: its folder holds explanation.json."""
    from slipway.components.explain import explain_models

    artifact = lambda kind, path: kind(name=path.name, uri=str(path), metadata={})  # noqa: E731
    explain_models.python_func(
        config=to_parameter(cfg),
        run_id=run_id,
        dataset=artifact(dsl.Dataset, dataset),
        teacher=artifact(dsl.Model, teacher),
        student=artifact(dsl.Model, student),
        explanation=artifact(dsl.Artifact, out),
        explanation_summary=artifact(dsl.Markdown, out.with_name("explanation_summary")),
    )
