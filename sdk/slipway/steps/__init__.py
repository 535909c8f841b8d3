"""The pipeline's steps as plain functions over files: what each KFP component calls (and nothing else does).

May import every domain subpackage and core; never the pipelines, the components or the CLI.
Each step takes the validated config and paths, writes its outputs, records what matters in the pipeline
run's MLflow run, and returns a small typed result for the component to expose.
"""

from slipway.steps.cluster_train import train_in_cluster
from slipway.steps.common import begin
from slipway.steps.compress import (
    build_tensorrt_engine,
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
from slipway.steps.drift import check_window, export_captured_window, retrain
from slipway.steps.release import gate_candidate, package_for_triton, promote_candidate, register_candidate
from slipway.steps.train import distill_student, train_teacher

__all__ = [
    "begin",
    "build_tensorrt_engine",
    "check_window",
    "deploy_model",
    "distill_student",
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
    "register_candidate",
    "resolve_source",
    "retrain",
    "select_format",
    "train_in_cluster",
    "train_teacher",
]
