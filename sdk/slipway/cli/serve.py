"""`slipway serve` and `slipway smoke`: click commands the main CLI registers with `main.add_command`.

Heavy imports happen inside the commands, so `slipway --help` stays fast.
"""

from __future__ import annotations

import json
import logging

import click

from slipway.cli.errors import fail
from slipway.cli.options import Duration, option
from slipway.core.errors import SlipwayError
from slipway.core.logs import setup_logging
from slipway.serving.restricted import GRPC_RESTRICTED_ENV, HTTP_RESTRICTED_ENV

log = logging.getLogger(__name__)


@click.command("serve")
@click.argument("repo", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="bind address (0.0.0.0 exposes it)")
# --http_port, --model_name, --predictor_host, --workers: what KServe appends to a custom explainer's args (the
# chart's explainer runs this command; docs/cluster.md); the last three have no effect here.
@option(
    "--http-port", default=8000, show_default=True, type=click.IntRange(0, 65535), aliases=["--http_port"]
)
@click.option("--model_name", "kserve_model_name", hidden=True, help="KServe explainer argument (ignored)")
@click.option(
    "--predictor_host", "kserve_predictor_host", hidden=True, help="KServe explainer argument (ignored)"
)
@click.option(
    "--workers", "kserve_workers", hidden=True, type=int, help="KServe explainer argument (ignored)"
)
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--allow-metrics",
    default=True,
    show_default=True,
    type=bool,
    help="Triton's: serve GET /metrics on --metrics-port (nv_inference_*, then slipway_*); false: no port",
)
@click.option("--metrics-port", default=8002, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--metrics-address", default=None, help="Triton's: bind address of the metrics port [default: --host]"
)
@click.option(
    "--threads", default=None, type=click.IntRange(1, 256), help="ORT intra-op threads per instance"
)
@click.option(
    "--ort-spinning/--no-ort-spinning",
    default=False,
    show_default=True,
    help="let ONNX Runtime's threads busy-wait between runs (ORT's default; off here: it starves the server's "
    "event loop on small machines)",
)
@click.option(
    "--max-queue", default=256, show_default=True, type=click.IntRange(1), help="queued requests per model"
)
@option(
    "--timeout",
    "timeout_s",
    aliases=["--timeout-s"],
    default="30s",
    show_default=True,
    type=Duration(0.001),
    help="per request",
)
@click.option("--max-body-bytes", default=64 << 20, show_default=True, type=click.IntRange(1024))
@click.option(
    "--model-control-mode",
    type=click.Choice(["none", "explicit", "poll"]),
    default="none",
    show_default=True,
    help="Triton's: none loads every model and refuses load/unload; explicit loads only --load-model "
    "and serves POST /v2/repository/models/NAME/load|unload; poll loads every model, then loads, reloads and "
    "unloads as model folders are added, changed and removed (load/unload refused)",
)
@click.option(
    "--repository-poll-secs",
    "repository_poll_secs",
    default=None,
    type=Duration(0.0),
    help="Triton's: mode poll rescans the repository this often (0: never, as in Triton) [default: 15s]",
)
@click.option(
    "--load-model",
    "load_models",
    multiple=True,
    metavar="NAME",
    help="explicit mode: a model to load at startup (repeatable; '*' alone loads all)",
)
@click.option(
    "--logger-url",
    default=None,
    help="KServe's payload logger: post every request and response as CloudEvents here (the drift "
    "monitor's /events); best effort, never delays an answer",
)
@click.option(
    "--http-restricted-api",
    "http_restricted_api",
    multiple=True,
    metavar="GROUPS:KEY=VALUE",
    envvar=HTTP_RESTRICTED_ENV,
    show_envvar=True,
    help="Triton's: HTTP routes of GROUPS (comma-separated: health, metadata, inference, shared-memory, "
    "model-config, model-repository, statistics, trace, logging; the A/B experiment routes are "
    "model-repository) answer 403 unless header KEY is VALUE; repeatable, each group in one flag; unlisted "
    "groups stay open",
)
@click.option(
    "--grpc-restricted-protocol",
    "grpc_restricted_protocol",
    multiple=True,
    metavar="GROUPS:KEY=VALUE",
    envvar=GRPC_RESTRICTED_ENV,
    show_envvar=True,
    help="Triton's: gRPC methods of GROUPS (as --http-restricted-api) answer UNAVAILABLE unless metadata "
    "triton-grpc-protocol-KEY is VALUE",
)
@click.option(
    "--require-digest",
    is_flag=True,
    help="refuse a model file without Slipway's metadata sidecar (its sha256 cannot be checked); by default "
    "such a model (an ordinary Triton repository) is served unchecked, and one with a sidecar is always checked",
)
def serve(
    repo: str,
    host: str,
    http_port: int,
    grpc_port: int,
    allow_metrics: bool,
    metrics_port: int,
    metrics_address: str | None,
    threads: int | None,
    ort_spinning: bool,
    max_queue: int,
    timeout_s: float,
    max_body_bytes: int,
    model_control_mode: str,
    repository_poll_secs: float | None,
    load_models: tuple[str, ...],
    logger_url: str | None,
    http_restricted_api: tuple[str, ...],
    grpc_restricted_protocol: tuple[str, ...],
    require_digest: bool,
    kserve_model_name: str | None,
    kserve_predictor_host: str | None,
    kserve_workers: int | None,
) -> None:
    """Serve a Triton model repository (ONNX models) over the v2 protocol, HTTP and gRPC, until Ctrl-C."""
    from slipway.serving import restricted as rs
    from slipway.serving.repository_poll import DEFAULT_POLL_SECS
    from slipway.serving.server import run_server
    from slipway.serving.service import ServerOptions

    setup_logging()
    if repository_poll_secs is not None and model_control_mode != "poll":  # Triton ignores it there too
        log.warning(
            "--repository-poll-secs has no effect in model control mode %s (only poll rescans)",
            model_control_mode,
        )
    if logger_url is not None and not logger_url.startswith(("http://", "https://")):
        fail(SlipwayError(f"--logger-url: expected an http(s) URL, got {logger_url!r}"))
    try:
        http_restricted = rs.parse_restricted(http_restricted_api, rs.HTTP_FLAG, rs.SERVE_GROUPS)
        grpc_restricted = rs.parse_restricted(
            grpc_restricted_protocol, rs.GRPC_FLAG, rs.SERVE_GROUPS, rs.GRPC_HEADER_PREFIX
        )
    except SlipwayError as err:
        fail(err)
    options = ServerOptions(
        max_queue=max_queue,
        timeout_s=timeout_s,
        max_body_bytes=max_body_bytes,
        logger_url=logger_url,
        http_restricted=http_restricted,
        grpc_restricted=grpc_restricted,
        require_digest=require_digest,
        ort_spinning=ort_spinning,
        repository_poll_secs=DEFAULT_POLL_SECS if repository_poll_secs is None else repository_poll_secs,
    )
    try:
        run_server(
            repo,
            host,
            http_port,
            grpc_port,
            threads,
            options,
            model_control_mode,
            load_models,
            metrics_port=metrics_port if allow_metrics else None,
            metrics_host=metrics_address,
        )
    except SlipwayError as err:
        fail(err)


@click.command("smoke")
@click.option("--url", required=True, help="host:port or http(s)://host:port of a v2 server")
@click.option("--model", required=True)
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@option(
    "--timeout", "timeout_s", aliases=["--timeout-s"], default="30s", show_default=True, type=Duration(0.1)
)
def smoke(url: str, model: str, protocol: str, timeout_s: float) -> None:
    """Check that a server is live and ready and that MODEL answers metadata, config and one inference."""
    from slipway.serving.client import smoke_test

    setup_logging()
    try:
        report = smoke_test(url, model, protocol, timeout_s)  # type: ignore[arg-type]
    except SlipwayError as err:
        fail(err, "smoke test failed")
    click.echo(json.dumps(report, indent=2))
