"""Run a pipeline on this machine with kfp.local: the same pipeline a cluster runs, tasks as subprocesses."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
import warnings
from pathlib import Path

from slipway import registry
from slipway.core.config import SlipwayConfig
from slipway.core.summary import RunSummary, from_run_tags, status_of
from slipway.pipelines import PipelineEntry

log = logging.getLogger(__name__)


def localize(cfg: SlipwayConfig, output: Path) -> SlipwayConfig:
    """Fill in local defaults: SQLite MLflow store and a resumable checkpoint folder under the output dir."""
    update = cfg.model_copy(deep=True)
    if update.registry.tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        uri, artifacts = registry.local_store(output)
        update.registry.tracking_uri = uri
        update.registry.artifact_location = update.registry.artifact_location or artifacts
    for section in (update.train, update.distill):
        if section.checkpoint_dir is None:
            section.checkpoint_dir = str((output / "checkpoints").resolve())
    return update


def run_local(entry: PipelineEntry, cfg: SlipwayConfig, output: str | Path) -> RunSummary:
    """Run `entry` under kfp.local, then assemble and write `output/summary.json`; never raises for a failed run."""
    from kfp import local

    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = localize(cfg, output)
    run_key = uuid.uuid4().hex
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(output / "pipeline"),
        raise_on_error=True,
    )
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    started = time.perf_counter()
    error = None
    try:
        entry.load()(config=cfg.model_dump(mode="json", exclude_none=True), run_key=run_key)
    except Exception as err:
        # kfp.local raises RuntimeError naming the failed task; the task's log above has the cause.
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # kfp colours its messages
        error = message.splitlines()[0] if message else type(err).__name__
        log.error("pipeline %s failed: %s", entry.name, error)
    duration = time.perf_counter() - started

    fields: dict = {}
    run_id = None
    try:
        run = registry.find_run(cfg.registry, run_key)
        run_id = run.info.run_id
        fields = from_run_tags(run.data.tags)
    except Exception as err:  # the run may have failed before the MLflow run existed
        error = error or f"no MLflow record of the run: {err}"
    if fields.get("model_repository"):
        target = output / "model_repository"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(fields["model_repository"], target)
        fields["model_repository"] = str(target)
    gate = fields.get("gate")
    summary = RunSummary(
        status=status_of(gate["passed"] if gate else None, error is not None),
        pipeline=entry.name,
        duration_s=round(duration, 1),
        run_key=run_key,
        mlflow_run_id=run_id,
        error=error,
        **fields,
    )
    (output / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    return summary
