"""Compile a pipeline to KFP IR YAML with the resolved config as the default `config` parameter."""

from __future__ import annotations

from pathlib import Path

from slipway.config import SlipwayConfig
from slipway.pipelines import PipelineEntry


def compile_pipeline(entry: PipelineEntry, cfg: SlipwayConfig, output: str | Path) -> Path:
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        entry.load(),
        str(output),
        pipeline_parameters={"config": cfg.model_dump(mode="json", exclude_none=True), "run_key": ""},
    )
    return output
