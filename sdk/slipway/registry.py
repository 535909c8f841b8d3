"""MLflow: one tracking run per pipeline run, a registered version per candidate, aliases not stages.

Locally the store is SQLite plus an artifact folder under the run's output directory; in a cluster the
tracking URI (and credentials) come from the environment, set from a Kubernetes secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from slipway.core.artifacts import sha256_file
from slipway.core.config import RegistryConfig
from slipway.core.errors import NotFoundError, RegistryError
from slipway.evaluation.gate import Champion

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
RUN_KEY_TAG = "slipway.run_key"
SHA256_TAG = "slipway.sha256"  # version tag: sha256 of the stored model.onnx
CHECKPOINT_SHA256_TAG = "slipway.checkpoint_sha256"  # run and version tag: sha256 of checkpoint/model.pt
MODEL_REPOSITORY_TAG = "slipway.model_repository"
MODEL_REPOSITORY_SHA256_TAG = "slipway.model_repository_sha256"
ONNX_FILE = "model.onnx"  # mlflow.onnx's data file inside a logged model
CHECKPOINT_DIR = "checkpoint"  # run folder holding the PyTorch parent of the registered ONNX
CHECKPOINT_FILE = "model.pt"
MODEL_REPOSITORY_ARTIFACT = "triton_model_repository"
MODEL_CARD_ARTIFACT = "model_card"  # run folder holding the version's model card (md, html, json)
MODEL_CARD_TAG = "slipway.model_card"  # version tag: the card folder's artifact URI
MODEL_CARD_SHA256_TAG = "slipway.model_card_sha256"  # version tag: directory_sha256 of that folder
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
    from mlflow.entities import Param

    run = client.create_run(
        experiment_id, tags={RUN_KEY_TAG: run_key, "mlflow.runName": f"slipway-{run_key[:8]}"}
    )
    client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in params.items()])
    return str(run.info.run_id)


# log_metrics and set_tags send one batch per call (the client splits it at MLflow's limits): a round trip per
# key added up to hundreds per run once the record step logs whole training histories.


def log_metrics(cfg: RegistryConfig, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
    mlflow_client(cfg).log_batch(run_id, metrics=batch)


def set_tags(cfg: RegistryConfig, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    batch = [
        RunTag(key, value if isinstance(value, str) else json.dumps(value)) for key, value in tags.items()
    ]
    mlflow_client(cfg).log_batch(run_id, tags=batch)


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
    cfg: RegistryConfig,
    run_id: str,
    onnx_path: str | Path,
    tags: dict[str, str],
    input_example: np.ndarray,
) -> RegisteredVersion:
    """Log the ONNX file byte for byte, verify what MLflow stored, then register it and alias it `challenger`.

    The version exists only once the stored model.onnx hashes to the source file's digest, so `slipway.sha256`
    (set here, overriding any in `tags`) names the very bytes that are packaged, served and downloaded.
    `input_example` (a few rows of model input) gives the logged signature and input example.
    """
    import mlflow
    from mlflow.models import Model

    onnx_path = Path(onnx_path)
    _require_self_contained(onnx_path)
    expected = sha256_file(onnx_path)
    example, signature = _signature(onnx_path, input_example)
    uri = tracking_uri(cfg)
    client = mlflow_client(cfg)
    # An active run, not just run_id=: Model.log puts the logged model in the active run's experiment.
    with _fluent_store(uri), mlflow.start_run(run_id=run_id):
        info = Model.log(
            artifact_path=None,
            name="model",
            flavor=_VerbatimOnnx(onnx_path),
            flavor_name="mlflow.onnx",
            run_id=run_id,
            signature=signature,
            input_example=example,
            pip_requirements=["onnxruntime", "onnx"],
        )
    with tempfile.TemporaryDirectory() as tmp:
        location = client.get_logged_model(info.model_id).artifact_location.rstrip("/")
        stored_file = _download(cfg, f"{location}/{ONNX_FILE}", tmp)
        stored = sha256_file(stored_file)
    if stored != expected:
        raise RegistryError(
            f"MLflow stored {ONNX_FILE} for {onnx_path} with sha256 {stored}, not the source's {expected}; "
            f"the logged model {info.model_uri} in run {run_id} was not registered"
        )
    if (given := tags.get(SHA256_TAG, expected)) != expected:
        log.warning(
            "%s: the caller's %s %s replaced by the stored %s", onnx_path, SHA256_TAG, given, expected
        )
    version_tags = {**tags, SHA256_TAG: expected}
    # The run's checkpoint digest (log_checkpoint) travels with the version, for download_checkpoint.
    if checkpoint_digest := client.get_run(run_id).data.tags.get(CHECKPOINT_SHA256_TAG):
        version_tags[CHECKPOINT_SHA256_TAG] = checkpoint_digest
    with _fluent_store(uri):
        mv = mlflow.register_model(info.model_uri, cfg.model_name, tags=version_tags)
    client.set_registered_model_alias(cfg.model_name, CHALLENGER, str(mv.version))
    return describe_version(cfg, str(mv.version), run_id)


class _VerbatimOnnx:
    """mlflow.onnx as a Model.log flavor, except that model.onnx is the source file itself.

    mlflow.onnx.save_model re-serializes the graph (and by default splits weights into external data files);
    copying the source over its output keeps the stored bytes identical to the packaged and served file.
    """

    def __init__(self, source: Path) -> None:
        self.source = source

    def save_model(self, path: str, mlflow_model: Any, **kwargs: Any) -> None:
        import mlflow
        import onnx

        model = onnx.load(str(self.source))
        mlflow.onnx.save_model(model, path, mlflow_model=mlflow_model, save_as_external_data=False, **kwargs)
        stored = Path(path) / ONNX_FILE
        if stored.read_bytes() != self.source.read_bytes():
            shutil.copyfile(self.source, stored)
            mlflow_model.model_size_bytes = sum(
                f.stat().st_size for f in Path(path).rglob("*") if f.is_file()
            )
            mlflow_model.save(str(Path(path) / "MLmodel"))


def _require_self_contained(onnx_path: Path) -> None:
    """A file whose weights live in external data files is not the whole model: refuse to register it."""
    import onnx

    if not onnx_path.is_file():
        raise NotFoundError(f"{onnx_path}: no such ONNX file to register")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    external = [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise RegistryError(
            f"{onnx_path} keeps {len(external)} tensors (e.g. {external[0]!r}) in external data files; "
            "register a single self-contained ONNX file (torch.onnx.export(..., external_data=False))"
        )


def _signature(onnx_path: Path, input_example: np.ndarray) -> tuple[dict[str, np.ndarray], Any]:
    """The input example keyed by the graph's input name, and the signature from it and its outputs."""
    import onnxruntime as ort
    from mlflow.models import infer_signature

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RegistryError(f"{onnx_path.name} has {len(inputs)} inputs; register_onnx expects one")
    x = np.asarray(input_example)
    if x.ndim < 1 or x.shape[0] == 0:
        raise RegistryError(f"input_example must be a non-empty batch of model input, got shape {x.shape}")
    try:
        outputs = session.run(None, {inputs[0].name: x})
    except Exception as err:  # onnxruntime reports a wrong dtype or shape with its own exception types
        raise RegistryError(
            f"{onnx_path.name} cannot run the input example ({x.dtype}, shape {x.shape}): {err}"
        ) from None
    example = {inputs[0].name: x}
    predicted = {o.name: y for o, y in zip(session.get_outputs(), outputs, strict=True)}
    return example, infer_signature(example, predicted)


def download_model(cfg: RegistryConfig, version: str, dst_dir: str | Path) -> Path:
    """Download a version's model.onnx into `dst_dir`, returned only if it hashes to the version's tag."""
    mv = _model_version(cfg, cfg.model_name, version=version)
    expected = _required_tag(mv, SHA256_TAG, "it was registered before Slipway verified model digests")
    location = mlflow_client(cfg).get_model_version_download_uri(cfg.model_name, str(mv.version))
    path = _download(cfg, f"{location.rstrip('/')}/{ONNX_FILE}", dst_dir)
    _verify(path, expected, SHA256_TAG, f"{cfg.model_name} v{mv.version}")
    return path


def log_checkpoint(cfg: RegistryConfig, run_id: str, version: str | None, checkpoint_path: str | Path) -> str:
    """Log the PyTorch parent as `checkpoint/model.pt` in the run and record its sha256; returns the digest.

    The digest goes on the run (register_onnx copies a run's digest onto the version it registers, for a
    checkpoint logged first) and, when `version` is given, on that version directly (what register_candidate
    does, after registering).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise NotFoundError(f"{path}: no such checkpoint to log")
    client = mlflow_client(cfg)
    if version is not None:
        mv = _model_version(cfg, cfg.model_name, version=version)
        if mv.run_id != run_id:
            raise RegistryError(f"{cfg.model_name} v{version} belongs to run {mv.run_id}, not {run_id}")
    digest = sha256_file(path)
    log_artifact(cfg, run_id, path, CHECKPOINT_DIR, CHECKPOINT_FILE)
    client.set_tag(run_id, CHECKPOINT_SHA256_TAG, digest)
    if version is not None:
        client.set_model_version_tag(cfg.model_name, version, CHECKPOINT_SHA256_TAG, digest)
    return digest


def checkpoint_sha256(cfg: RegistryConfig, version: str) -> str:
    """The digest of the PyTorch checkpoint registered with a version (what package checks before it ships it)."""
    mv = _model_version(cfg, cfg.model_name, version=version)
    return _required_tag(mv, CHECKPOINT_SHA256_TAG, "it predates checkpoint digests")


def download_checkpoint(
    cfg: RegistryConfig,
    name: str,
    dst_dir: str | Path,
    *,
    version: str | None = None,
    alias: str | None = None,
) -> tuple[Path, RegisteredVersion]:
    """Download the verified PyTorch parent of `name` at `version` (or, when version is None, at `alias`).

    Returns the file under `dst_dir` and the resolved version; a digest mismatch deletes the file and raises.
    """
    mv = _model_version(cfg, name, version=version, alias=alias)
    where = f"{name} v{mv.version}"
    why = "it predates checkpoint digests; set source.checkpoint to a .pt file instead"
    expected = _required_tag(mv, CHECKPOINT_SHA256_TAG, why)
    try:
        path = _download(cfg, f"runs:/{mv.run_id}/{CHECKPOINT_DIR}/{CHECKPOINT_FILE}", dst_dir)
    except Exception as err:  # mlflow raises several types for a missing artifact
        raise NotFoundError(
            f"{where}: its run {mv.run_id} at {tracking_uri(cfg)} has no {CHECKPOINT_DIR}/{CHECKPOINT_FILE} "
            f"artifact ({err}); set source.checkpoint instead"
        ) from None
    _verify(path, expected, CHECKPOINT_SHA256_TAG, where)
    found = RegisteredVersion(
        tracking_uri=tracking_uri(cfg),
        model_name=name,
        version=str(mv.version),
        aliases=sorted(mv.aliases),
        run_id=mv.run_id,
    )
    return path, found


def log_model_repository(cfg: RegistryConfig, version: str, repo_dir: str | Path) -> str:
    """Log a Triton model repository folder into the version's run; tag the version with its URI and digest.

    Returns the artifact URI; `slipway.model_repository_sha256` is directory_sha256 of the folder.
    """
    repo = Path(repo_dir)
    if not repo.is_dir():
        raise NotFoundError(f"{repo}: no such Triton model repository folder")
    digest = directory_sha256(repo)
    mv = _model_version(cfg, cfg.model_name, version=version)
    client = mlflow_client(cfg)
    client.log_artifacts(mv.run_id, str(repo), MODEL_REPOSITORY_ARTIFACT)
    artifact_uri = f"{client.get_run(mv.run_id).info.artifact_uri.rstrip('/')}/{MODEL_REPOSITORY_ARTIFACT}"
    client.set_model_version_tag(cfg.model_name, str(mv.version), MODEL_REPOSITORY_TAG, artifact_uri)
    client.set_model_version_tag(cfg.model_name, str(mv.version), MODEL_REPOSITORY_SHA256_TAG, digest)
    return artifact_uri


def download_model_repository(cfg: RegistryConfig, version: str, dst_dir: str | Path) -> Path:
    """Download the Triton model repository logged with a version; returned only if its directory digest
    equals the version's tag (a changed or partial download is deleted and refused)."""
    mv = _model_version(cfg, cfg.model_name, version=version)
    why = "it was registered without a packaged repository (the package step logs it)"
    uri = _required_tag(mv, MODEL_REPOSITORY_TAG, why)
    expected = _required_tag(mv, MODEL_REPOSITORY_SHA256_TAG, why)
    where = f"{cfg.model_name} v{mv.version}"
    return _download_folder(
        cfg, uri, dst_dir, expected, MODEL_REPOSITORY_SHA256_TAG, where, "model repository"
    )


def log_model_card(cfg: RegistryConfig, run_id: str, version: str, card_dir: str | Path) -> str:
    """Log the card folder as `model_card/` in the version's run; tag the version with its URI and digest.

    Returns the digest (directory_sha256 of the folder), which package checks before it copies the card.
    """
    card = Path(card_dir)
    if not card.is_dir():
        raise NotFoundError(f"{card}: no such model card folder")
    mv = _model_version(cfg, cfg.model_name, version=version)
    if mv.run_id != run_id:
        raise RegistryError(f"{cfg.model_name} v{version} belongs to run {mv.run_id}, not {run_id}")
    digest = directory_sha256(card)
    client = mlflow_client(cfg)
    client.log_artifacts(run_id, str(card), MODEL_CARD_ARTIFACT)
    artifact_uri = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{MODEL_CARD_ARTIFACT}"
    client.set_model_version_tag(cfg.model_name, str(mv.version), MODEL_CARD_TAG, artifact_uri)
    client.set_model_version_tag(cfg.model_name, str(mv.version), MODEL_CARD_SHA256_TAG, digest)
    return digest


def model_card_sha256(cfg: RegistryConfig, version: str) -> str:
    """The digest of the card logged with a version; NotFoundError for a version registered without one."""
    return _card_tags(_model_version(cfg, cfg.model_name, version=version))[1]


def download_model_card(cfg: RegistryConfig, version: str, dst_dir: str | Path) -> Path:
    """Download the card folder logged with a version, returned only if its digest equals the version's tag;
    NotFoundError for an unknown model or version, or one registered before cards existed."""
    mv = _model_version(cfg, cfg.model_name, version=version)
    uri, expected = _card_tags(mv)
    return _download_folder(
        cfg, uri, dst_dir, expected, MODEL_CARD_SHA256_TAG, f"{mv.name} v{mv.version}", "model card"
    )


def _card_tags(mv: Any) -> tuple[str, str]:
    """(URI, digest) of a version's card; NotFoundError when it has none."""
    tags = mv.tags or {}
    if not tags.get(MODEL_CARD_TAG) or not tags.get(MODEL_CARD_SHA256_TAG):
        raise NotFoundError(
            f"{mv.name} v{mv.version} has no model card: it was registered before Slipway wrote model cards "
            "(register it again with a current Slipway to get one)"
        )
    return str(tags[MODEL_CARD_TAG]), str(tags[MODEL_CARD_SHA256_TAG])


def registered_at(cfg: RegistryConfig, version: str) -> str:
    """When MLflow registered the version: UTC, ISO 8601 to the second."""
    from datetime import UTC, datetime

    mv = _model_version(cfg, cfg.model_name, version=version)
    return datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")


def _download_folder(
    cfg: RegistryConfig, uri: str, dst_dir: str | Path, expected: str, tag: str, where: str, what: str
) -> Path:
    """Download a logged folder, returned only if its directory_sha256 equals `expected` (else deleted)."""
    path = _download(cfg, uri, dst_dir)
    actual = directory_sha256(path)
    if actual != expected:
        shutil.rmtree(path, ignore_errors=True)
        raise RegistryError(
            f"{where}: the downloaded {what} has digest {actual}, but its {tag} tag expects {expected}; "
            "it was deleted and refused"
        )
    return path


def directory_sha256(root: str | Path) -> str:
    """One digest for a folder: sha256 over sorted `<sha256>  <relative path>` lines (sha256sum format)."""
    root = Path(root)
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())
    if not files:
        raise RegistryError(f"{root} holds no files")
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(f"{sha256_file(path)}  {relative}\n".encode())
    return digest.hexdigest()


def _model_version(
    cfg: RegistryConfig, name: str, version: str | None = None, alias: str | None = None
) -> Any:
    """The ModelVersion for `version`, else for `alias`; NotFoundError says where it looked."""
    import mlflow

    if version is None and alias is None:
        raise RegistryError(f"registered model {name!r}: give a version or an alias")
    which = f"version {version}" if version is not None else f"alias {alias!r}"
    client = mlflow_client(cfg)
    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, str(alias))
    except mlflow.exceptions.MlflowException as err:
        raise NotFoundError(
            f"registered model {name!r} {which} not found at {tracking_uri(cfg)}: {err.message}"
        ) from None


def _required_tag(mv: Any, tag: str, why_missing: str) -> str:
    value = (mv.tags or {}).get(tag)
    if not value:
        raise RegistryError(f"{mv.name} v{mv.version} has no {tag} tag: {why_missing}")
    return str(value)


def _download(cfg: RegistryConfig, artifact_uri: str, dst_dir: str | Path) -> Path:
    """Download through the configured store, never the global one (which would also export env vars)."""
    import mlflow

    uri = tracking_uri(cfg)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(dst_dir), tracking_uri=uri, registry_uri=uri
    )
    return Path(local)


def _verify(path: Path, expected: str, tag: str, where: str) -> None:
    """Refuse a downloaded file whose sha256 differs from the registry tag; the file is deleted."""
    actual = sha256_file(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise RegistryError(
            f"{where}: downloaded {path.name} has sha256 {actual}, but its {tag} tag expects {expected}; "
            "the stored file changed after registration, so it was deleted and refused"
        )


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


def version_by_alias(cfg: RegistryConfig, alias: str) -> str:
    """The version an alias (`champion`, `challenger`) points at; NotFoundError says where it looked."""
    return str(_model_version(cfg, cfg.model_name, alias=alias).version)


def promote(cfg: RegistryConfig, version: str) -> RegisteredVersion:
    """Move the `champion` alias to this version (the previous champion keeps its version, not the alias)."""
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
