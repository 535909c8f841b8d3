"""Run a pipeline on this machine with kfp.local: the same pipeline a cluster runs, tasks as subprocesses."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from slipway import registry
from slipway.cli.compile import pipeline_arguments
from slipway.cli.step_progress import StepBoard, quiet_steps
from slipway.core.config import SlipwayConfig
from slipway.core.summary import (
    STEP_ERRORS_ENV,
    RunSummary,
    StepOutcome,
    from_run_tags,
    key_number,
    status_of,
)
from slipway.pipelines import PipelineEntry

log = logging.getLogger(__name__)
HIDDEN_OUTPUTS = {
    "history",
    "channels",
    "path",
    "attempts",
}  # long lists and local paths: in MLflow, not here


def localize(cfg: SlipwayConfig, output: Path) -> SlipwayConfig:
    """Fill in local defaults: SQLite MLflow store and a resumable checkpoint folder under the output dir, and
    a relative `data.source` made absolute (the steps run as subprocesses in their own folders)."""
    from slipway.core.data import BUILTIN, is_uri

    update = cfg.model_copy(deep=True)
    source = update.data.source
    if source not in BUILTIN and not is_uri(source) and not Path(source).is_absolute():
        update.data.source = str(Path(update.data.source).resolve())
    if update.registry.tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        uri, artifacts = registry.local_store(output)
        update.registry.tracking_uri = uri
        update.registry.artifact_location = update.registry.artifact_location or artifacts
    for section in (update.train, update.distill):
        if section.checkpoint_dir is None:
            section.checkpoint_dir = str((output / "checkpoints").resolve())
    return update


def _tasks(pipeline: Any) -> dict[str, str]:
    """Task name (kfp.local's folder) -> display name, through the sub-DAGs of conditions, in run order."""
    spec = pipeline.pipeline_spec
    found: list[tuple[int, str, str]] = []

    def walk(tasks: Any, base: int) -> None:
        depth: dict[str, int] = {}

        def depth_of(name: str) -> int:
            if name not in depth:
                deps = [d for d in tasks[name].dependent_tasks if d in tasks]
                depth[name] = 1 + max((depth_of(d) for d in deps), default=-1)
            return depth[name]

        for name, task in tasks.items():
            component = spec.components[task.component_ref.name]
            if component.HasField("dag"):
                walk(component.dag.tasks, base + depth_of(name))
            else:
                found.append((base + depth_of(name), name, task.task_info.name or name))

    walk(spec.root.dag.tasks, 0)
    return {name: display for _, name, display in sorted(found)}


def _outputs(executor_output: Path) -> dict[str, Any]:
    """A finished task's parameter outputs and its artifacts' metadata, without long lists and local paths."""
    record = json.loads(executor_output.read_text())
    outputs: dict[str, Any] = dict(record.get("parameterValues", {}))
    for name, artifacts in record.get("artifacts", {}).items():
        for artifact in artifacts.get("artifacts", []):
            meta = {k: v for k, v in artifact.get("metadata", {}).items() if k not in HIDDEN_OUTPUTS}
            if meta:
                outputs[name] = meta
    return outputs


def step_outcomes(
    pipeline: Any, run_dir: Path | None, error: str | None, errors_file: Path
) -> list[StepOutcome]:
    """Each step's outcome: succeeded (it wrote its outputs), failed (kfp.local named it), or skipped."""
    failures = (
        [json.loads(line)["error"] for line in errors_file.read_text().splitlines()]
        if errors_file.is_file()
        else []
    )
    outcomes = []
    for task, display in _tasks(pipeline).items():
        done = run_dir / task / "executor_output.json" if run_dir else None
        if done is not None and done.is_file():
            outcomes.append(StepOutcome(step=display, status="succeeded", outputs=_outputs(done)))
        elif error and re.search(rf"\b{re.escape(task)}\b", error):
            outcomes.append(
                StepOutcome(step=display, status="failed", error=failures[-1] if failures else error)
            )
        else:
            outcomes.append(StepOutcome(step=display, status="skipped"))
    return outcomes


def _new_run_dir(pipeline_root: Path, before: set[Path]) -> Path | None:
    """The folder kfp.local made for this run under the pipeline root (the newest one since `before`)."""
    new_dirs = sorted(set(pipeline_root.glob("*")) - before, key=lambda p: p.stat().st_mtime)
    return new_dirs[-1] if new_dirs else None


def _with_progress(steps: list[StepOutcome], board: StepBoard | None) -> list[StepOutcome]:
    """Each outcome with the duration and log file the step table recorded."""
    rows = {row.step: row for row in board.rows.values()} if board is not None else {}
    for step in steps:
        if (row := rows.get(step.step)) is not None:
            step.duration_s = round(row.duration_s, 1) if row.duration_s is not None else None
            step.log = str(row.log) if row.log is not None else None
    return steps


def run_local(
    entry: PipelineEntry, cfg: SlipwayConfig, output: str | Path, verbose: bool = False
) -> RunSummary:
    """Run `entry` under kfp.local, then assemble and write `output/summary.json`; never raises for a failed run.

    stdout shows one line per step (a live table on a terminal); each step's full output goes to
    `output/logs/<step>.log`. `verbose` also streams that output to stdout, as kfp.local prints it.
    """
    from kfp import local

    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = localize(cfg, output)
    run_key = uuid.uuid4().hex
    pipeline_root = output / "pipeline"
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    # Our tasks run in this venv on purpose (the image is for the cluster): kfp's advice to use Docker is noise.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    pipeline = entry.load()
    before = set(pipeline_root.glob("*")) if pipeline_root.is_dir() else set()
    errors_file = output / f".step-errors-{run_key}.jsonl"
    os.environ[STEP_ERRORS_ENV] = str(errors_file)  # read by the task subprocesses (slipway.steps.common)

    def key_of(task: str, display: str) -> str:
        run_dir = _new_run_dir(pipeline_root, before)
        done = run_dir / task / "executor_output.json" if run_dir else None
        return key_number(display, _outputs(done)) if done is not None and done.is_file() else ""

    started = time.perf_counter()
    error = None
    board: StepBoard | None = None
    try:
        with quiet_steps(_tasks(pipeline), output / "logs", key_of, verbose=verbose) as board:
            pipeline(**pipeline_arguments(entry, cfg, run_key))
    except Exception as err:
        # kfp.local raises RuntimeError naming the failed task; the task's log file has the cause.
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # kfp colours its messages
        error = message.splitlines()[0] if message else type(err).__name__
        log.error("pipeline %s failed: %s", entry.name, error)
    finally:
        os.environ.pop(STEP_ERRORS_ENV, None)
    duration = time.perf_counter() - started
    steps = step_outcomes(pipeline, _new_run_dir(pipeline_root, before), error, errors_file)
    steps = _with_progress(steps, board)
    errors_file.unlink(missing_ok=True)

    tasks = set(_tasks(pipeline).values())
    fields: dict = {}
    run_id = None
    try:
        run = registry.find_run(cfg.registry, run_key)
        run_id = run.info.run_id
        fields = from_run_tags(run.data.tags)
    except Exception as err:  # the run may have failed before the MLflow run existed
        if "start" in tasks:  # the drift pipeline opens no MLflow run
            error = error or f"no MLflow record of the run: {err}"
    if fields.get("model_repository"):
        target = output / "model_repository"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(fields["model_repository"], target)
        fields["model_repository"] = str(target)
    if fields.get("drift_reference"):
        target = output / "reference.npz"
        shutil.copyfile(fields["drift_reference"], target)
        fields["drift_reference"] = str(target)
    gate = fields.get("gate")
    summary = RunSummary(
        status=status_of(gate["passed"] if gate else None, error is not None, gated="gate" in tasks),
        pipeline=entry.name,
        duration_s=round(duration, 1),
        run_key=run_key,
        mlflow_run_id=run_id,
        error=error,
        steps=steps,
        **fields,
    )
    (output / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    return summary
