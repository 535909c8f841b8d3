"""summary.json: the one-page outcome of a pipeline run, from the run's MLflow record and each step's outputs.

`steps` names every step's outcome (succeeded, failed with its error, skipped) and the numbers it produced, so a
failed run still shows what finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from slipway.core.logs import output_console

Status = Literal["succeeded", "rejected", "failed"]
StepStatus = Literal["succeeded", "failed", "skipped"]
STEP_ERRORS_ENV = "SLIPWAY_STEP_ERRORS"  # set by `slipway run`: where a failing step writes its error


class ModelSummary(BaseModel):
    format: str
    accuracy: float
    macro_f1: float | None = None
    params: int
    size_bytes: int
    latency_ms_p50_b1: float
    latency_ms_p99_b1: float
    throughput_ips_b64: float
    eager: dict[str, Any] | None = None


class GateSummary(BaseModel):
    passed: bool
    reasons: list[str]


class RegistrySummary(BaseModel):
    tracking_uri: str
    model_name: str
    version: str
    aliases: list[str]


class StepOutcome(BaseModel):
    step: str
    status: StepStatus
    error: str | None = None
    outputs: dict[str, Any] = {}
    duration_s: float | None = None
    log: str | None = None  # the step's full output (`slipway run`: OUTPUT/logs/<step>.log)


class RunSummary(BaseModel):
    status: Status
    pipeline: str
    duration_s: float
    run_key: str
    mlflow_run_id: str | None = None
    dataset_fingerprint: str | None = None
    teacher: ModelSummary | None = None
    student: ModelSummary | None = None
    gate: GateSummary | None = None
    registry: RegistrySummary | None = None
    model_repository: str | None = None
    drift_reference: str | None = None
    error: str | None = None
    steps: list[StepOutcome] = []


def from_run_tags(tags: dict[str, str]) -> dict[str, Any]:
    """The summary fields the steps recorded as `slipway.*` tags on the MLflow run."""

    def load(key: str) -> Any:
        return json.loads(tags[key]) if key in tags else None

    registry = load("slipway.registry")
    return {
        "dataset_fingerprint": tags.get("slipway.dataset_fingerprint"),
        "teacher": load("slipway.teacher"),
        "student": load("slipway.student"),
        "gate": load("slipway.gate"),
        "registry": {k: registry[k] for k in ("tracking_uri", "model_name", "version", "aliases")}
        if registry
        else None,
        "model_repository": tags.get("slipway.model_repository"),
        "drift_reference": tags.get("slipway.drift_reference"),
    }


def status_of(gate_passed: bool | None, failed: bool, gated: bool = True) -> Status:
    """A gated pipeline that never reached its gate failed; one without a gate (drift) succeeds by finishing."""
    if failed or (gated and gate_passed is None):
        return "failed"
    return "rejected" if gated and not gate_passed else "succeeded"


# A plain `Output` parameter says little by itself: what it is, for the steps that return one.
OUTPUT_LABELS = {"register": "version", "promote": "aliases", "deploy": "target", "select-format": "chosen"}


def _share(after: float, before: float) -> str:
    return f"{after / before:.0%}" if before else "n/a"


def key_number(step: str, outputs: dict[str, Any]) -> str:
    """The one result worth a glance in the step table: accuracy for training, size for compression, the
    gate's verdict, the registered version. From the step's outputs, whatever the pipeline."""
    if isinstance(decision := outputs.get("decision"), dict) and "passed" in decision:
        return "passed" if decision["passed"] else "rejected"
    if isinstance(pruned := outputs.get("pruned_model"), dict) and "params_after" in pruned:
        before, after = pruned["params_before"], pruned["params_after"]
        accuracy = pruned.get("val_accuracy_finetuned")
        text = f"params {after:,} of {before:,} ({_share(after, before)})"
        if pruned.get("search"):  # compress.prune.ratios: say which ratio of how many won
            text = f"ratio {pruned['ratio']:g} ({len(pruned['search'])} tried), " + text
        return text + (f", val acc {accuracy:.4f}" if accuracy is not None else "")
    quantized = [
        m
        for m in outputs.values()
        if isinstance(m, dict) and "precision" in m and ("accuracy" in m or m.get("skipped"))
    ]
    if quantized:
        return ", ".join(
            f"{m['precision']} "
            + ("skipped" if m.get("skipped") else f"acc {m['accuracy']:.4f}")
            + (" (rejected)" if m.get("rejected") else "")
            for m in quantized
        )
    if isinstance(onnx := outputs.get("onnx_model"), dict) and isinstance(onnx.get("artifact"), dict):
        text = f"{onnx['artifact'].get('precision', '')} {onnx['artifact']['size_bytes'] / 1024:,.0f} KiB".strip()
        parity = onnx.get("parity") or {}
        return text + (f", parity {parity['top1_agreement']:.3f}" if "top1_agreement" in parity else "")
    if isinstance(dataset := outputs.get("dataset"), dict) and isinstance(dataset.get("samples"), dict):
        return " / ".join(f"{split} {n:,}" for split, n in dataset["samples"].items())
    if isinstance(metrics := outputs.get("metrics"), dict) and "student_accuracy" in metrics:
        return f"{outputs.get('Output', 'student')}, acc {metrics['student_accuracy']:.4f}"
    if isinstance(metrics, dict) and "accuracy" in metrics and "size_bytes" in metrics:  # record: the chosen
        return f"acc {metrics['accuracy']:.4f}, macro-F1 {metrics.get('macro_f1', 0):.4f}"
    if isinstance(repo := outputs.get("model_repository"), dict) and "model" in repo:
        return f"Triton model {repo['model']}"
    if isinstance(model := outputs.get("model"), dict) and "best_val_accuracy" in model:
        return f"val acc {model['best_val_accuracy']:.4f}"
    if "run_id" in outputs:
        return f"MLflow run {str(outputs['run_id'])[:12]}"
    if "Output" in outputs:
        value = outputs["Output"]
        if isinstance(value, bool):
            return "passed" if value else "failed"
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return f"{OUTPUT_LABELS[step]} {text}" if step in OUTPUT_LABELS else text
    return ""


def render(summary: RunSummary, console: Console | None = None) -> None:
    """A readable table of what the run produced, for the end of `slipway run`."""
    console = console or output_console()
    colour = {"succeeded": "green", "rejected": "yellow", "failed": "red"}[summary.status]
    console.rule(f"[bold]{summary.pipeline}[/]: [{colour}]{summary.status}[/] in {summary.duration_s:.0f} s")
    if summary.teacher and summary.student:
        table = Table(show_header=True, header_style="bold")
        for col in ("model", "format", "accuracy", "params", "size", "p50 b1 ms", "p99 b1 ms", "img/s b64"):
            table.add_column(col, justify="right" if col != "model" else "left")
        rows: list[tuple[str, dict[str, Any]]] = [("teacher", summary.teacher.model_dump())]
        if summary.teacher.eager:
            rows.append(("teacher (eager)", summary.teacher.eager))
        rows.append(("student", summary.student.model_dump()))
        for name, m in rows:
            table.add_row(
                name,
                m["format"],
                f"{m['accuracy']:.4f}",
                f"{m['params']:,}",
                f"{m['size_bytes'] / 1024:,.0f} KiB",
                f"{m['latency_ms_p50_b1']:.3f}",
                f"{m['latency_ms_p99_b1']:.3f}",
                f"{m['throughput_ips_b64']:,.0f}",
            )
        console.print(table)
    if summary.gate:
        console.print(f"[bold]gate[/]: {'passed' if summary.gate.passed else 'rejected'}")
        for reason in summary.gate.reasons:
            console.print(f"  {reason}")
    if summary.registry:
        r = summary.registry
        console.print(
            f"[bold]registry[/]: {r.model_name} v{r.version} aliases={r.aliases} at {r.tracking_uri}"
        )
    if summary.model_repository:
        console.print(f"[bold]Triton model repository[/]: {summary.model_repository}")
    if summary.drift_reference:
        console.print(
            f"[bold]drift reference[/] (inputs and the model's probabilities): {summary.drift_reference}"
        )
    for step in summary.steps:
        if step.status == "failed":
            _render_failure(step, console)
    skipped = [step.step for step in summary.steps if step.status == "skipped"]
    if skipped and summary.status == "failed":
        console.print(f"[bold]not run[/]: {', '.join(skipped)}")
    if summary.error:
        console.print(f"[red bold]error[/]: {summary.error}")


def _render_failure(step: StepOutcome, console: Console, tail: int = 30) -> None:
    """A failed step: its error, and the end of its log (the whole log is in the file named)."""
    console.print(f"[red bold]{step.step} failed[/]: {step.error or 'see its log'}")
    if step.log is None or not Path(step.log).is_file():
        return
    with Path(step.log).open(errors="replace") as f:
        lines = f.read().splitlines()[-tail:]
    console.rule(f"last {len(lines)} lines of {step.step}'s log", style="red")
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.rule(style="red")
    console.print(f"[bold]full log[/]: {step.log}")
