"""The pipeline's deploy step: a KServe canary rollout in the cluster, a served smoke test on one machine.

Locally the packaged repository is served by `slipway serve --require-digest` on 127.0.0.1 (every model
checked against its Slipway metadata), smoke-tested over HTTP and gRPC with tritonclient (the same client
code that talks to KServe + Triton), and stopped; or, with `deploy.serve_url`, the new version, its digest
checked, goes to a server that keeps running (the drift loop's local rollout).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slipway import registry
from slipway.cluster.storage import s3_uri
from slipway.core.aoti_package import PACKAGE_FILE, check_serving_compatibility
from slipway.core.artifacts import ModelArtifact, read_metadata
from slipway.core.config import SlipwayConfig

log = logging.getLogger(__name__)


def check_aoti_target(cfg: SlipwayConfig, repo_dir: Path, model: str) -> ModelArtifact | None:
    """The packaged version's AOTInductor package (model.pt2) metadata, None for ONNX and TensorRT models.

    Locally it is refused here, before anything is served, when this machine cannot run it (compiled by another
    torch release, or for another device or compute capability); in the cluster build_inference_service refuses
    it against the Triton-with-torch image (slipway.core.images.TRITON_TORCH_IMAGE) before anything is applied."""
    from slipway.serving.triton_repository import model_versions

    model_dir = repo_dir / model
    if cfg.deploy.target == "none" or not model_dir.is_dir() or not model_versions(model_dir):
        return None
    package = model_dir / str(model_versions(model_dir)[-1]) / PACKAGE_FILE
    if not package.is_file():
        return None
    artifact = read_metadata(package)
    if cfg.deploy.target == "local":
        import torch

        from slipway.serving.torch_runtime import local_capability

        check_serving_compatibility(artifact, torch.__version__, local_capability(), "this machine")
    return artifact


def deploy_local(repo_dir: Path, model: str) -> dict[str, Any]:
    """Serve the packaged repository with every model's digest required (`--require-digest`): what the
    pipeline deploys is what it packaged, checked byte for byte, and a model without metadata is refused."""
    from slipway.serving.client import smoke_test
    from slipway.serving.server import start_server
    from slipway.serving.service import ServerOptions

    with start_server(repo_dir, options=ServerOptions(require_digest=True)) as server:
        http = smoke_test(server.url, model, "http")
        grpc = smoke_test(server.grpc_url, model, "grpc")
    return {"target": "local", "model": model, "smoke": {"http": http, "grpc": grpc}}


def deploy_to_server(repo_dir: Path, model: str, url: str, served_repository: Path) -> dict[str, Any]:
    """Put the packaged version beside the ones a running `slipway serve` holds and load it through Triton's
    model control API: the server loads and checks the new version, then swaps to it without failing a request.
    The version's digest is required and checked here first, whatever the running server was started with.
    """
    from slipway.core.errors import SlipwayError
    from slipway.serving.client import InferenceClient, smoke_test
    from slipway.serving.loader import verify_version_digest
    from slipway.serving.triton_repository import model_versions, stage_version

    version = model_versions(repo_dir / model)[-1]
    verify_version_digest(repo_dir / model, version)
    stage_version(repo_dir / model, version, served_repository)
    with InferenceClient(url) as client:
        client.load_model(model)
        served = client.metadata(model)["versions"]
    if served != [str(version)]:
        raise SlipwayError(
            f"deploy.serve_url: {url} serves {model} versions {served} after loading v{version}"
        )
    return {"served_version": str(version), "smoke": {"http": smoke_test(url, model, "http")}}


def deploy_kserve(
    cfg: SlipwayConfig, repo_uri: str, model: str, package: ModelArtifact | None = None
) -> dict[str, Any]:
    """A canary rollout of the repository on KServe: Triton for ONNX, Triton with torch for a .pt2 package."""
    from slipway.cluster.kserve import ExplainerSettings, build_inference_service
    from slipway.cluster.kube import custom_objects_api
    from slipway.cluster.prometheus import PrometheusClient
    from slipway.cluster.rollout import Rollout, RolloutSettings

    d = cfg.deploy
    body = build_inference_service(
        d.name or model,
        d.namespace,
        s3_uri(repo_uri),
        "aoti" if package is not None else "onnx",
        artifact=package,
        canary_traffic_percent=d.canary_traffic_percent,
        logger_url=d.logger_url,
        service_account=d.service_account,
        explainer=ExplainerSettings() if d.explainer else None,
    )
    prometheus = PrometheusClient(d.prometheus_url) if d.prometheus_url else None
    settings = RolloutSettings(
        ready_timeout_s=d.ready_timeout_s,
        analysis_s=d.analysis_s,
        analysis_interval_s=d.analysis_interval_s,
        failure_threshold=d.failure_threshold,
        triton_model=model,
    )
    result = Rollout(custom_objects_api(), settings, prometheus=prometheus).deploy(body)
    return {"target": "kserve", "model": model, **result.to_dict()}


def deploy_model(cfg: SlipwayConfig, run_id: str, repo_dir: Path, repo_uri: str) -> dict[str, Any]:
    """Deploy the packaged repository where `deploy.target` says; the outcome is tagged on the MLflow run."""
    model = cfg.registry.model_name
    package = check_aoti_target(cfg, repo_dir, model)
    if cfg.deploy.target == "none":
        outcome: dict[str, Any] = {"target": "none", "model": model}
    elif cfg.deploy.target == "local" and cfg.deploy.serve_url and cfg.deploy.serve_repository:
        served = deploy_to_server(repo_dir, model, cfg.deploy.serve_url, Path(cfg.deploy.serve_repository))
        outcome = {"target": "local", "model": model, "url": cfg.deploy.serve_url, **served}
    elif cfg.deploy.target == "local":
        outcome = deploy_local(repo_dir, model)
    else:
        outcome = deploy_kserve(cfg, repo_uri, model, package)
    registry.set_tags(cfg.registry, run_id, {"slipway.deploy": {k: outcome[k] for k in ("target", "model")}})
    log.info("deployed %s to %s", model, cfg.deploy.target)
    return outcome
