"""The pipeline's steps as plain functions over files: what each KFP component calls (and nothing else does).

May import every domain subpackage and core; never the pipelines, the components or the CLI.
Each step takes the validated config (a cached step: only its slice, see `start.STEP_SLICES`) and paths, writes
its outputs and returns a small typed result for the component to expose. Only the uncached steps (start,
record, gate, register, promote, package, deploy, resolve-source) write to MLflow.
"""

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
from slipway.steps.release import gate_candidate, package_for_triton, promote_candidate, register_candidate
from slipway.steps.retrain import retrain
from slipway.steps.search import record_search, search_metadata, search_student
from slipway.steps.start import start_run
from slipway.steps.train import distill_student, train_teacher, training_metadata

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
