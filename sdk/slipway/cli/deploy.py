"""`slipway deploy` and `slipway rollout status|promote|rollback`: thin click wrappers over cluster.rollout.

kubectl's habits: `slipway rollout status NAME -n NAMESPACE -o yaml` (`--name` still works), durations as
`--timeout 10m`. Every command prints one document on stdout (JSON, or YAML with `-o yaml`); the waits report
their progress on stderr. Exit codes (cli.errors.ExitCode): 0 done, 1 failed or rolled back, 2 bad options
or configuration, 5 canary held for a person.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import click

from slipway.cli.errors import ExitCode, fail, invalid_options
from slipway.cli.options import Duration, emit, format_duration, option, output_option, resource_name
from slipway.cluster.prometheus import CanaryMargins
from slipway.core.config import DeployConfig
from slipway.core.errors import ConfigError, SlipwayError, problems_message, validation_problems

if TYPE_CHECKING:
    from pydantic import BaseModel

    from slipway.cluster.rollout import Rollout, RolloutResult, WaitProgress
    from slipway.core.artifacts import ModelArtifact

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
EXIT_HELD = ExitCode.CANARY_HELD
# Settings fields whose option is spelled otherwise (the rest are `--field-name`), for validation messages.
FLAGS = {
    "ready_timeout_s": "--timeout",
    "poll_interval_s": "--poll-interval",
    "analysis_s": "--analysis-window",
    "analysis_interval_s": "--analysis-interval",
}


def _emit(result: RolloutResult, output_format: str) -> None:
    emit(result.to_dict(), output_format)
    if result.outcome == "held":
        raise SystemExit(EXIT_HELD)
    if not result.ok:
        raise SystemExit(ExitCode.FAILED)


def _default(model: type[BaseModel], field: str) -> Any:
    """A flag's default is the config model's: one place says what `deploy` does by default."""
    return model.model_fields[field].default


class _ProgressOnStderr:
    """The rollout's waits on stderr, so that stdout keeps the result document: a line whenever what it
    sees changes, and at least every `every_s` seconds; on a terminal, a spinner that shows the latest poll."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._last: tuple[str, str] | None = None
        self._last_at = -math.inf
        self._status: Any = None

    def __enter__(self) -> Callable[[WaitProgress], None]:
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status("waiting ...")
            self._status.__enter__()
        return self.report

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.__exit__(kind, exc, tb)

    def report(self, event: WaitProgress) -> None:
        line = event.line()
        if self._status is not None:
            self._status.update(line)
        seen = (event.what, event.condition)
        changed = seen != self._last
        if changed or (self._status is None and event.elapsed_s - self._last_at >= self.every_s):
            self._last, self._last_at = seen, event.elapsed_s
            click.echo(line, err=True)


def _cluster_options(fn: F) -> F:
    for decorator in reversed(
        [
            click.argument("name", required=False, metavar="NAME"),
            click.option("--name", "name_flag", hidden=True, help="the InferenceService (or give NAME)"),
            click.option("-n", "--namespace", required=True, help="Kubernetes namespace"),
            click.option(
                "--kubeconfig", type=click.Path(dir_okay=False), help="default: $KUBECONFIG, in-cluster"
            ),
            click.option("--context", help="kubeconfig context"),
            option(
                "--timeout",
                "timeout_s",
                aliases=["--timeout-s"],
                type=Duration(1),
                default=format_duration(_default(DeployConfig, "ready_timeout_s")),
                show_default=True,
                help="how long each wait for the InferenceService may take",
            ),
            option(
                "--poll-interval",
                "poll_s",
                aliases=["--poll-s"],
                type=Duration(0.01),
                default="5s",
                show_default=True,
                help="time between two looks at the InferenceService while waiting",
            ),
            output_option(),
        ]
    ):
        fn = decorator(fn)
    return fn


def _load_artifact(path: str | None) -> ModelArtifact | None:
    from pydantic import ValidationError

    from slipway.core.artifacts import METADATA_SUFFIX, ModelArtifact, read_metadata

    if path is None:
        return None
    try:
        if path.endswith(METADATA_SUFFIX):
            return ModelArtifact.model_validate_json(Path(path).read_text())
        return read_metadata(path)
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigError(
            problems_message(f"{path}: not valid Slipway artifact metadata", problems)
        ) from None


@click.command("deploy")
@_cluster_options
@click.option("--storage-uri", required=True, help="Triton model repository root (s3://, gs://, pvc://)")
@click.option(
    "--format",
    "model_format",
    type=click.Choice(["onnx", "tensorrt", "aoti"]),
    required=True,
    help="aoti: an AOTInductor package (model.pt2), served by Triton with torch; needs --artifact-metadata",
)
@click.option(
    "--artifact-metadata", type=click.Path(exists=True, dir_okay=False), help="model file or .meta.json"
)
@click.option("--model-name", help="model name inside the Triton repository (default: NAME)")
@click.option(
    "--canary-percent",
    type=click.IntRange(1, 100),
    default=_default(DeployConfig, "canary_traffic_percent"),
    show_default=True,
    help="100: no canary",
)
@click.option(
    "--runtime",
    type=click.Choice(["slipway-triton", "slipway-triton-torch", "kserve-tritonserver"]),
    default=None,
    help="ServingRuntime [default: slipway-triton-torch for --format aoti, slipway-triton otherwise]",
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
@option(
    "--analysis-window",
    "analysis_s",
    aliases=["--analysis-s"],
    type=Duration(0),
    default=format_duration(_default(DeployConfig, "analysis_s")),
    show_default=True,
    help="the canary must pass ceil(window / interval) checks (at least one)",
)
@option(
    "--analysis-interval",
    "analysis_interval_s",
    aliases=["--analysis-interval-s"],
    type=Duration(0, min_open=True),
    default=format_duration(_default(DeployConfig, "analysis_interval_s")),
    show_default=True,
    help="time between canary checks",
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
@click.option(
    "--explainer",
    is_flag=True,
    help="add a KServe explainer (slipway serve on the CPU image) answering /v1/models/MODEL:explain; ONNX only",
)
@click.option("--wait/--no-wait", default=True, show_default=True)
def deploy(**opts: Any) -> None:
    """Deploy a Triton model repository to KServe as a canary, then promote or roll it back.

    NAME is the InferenceService. The waits report on stderr; stdout gets the result document.
    Exit status: 0 deployed (created, updated, promoted), 1 failed or rolled back, 2 bad options, 5 canary
    held (no check could judge it: decide with `slipway rollout promote|rollback`)."""
    from pydantic import ValidationError

    from slipway.cluster.kserve import ExplainerSettings, ResourceSettings, build_inference_service
    from slipway.cluster.kube import custom_objects_api
    from slipway.cluster.prometheus import QUERIES, PrometheusClient
    from slipway.cluster.rollout import Rollout, RolloutSettings

    name = resource_name(opts["name"], opts["name_flag"])
    try:
        percent = opts["canary_percent"]
        body = build_inference_service(
            name,
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
            explainer=ExplainerSettings() if opts["explainer"] else None,
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
        with _ProgressOnStderr() as on_progress:
            rollout_ = Rollout(api, settings, prometheus=prometheus, on_progress=on_progress)
            result = rollout_.deploy(body, wait=opts["wait"])
    except ValidationError as exc:
        invalid_options(exc, FLAGS)
    except SlipwayError as exc:
        fail(exc)
    _emit(result, opts["output_format"])


@click.group("rollout")
def rollout() -> None:
    """Inspect, promote or roll back a canary rollout of an InferenceService."""


def _rollout_for(opts: dict[str, Any], on_progress: Callable[[WaitProgress], None] | None = None) -> Rollout:
    from slipway.cluster.kube import custom_objects_api
    from slipway.cluster.rollout import Rollout, RolloutSettings

    settings = RolloutSettings(ready_timeout_s=opts["timeout_s"], poll_interval_s=opts["poll_s"])
    api = custom_objects_api(opts["kubeconfig"], opts["context"])
    return Rollout(api, settings, on_progress=on_progress)


@rollout.command("status")
@_cluster_options
def status(**opts: Any) -> None:
    """Print revisions, traffic split and readiness of NAME."""
    name = resource_name(opts["name"], opts["name_flag"])
    try:
        st = _rollout_for(opts).status(name, opts["namespace"])
    except SlipwayError as exc:
        fail(exc)
    emit(st.to_dict(), opts["output_format"])


@rollout.command("promote")
@_cluster_options
@click.option("--wait/--no-wait", default=True, show_default=True)
def promote(**opts: Any) -> None:
    """Send 100% of traffic to the canary revision of NAME."""
    name = resource_name(opts["name"], opts["name_flag"])
    try:
        with _ProgressOnStderr() as on_progress:
            result = _rollout_for(opts, on_progress).promote(name, opts["namespace"], wait=opts["wait"])
    except SlipwayError as exc:
        fail(exc)
    _emit(result, opts["output_format"])


@rollout.command("rollback")
@_cluster_options
@click.option("--reason", default="manual rollback", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True)
def rollback(**opts: Any) -> None:
    """Pin traffic of NAME to the last good revision and restore its storageUri."""
    name = resource_name(opts["name"], opts["name_flag"])
    try:
        with _ProgressOnStderr() as on_progress:
            result = _rollout_for(opts, on_progress).rollback(
                name, opts["namespace"], wait=opts["wait"], reason=opts["reason"]
            )
    except SlipwayError as exc:
        fail(exc)
    emit(result.to_dict(), opts["output_format"])
