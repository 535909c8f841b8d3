"""MLflow: one tracking run per pipeline run, a registered version per candidate, aliases not stages.

Locally the store is SQLite plus an artifact folder under the run's output directory; in a cluster the
tracking URI (and credentials) come from the environment, set from a Kubernetes secret.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slipway.core.config import RegistryConfig
from slipway.core.errors import NotFoundError, RegistryError
from slipway.evaluation.gate import Champion

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
RUN_KEY_TAG = "slipway.run_key"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class RegisteredVersion(BaseModel):
    tracking_uri: str
    model_name: str
    version: str
    aliases: list[str]
    run_id: str


def tracking_uri(cfg: RegistryConfig) -> str:
    uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryError("no MLflow tracking URI: set registry.tracking_uri or $MLFLOW_TRACKING_URI")
    return uri


def mlflow_client(cfg: RegistryConfig):
    import mlflow

    uri = tracking_uri(cfg)
    return mlflow.MlflowClient(uri, uri)


@contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's global (fluent) API at `uri` for one block, then put it back.

    mlflow.set_tracking_uri also exports $MLFLOW_TRACKING_URI; left set, it would leak into every later
    run in this process and into the subprocesses it starts.
    """
    import mlflow

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def local_store(output_dir: str | Path) -> tuple[str, str]:
    """(tracking URI, artifact location) for a SQLite store under `output_dir`."""
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{out / 'mlflow.db'}", (out / "mlartifacts").as_uri()


def start_run(
    cfg: RegistryConfig, run_key: str, artifact_location: str | None, params: dict[str, Any]
) -> str:
    """Create the tracking run for one pipeline run; `run_key` lets the launcher find it afterwards."""
    client = mlflow_client(cfg)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(cfg.experiment, artifact_location=artifact_location or None)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(
        experiment_id, tags={RUN_KEY_TAG: run_key, "mlflow.runName": f"slipway-{run_key[:8]}"}
    )
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return str(run.info.run_id)


def log_metrics(cfg: RegistryConfig, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    client = mlflow_client(cfg)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value), step=step)


def set_tags(cfg: RegistryConfig, run_id: str, tags: dict[str, Any]) -> None:
    client = mlflow_client(cfg)
    for key, value in tags.items():
        client.set_tag(run_id, key, value if isinstance(value, str) else json.dumps(value))


def log_artifact(
    cfg: RegistryConfig,
    run_id: str,
    path: str | Path,
    artifact_path: str | None = None,
    name: str | None = None,
) -> None:
    """Log a file into the run; `name` renames it (KFP output paths carry no file extension)."""
    client = mlflow_client(cfg)
    if name is None:
        client.log_artifact(run_id, str(path), artifact_path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        renamed = Path(tmp) / name
        shutil.copyfile(path, renamed)
        client.log_artifact(run_id, str(renamed), artifact_path)


def find_run(cfg: RegistryConfig, run_key: str) -> Any:
    client = mlflow_client(cfg)
    experiment = client.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        raise NotFoundError(f"MLflow experiment {cfg.experiment!r} not found at {tracking_uri(cfg)}")
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1
    )
    if not runs:
        raise NotFoundError(f"no MLflow run tagged {RUN_KEY_TAG}={run_key}")
    return runs[0]


def register_onnx(
    cfg: RegistryConfig, run_id: str, onnx_path: str | Path, tags: dict[str, str]
) -> RegisteredVersion:
    """Log the ONNX model into the run, register a new version with lineage tags, alias it `challenger`."""
    import mlflow
    import onnx

    client = mlflow_client(cfg)
    with _fluent_store(tracking_uri(cfg)), mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            pip_requirements=["onnxruntime", "onnx"],
            registered_model_name=cfg.model_name,
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(cfg.model_name, version, key, value)
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, version)
    return describe_version(cfg, version, run_id)


def describe_version(cfg: RegistryConfig, version: str, run_id: str | None = None) -> RegisteredVersion:
    client = mlflow_client(cfg)
    mv = client.get_model_version(cfg.model_name, version)
    return RegisteredVersion(
        tracking_uri=tracking_uri(cfg),
        model_name=cfg.model_name,
        version=str(mv.version),
        aliases=sorted(mv.aliases),
        run_id=run_id or mv.run_id,
    )


def promote(cfg: RegistryConfig, version: str) -> RegisteredVersion:
    """Move the `champion` alias to this version (the previous champion keeps its version, loses the alias)."""
    mlflow_client(cfg).set_registered_model_alias(cfg.model_name, CHAMPION, version)
    return describe_version(cfg, version)


def champion(cfg: RegistryConfig) -> Champion | None:
    """The current champion with the metrics the gate compares against, or None when there is none yet."""
    import mlflow

    client = mlflow_client(cfg)
    try:
        mv = client.get_model_version_by_alias(cfg.model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None
    tags = mv.tags or {}
    if "slipway.accuracy" not in tags:
        raise RegistryError(f"{cfg.model_name} v{mv.version} (champion) has no slipway.accuracy tag")
    return Champion(
        version=str(mv.version),
        accuracy=float(tags["slipway.accuracy"]),
        dataset_fingerprint=tags.get("slipway.dataset_fingerprint"),
    )
