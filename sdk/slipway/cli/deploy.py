"""`slipway deploy` and `slipway rollout status|promote|rollback`: thin click wrappers over serving.rollout.

Register with `main.add_command(deploy)` and `main.add_command(rollout)`. Every command prints one JSON
document; exit codes: 0 done, 1 failed or rolled back, 2 bad configuration, 3 canary held for a human.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from slipway.cli.errors import fail
from slipway.cluster.kserve import ResourceSettings, build_inference_service
from slipway.cluster.kube import custom_objects_api
from slipway.cluster.prometheus import QUERIES, CanaryMargins, PrometheusClient
from slipway.cluster.rollout import Rollout, RolloutResult, RolloutSettings
from slipway.core.artifacts import METADATA_SUFFIX, ModelArtifact, read_metadata
from slipway.core.config import DeployConfig
from slipway.core.errors import ConfigError, SlipwayError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_HELD = 3


def _emit(result: RolloutResult) -> None:
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    if result.outcome == "held":
        raise SystemExit(EXIT_HELD)
    if not result.ok:
        raise SystemExit(1)


def _default(model: type[BaseModel], field: str) -> Any:
    """A flag's default is the config model's: one place says what `deploy` does by default."""
    return model.model_fields[field].default


def _cluster_options(fn: F) -> F:
    for option in reversed(
        [
            click.option("--name", required=True, help="InferenceService name"),
            click.option("--namespace", required=True, help="Kubernetes namespace"),
            click.option(
                "--kubeconfig", type=click.Path(dir_okay=False), help="default: $KUBECONFIG, in-cluster"
            ),
            click.option("--context", help="kubeconfig context"),
            click.option(
                "--timeout-s",
                type=click.FloatRange(min=1),
                default=_default(DeployConfig, "ready_timeout_s"),
                show_default=True,
            ),
            click.option("--poll-s", type=click.FloatRange(min=0.01), default=5.0, show_default=True),
        ]
    ):
        fn = option(fn)
    return fn


def _load_artifact(path: str | None) -> ModelArtifact | None:
    if path is None:
        return None
    try:
        if path.endswith(METADATA_SUFFIX):
            return ModelArtifact.model_validate_json(Path(path).read_text())
        return read_metadata(path)
    except ValidationError as exc:
        raise ConfigError(f"{path}: not valid Slipway artifact metadata: {exc}") from None


@click.command("deploy")
@_cluster_options
@click.option("--storage-uri", required=True, help="Triton model repository root (s3://, gs://, pvc://)")
@click.option("--format", "model_format", type=click.Choice(["onnx", "tensorrt"]), required=True)
@click.option(
    "--artifact-metadata", type=click.Path(exists=True, dir_okay=False), help="model file or .meta.json"
)
@click.option("--model-name", help="model name inside the Triton repository (default: --name)")
@click.option(
    "--canary-percent",
    type=click.IntRange(1, 100),
    default=_default(DeployConfig, "canary_traffic_percent"),
    show_default=True,
    help="100: no canary",
)
@click.option(
    "--runtime", type=click.Choice(["slipway-triton", "kserve-tritonserver"]), default="slipway-triton"
)
@click.option(
    "--deployment-mode",
    type=click.Choice(["Knative", "Serverless", "Standard", "RawDeployment"]),
    default="Knative",
    show_default=True,
)
@click.option("--cpu", default="1", show_default=True)
@click.option("--memory", default="2Gi", show_default=True)
@click.option("--gpu", type=click.IntRange(0, 16), default=0, show_default=True)
@click.option("--min-replicas", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--max-replicas", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--logger-url", help="payload logger sink (drift monitor), mode all")
@click.option("--service-account")
@click.option("--prometheus-url", help="Prometheus HTTP API for the canary analysis (none: smoke test only)")
@click.option(
    "--metric-source", type=click.Choice(["knative", "triton"]), default="knative", show_default=True
)
@click.option("--window", default="1m", show_default=True, help="PromQL range window of each check")
@click.option(
    "--analysis-s",
    type=click.FloatRange(min=0),
    default=_default(DeployConfig, "analysis_s"),
    show_default=True,
    help="the analysis window: the canary must pass ceil(analysis_s / interval) checks",
)
@click.option(
    "--analysis-interval-s",
    type=click.FloatRange(min=0, min_open=True),
    default=_default(DeployConfig, "analysis_interval_s"),
    show_default=True,
    help="seconds between canary checks",
)
@click.option(
    "--failure-threshold",
    type=click.IntRange(min=1),
    default=_default(DeployConfig, "failure_threshold"),
    show_default=True,
    help="failed checks, in total, that roll the canary back",
)
@click.option(
    "--max-error-rate-increase",
    type=click.FloatRange(0, 1),
    default=_default(CanaryMargins, "max_error_rate_increase"),
    show_default=True,
)
@click.option(
    "--max-p99-ratio",
    type=click.FloatRange(min=1),
    default=_default(CanaryMargins, "max_p99_ratio"),
    show_default=True,
)
@click.option(
    "--p99-tolerance-ms",
    type=click.FloatRange(min=0),
    default=_default(CanaryMargins, "p99_tolerance_ms"),
    show_default=True,
)
@click.option(
    "--min-request-rate",
    type=click.FloatRange(min=0),
    default=_default(CanaryMargins, "min_request_rate"),
    show_default=True,
)
@click.option("--on-inconclusive", type=click.Choice(["hold", "rollback", "promote"]), default="hold")
@click.option("--smoke-url", help="URL for the smoke test instead of the revision's tagged URL")
@click.option("--wait/--no-wait", default=True, show_default=True)
def deploy(**opts: Any) -> None:
    """Deploy a Triton model repository to KServe as a canary, then promote or roll it back."""
    try:
        percent = opts["canary_percent"]
        body = build_inference_service(
            opts["name"],
            opts["namespace"],
            opts["storage_uri"],
            opts["model_format"],
            runtime=opts["runtime"],
            resources=ResourceSettings(cpu=opts["cpu"], memory=opts["memory"], gpu=opts["gpu"]),
            min_replicas=opts["min_replicas"],
            max_replicas=opts["max_replicas"],
            canary_traffic_percent=None if percent == 100 else percent,
            logger_url=opts["logger_url"],
            service_account=opts["service_account"],
            deployment_mode=opts["deployment_mode"],
            artifact=_load_artifact(opts["artifact_metadata"]),
        )
        settings = RolloutSettings(
            ready_timeout_s=opts["timeout_s"],
            poll_interval_s=opts["poll_s"],
            analysis_s=opts["analysis_s"],
            analysis_interval_s=opts["analysis_interval_s"],
            failure_threshold=opts["failure_threshold"],
            margins=CanaryMargins(
                max_error_rate_increase=opts["max_error_rate_increase"],
                max_p99_ratio=opts["max_p99_ratio"],
                p99_tolerance_ms=opts["p99_tolerance_ms"],
                min_request_rate=opts["min_request_rate"],
            ),
            on_inconclusive=opts["on_inconclusive"],
            triton_model=opts["model_name"],
            smoke_url=opts["smoke_url"],
        )
        prometheus = None
        if opts["prometheus_url"]:
            prometheus = PrometheusClient(
                opts["prometheus_url"], queries=QUERIES[opts["metric_source"]], window=opts["window"]
            )
        api = custom_objects_api(opts["kubeconfig"], opts["context"])
        result = Rollout(api, settings, prometheus=prometheus).deploy(body, wait=opts["wait"])
    except ValidationError as exc:
        fail(ConfigError(str(exc)))
    except SlipwayError as exc:
        fail(exc)
    _emit(result)


@click.group("rollout")
def rollout() -> None:
    """Inspect, promote or roll back a canary rollout of an InferenceService."""


def _rollout_for(opts: dict[str, Any]) -> Rollout:
    settings = RolloutSettings(ready_timeout_s=opts["timeout_s"], poll_interval_s=opts["poll_s"])
    return Rollout(custom_objects_api(opts["kubeconfig"], opts["context"]), settings)


@rollout.command("status")
@_cluster_options
def status(**opts: Any) -> None:
    """Print revisions, traffic split and readiness."""
    try:
        st = _rollout_for(opts).status(opts["name"], opts["namespace"])
    except SlipwayError as exc:
        fail(exc)
    click.echo(json.dumps(st.to_dict(), indent=2, sort_keys=True))


@rollout.command("promote")
@_cluster_options
@click.option("--wait/--no-wait", default=True, show_default=True)
def promote(**opts: Any) -> None:
    """Send 100% of traffic to the canary revision."""
    try:
        result = _rollout_for(opts).promote(opts["name"], opts["namespace"], wait=opts["wait"])
    except SlipwayError as exc:
        fail(exc)
    _emit(result)


@rollout.command("rollback")
@_cluster_options
@click.option("--reason", default="manual rollback", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True)
def rollback(**opts: Any) -> None:
    """Pin traffic to the last good revision and restore its storageUri."""
    try:
        result = _rollout_for(opts).rollback(
            opts["name"], opts["namespace"], wait=opts["wait"], reason=opts["reason"]
        )
    except SlipwayError as exc:
        fail(exc)
    click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
