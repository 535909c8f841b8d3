"""`submit` and `schedule` by pipeline name: resolve the config, compile, hand the package to the KFP client."""

from __future__ import annotations

import tempfile
import uuid
from datetime import datetime
from pathlib import Path

from slipway.cli.compile import compile_pipeline, resolve_pipeline
from slipway.cluster.kfp_client import (
    DEFAULT_TIMEOUT_S,
    Connection,
    ProgressCallback,
    RunInfo,
    ScheduleInfo,
    schedule_package,
    submit_package,
)
from slipway.core.config import SlipwayConfig
from slipway.pipelines import PipelineEntry


def submit(
    pipeline: str | PipelineEntry,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str | None = None,
    config: str | Path | SlipwayConfig | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    wait: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    run_name: str | None = None,
    enable_caching: bool | None = None,
    token: str | None = None,
    poll_s: float = 10.0,
    on_progress: ProgressCallback | None = None,
    connection: Connection | None = None,
    version_name: str | None = None,
    inline: bool = False,
) -> RunInfo:
    """Compile `pipeline` with the resolved config, upload it as a pipeline version (unless `inline`) and start a
    run of it; with `wait`, return when it has finished.

    `experiment` defaults to the config's `registry.experiment`.
    """
    entry, cfg = resolve_pipeline(pipeline, config, overrides)
    with tempfile.TemporaryDirectory(prefix="slipway-submit-") as tmp:
        package = compile_pipeline(entry, cfg, Path(tmp) / "pipeline.yaml")
        return submit_package(
            package,
            run_name=run_name or f"{entry.name} {cfg.name} {datetime.now():%Y-%m-%d %H:%M:%S}",
            experiment=experiment or cfg.registry.experiment,
            service_account=cfg.cluster.service_account,
            host=host,
            namespace=namespace,
            token=token,
            enable_caching=enable_caching,
            arguments={"run_key": uuid.uuid4().hex},  # its own MLflow run, whatever the cache reuses
            wait=wait,
            timeout_s=timeout_s,
            poll_s=poll_s,
            on_progress=on_progress,
            connection=connection,
            version_name=version_name,
            inline=inline,
        )


def schedule(
    pipeline: str | PipelineEntry,
    cron: str,
    host: str | None = None,
    namespace: str | None = None,
    experiment: str | None = None,
    config: str | Path | SlipwayConfig | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    name: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    token: str | None = None,
    connection: Connection | None = None,
    version_name: str | None = None,
    inline: bool = False,
) -> ScheduleInfo:
    """Create a recurring run of `pipeline` (compiled with its resolved config, uploaded as a pipeline version
    unless `inline`) on a cron schedule."""
    entry, cfg = resolve_pipeline(pipeline, config, overrides)
    with tempfile.TemporaryDirectory(prefix="slipway-schedule-") as tmp:
        package = compile_pipeline(entry, cfg, Path(tmp) / "pipeline.yaml")
        return schedule_package(
            package,
            cron,
            name=name or f"{entry.name}-{cfg.name}-scheduled",
            experiment=experiment or cfg.registry.experiment,
            service_account=cfg.cluster.service_account,
            max_concurrency=max_concurrency,
            catchup=catchup,
            host=host,
            namespace=namespace,
            token=token,
            connection=connection,
            version_name=version_name,
            inline=inline,
        )
