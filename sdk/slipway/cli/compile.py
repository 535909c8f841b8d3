"""Compile a pipeline to KFP IR YAML with the resolved config as the default `config` parameter.

The config's `cluster` section (GPUs, secrets, resources, caching, retries) becomes task and platform settings
in the YAML (applied by slipway.pipelines.platform); it is left out of the runtime `config` parameter, so that
moving a step to another node pool does not change its cache key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from slipway.core.config import SlipwayConfig, apply_overrides, load_config, to_parameter, validate_config
from slipway.core.errors import ConfigError
from slipway.pipelines import PipelineEntry, get_pipeline

log = logging.getLogger(__name__)


def resolve_pipeline(
    pipeline: str | PipelineEntry,
    config: str | Path | SlipwayConfig | None,
    overrides: list[str] | tuple[str, ...],
) -> tuple[PipelineEntry, SlipwayConfig]:
    """The pipeline by name and its config: a SlipwayConfig as given, else a file or preset (default: the
    pipeline's own), with `--set` overrides applied last."""
    entry = get_pipeline(pipeline) if isinstance(pipeline, str) else pipeline
    if isinstance(config, SlipwayConfig):
        cfg = config
        if overrides:
            cfg = validate_config(apply_overrides(cfg.model_dump(mode="json"), list(overrides)))
    else:
        cfg = load_config(config or entry.preset, list(overrides))
    return entry, cfg


def runtime_config(cfg: SlipwayConfig) -> dict[str, Any]:
    """The run's `config` parameter: the resolved config without its compile-time `cluster` section."""
    return to_parameter(cfg, exclude={"cluster"})


def pipeline_arguments(entry: PipelineEntry, cfg: SlipwayConfig, run_key: str = "") -> dict[str, Any]:
    """A run's arguments: the runtime config, the run key, and each typed run parameter the pipeline declares,
    set from the config so that the KFP run form shows the values in use (slipway.core.run_parameters)."""
    from slipway.core import run_parameters

    raw = runtime_config(cfg)
    declared = set(entry.load().component_spec.inputs or {})
    names = [name for name in run_parameters.RUN_PARAMETERS if name in declared]
    return {"config": raw, "run_key": run_key, **run_parameters.from_config(raw, names)}


def refuse_inline_credentials(cfg: SlipwayConfig) -> None:
    """A compiled pipeline is shared and stored by KFP: credentials in its config would leak with it."""
    uri = cfg.registry.tracking_uri or ""
    if "://" in uri and urlsplit(uri).password:
        raise ConfigError(
            "registry.tracking_uri carries a password; leave the credentials out of the config and put them in "
            f"the Kubernetes Secret {cfg.cluster.mlflow_secret.name if cfg.cluster.mlflow_secret else '(none)'} "
            "(MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD), see docs/submitting.md"
        )


def compile_pipeline(entry: PipelineEntry, cfg: SlipwayConfig, output: str | Path) -> Path:
    """Write `entry` compiled for a cluster (settings from `cfg.cluster`) to `output`."""
    from kfp import compiler

    from slipway.pipelines.platform import build_pipeline, with_durable_checkpoints

    refuse_inline_credentials(cfg)
    cfg = with_durable_checkpoints(cfg)  # before the config becomes the compiled `config` default
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Import (and so decorate) the pipeline before the cluster settings are current, then rebuild it with them.
    pipeline = build_pipeline(entry.load(), cfg)
    compiler.Compiler().compile(
        pipeline,
        str(output),
        pipeline_parameters=pipeline_arguments(entry, cfg),
    )
    log.info("compiled pipeline %s to %s", entry.name, output)
    return output
