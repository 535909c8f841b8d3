"""The pipeline's steps as plain functions over files: what each KFP component calls (and nothing else does).

May import every domain subpackage and core; never the pipelines, the components or the CLI.
Each step takes the validated config (a cached step: only its slice, see `start.STEP_SLICES`) and paths, writes
its outputs and returns a small typed result for the component to expose. Only the uncached steps (start,
record, gate, register, promote, package, deploy, resolve-source) write to MLflow.

Imported lazily (PEP 562): a component's process loads only its own step's module, so the steps that
need neither torch nor scikit-learn (start, record, gate, register, promote, package, deploy) start in about
0.4 s instead of 1.8 s; mypy sees the real imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# exported name -> the submodule that defines it
_EXPORTS = {
    "Produced": "record",
    "begin": "common",
    "build_tensorrt_engine": "compress",
    "check_window": "drift",
    "compile_aoti_candidate": "compress",
    "deploy_model": "deploy",
    "distill_student": "train",
    "explain_models": "explain",
    "export_captured_window": "drift",
    "export_model": "compress",
    "gate_candidate": "release",
    "mark_skipped": "compress",
    "package_for_triton": "release",
    "prepare_data": "data",
    "produced": "compress",
    "promote_candidate": "release",
    "prune_student": "compress",
    "quantize_onnx": "compress",
    "record_run": "record",
    "record_search": "search",
    "register_candidate": "release",
    "resolve_source": "compress",
    "retrain": "retrain",
    "search_metadata": "search",
    "search_student": "search",
    "select_format": "compress",
    "start_run": "start",
    "train_in_cluster": "cluster_train",
    "train_teacher": "train",
    "training_metadata": "train",
}

if TYPE_CHECKING:
    from slipway.steps.cluster_train import train_in_cluster
    from slipway.steps.common import begin
    from slipway.steps.compress import (
        build_tensorrt_engine,
        compile_aoti_candidate,
        export_model,
        mark_skipped,
        produced,
        prune_student,
        quantize_onnx,
        resolve_source,
        select_format,
    )
    from slipway.steps.data import prepare_data
    from slipway.steps.deploy import deploy_model
    from slipway.steps.drift import check_window, export_captured_window
    from slipway.steps.explain import explain_models
    from slipway.steps.record import Produced, record_run
    from slipway.steps.release import (
        gate_candidate,
        package_for_triton,
        promote_candidate,
        register_candidate,
    )
    from slipway.steps.retrain import retrain
    from slipway.steps.search import record_search, search_metadata, search_student
    from slipway.steps.start import start_run
    from slipway.steps.train import distill_student, train_teacher, training_metadata


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'slipway.steps' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"slipway.steps.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Produced",
    "begin",
    "build_tensorrt_engine",
    "check_window",
    "compile_aoti_candidate",
    "deploy_model",
    "distill_student",
    "explain_models",
    "export_captured_window",
    "export_model",
    "gate_candidate",
    "mark_skipped",
    "package_for_triton",
    "prepare_data",
    "produced",
    "promote_candidate",
    "prune_student",
    "quantize_onnx",
    "record_run",
    "record_search",
    "register_candidate",
    "resolve_source",
    "retrain",
    "search_metadata",
    "search_student",
    "select_format",
    "start_run",
    "train_in_cluster",
    "train_teacher",
    "training_metadata",
]
