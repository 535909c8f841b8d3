"""Slipway's KFP pipelines, by the name the CLI uses, with the preset each runs by default.

Imports components and core; imported only by the CLI (compile, run locally, submit).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slipway.core.errors import ConfigError

if TYPE_CHECKING:
    from kfp.dsl.graph_component import GraphComponent


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    target: str  # "module:function", imported lazily so that the CLI starts fast
    preset: str
    description: str

    def load(self) -> GraphComponent:
        module, _, attr = self.target.partition(":")
        pipeline: GraphComponent = getattr(importlib.import_module(module), attr)
        return pipeline


PIPELINES: dict[str, PipelineEntry] = {
    entry.name: entry
    for entry in [
        PipelineEntry(
            "quickstart",
            "slipway.pipelines.quickstart:quickstart",
            "quickstart",
            "train -> distill -> prune -> ONNX -> INT8/FP16 -> select -> gate -> register -> Triton repository",
        ),
        PipelineEntry(
            "optimize",
            "slipway.pipelines.optimize:optimize",
            "optimize",
            "registered version or checkpoint -> prune -> ONNX -> INT8/FP16 -> select -> gate -> challenger",
        ),
        PipelineEntry(
            "drift",
            "slipway.pipelines.drift:drift",
            "drift",
            "captured window -> Evidently drift report -> drift_detected -> (optional) retraining run",
        ),
    ]
}


def get_pipeline(name: str) -> PipelineEntry:
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; expected one of {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]
