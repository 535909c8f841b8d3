"""`slipway submit`, `slipway runs list|get`, `slipway schedule`: the Kubeflow Pipelines verbs of the CLI.

Registered on the main group by slipway.cli.main (`main.add_command(submit)` ...). The token option reads
$SLIPWAY_KFP_TOKEN and is never echoed, logged or shown in help. Without --host, the API is found as
slipway.cluster.kfp_client says ($SLIPWAY_KFP_HOST, $KF_PIPELINES_ENDPOINT, then kfp.Client's discovery).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from slipway.cli.options import Duration
from slipway.cluster.kfp_client import HOST_ENV, NO_UI, TOKEN_ENV, RunInfo
from slipway.core.logs import output_console

console = output_console()


def _connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--host, --namespace, --token: where the KFP API is and how to authenticate."""
    func = click.option(
        "--token",
        envvar=TOKEN_ENV,
        default=None,
        show_default=False,
        help=f"bearer token for the KFP API (default: ${TOKEN_ENV}; never printed)",
    )(func)
    func = click.option("--namespace", default=None, help="Kubeflow profile namespace (multi-user installs)")(
        func
    )
    func = click.option(
        "--host",
        envvar=HOST_ENV,
        default=None,
        metavar="URL",
        help=f"Kubeflow Pipelines URL, e.g. http://127.0.0.1:8080 (default: ${HOST_ENV}, then kfp's "
        "$KF_PIPELINES_ENDPOINT, then the current kube context)",
    )(func)
    return func


def _version_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--version-name, --inline: how the compiled pipeline reaches KFP."""
    func = click.option(
        "--inline",
        is_flag=True,
        help="send the compiled spec with the run instead of uploading a pipeline version "
        "(for servers that refuse uploads)",
    )(func)
    func = click.option(
        "--version-name",
        default=None,
        help="name of the uploaded pipeline version (default: sha256-<12 hex> of the compiled package)",
    )(func)
    return func


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set cluster.gpu.count=2 (repeatable)",
    )(func)
    func = click.option(
        "--config",
        "config_file",
        default=None,
        help="YAML config file or preset name (default: the pipeline's preset)",
    )(func)
    func = click.option(
        "--experiment", default=None, help="KFP experiment (default: the config's registry.experiment)"
    )(func)
    return func


def _print_run(info: RunInfo) -> None:
    colour = {"SUCCEEDED": "green", "FAILED": "red", "CANCELED": "red"}.get(info.state, "yellow")
    console.print(f"run [bold]{info.run_id}[/] [{colour}]{info.state}[/]  {info.name}", highlight=False)
    if info.error:
        console.print(f"  error: {info.error}", highlight=False)
    for task in info.failed_tasks:
        console.print(f"  failed step: {task}", highlight=False)
    if info.pipeline_version_id:
        console.print(f"  pipeline {info.pipeline_id} version {info.pipeline_version_id}", highlight=False)
    console.print(f"  {info.url or NO_UI}", highlight=False)


@click.command()
@click.argument("pipeline")
@_connection_options
@_config_options
@click.option("--wait", is_flag=True, help="wait for the run to finish; exit 1 when it fails")
@click.option(
    "--timeout", "timeout_s", type=Duration(1), default="6h", show_default=True, help="how long --wait waits"
)
@click.option("--run-name", default=None, help="display name of the run (default: pipeline, config, time)")
@click.option("--no-cache", is_flag=True, help="run every step, even those the config marks cacheable")
@click.option(
    "--poll-interval", "poll_s", type=Duration(0.001), default="10s", show_default=True, help="between polls"
)
@_version_options
def submit(
    pipeline: str,
    host: str | None,
    namespace: str | None,
    token: str | None,
    experiment: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    wait: bool,
    timeout_s: float,
    run_name: str | None,
    no_cache: bool,
    poll_s: float,
    version_name: str | None,
    inline: bool,
) -> None:
    """Compile PIPELINE with the resolved config and run it on Kubeflow Pipelines."""
    from slipway.cli import submission

    with console.status("submitting ...") as status:

        def progress(info: RunInfo, elapsed: float) -> None:
            status.update(f"run {info.run_id}: {info.state} ({elapsed:.0f} s) {info.url or ''}")

        info = submission.submit(
            pipeline,
            host=host,
            namespace=namespace,
            experiment=experiment,
            config=config_file,
            overrides=overrides,
            wait=wait,
            timeout_s=timeout_s,
            run_name=run_name,
            enable_caching=False if no_cache else None,
            token=token,
            poll_s=poll_s,
            on_progress=progress,
            version_name=version_name,
            inline=inline,
        )
    _print_run(info)


@click.group()
def runs() -> None:
    """List and inspect pipeline runs on Kubeflow Pipelines."""


@runs.command("list")
@_connection_options
@click.option("--experiment", default=None, help="only runs of this experiment")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def runs_list(
    host: str | None,
    namespace: str | None,
    token: str | None,
    experiment: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The newest runs, newest first."""
    from slipway.cluster import kfp_client as kubeflow

    found = kubeflow.list_runs(host, namespace=namespace, experiment=experiment, limit=limit, token=token)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    table = Table("run id", "name", "state", "created", "finished")
    for info in found:
        table.add_row(info.run_id, info.name, info.state, info.created_at or "", info.finished_at or "")
    console.print(table)


@runs.command("get")
@click.argument("run_id")
@_connection_options
@click.option("--wait", is_flag=True, help="wait for the run to finish; exit 1 when it fails")
@click.option("--timeout", "timeout_s", type=Duration(1), default="6h", show_default=True)
@click.option("--poll-interval", "poll_s", type=Duration(0.001), default="10s", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def runs_get(
    run_id: str,
    host: str | None,
    namespace: str | None,
    token: str | None,
    wait: bool,
    timeout_s: float,
    poll_s: float,
    as_json: bool,
) -> None:
    """State, error and failed steps of one run."""
    from slipway.cluster import kfp_client as kubeflow

    if wait:
        with console.status(f"waiting for run {run_id} ...") as status:
            info = kubeflow.wait_for_run(
                run_id,
                host,
                namespace=namespace,
                timeout_s=timeout_s,
                poll_s=poll_s,
                token=token,
                on_progress=lambda i, s: status.update(f"run {i.run_id}: {i.state} ({s:.0f} s)"),
            )
    else:
        info = kubeflow.get_run(run_id, host, namespace=namespace, token=token)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
    else:
        _print_run(info)


@click.command()
@click.argument("pipeline")
@click.option("--cron", required=True, help="'min hour day month weekday' (or KFP's 6 fields, seconds first)")
@_connection_options
@_config_options
@click.option("--name", default=None, help="recurring run name (default: <pipeline>-<config name>-scheduled)")
@click.option("--max-concurrency", type=click.IntRange(1, 10), default=1, show_default=True)
@click.option("--catchup", is_flag=True, help="backfill intervals missed while paused")
@_version_options
def schedule(
    pipeline: str,
    cron: str,
    host: str | None,
    namespace: str | None,
    token: str | None,
    experiment: str | None,
    config_file: str | None,
    overrides: tuple[str, ...],
    name: str | None,
    max_concurrency: int,
    catchup: bool,
    version_name: str | None,
    inline: bool,
) -> None:
    """Run PIPELINE on Kubeflow Pipelines on a cron schedule (a recurring run)."""
    from slipway.cli import submission

    info = submission.schedule(
        pipeline,
        cron,
        host=host,
        namespace=namespace,
        experiment=experiment,
        config=config_file,
        overrides=overrides,
        name=name,
        max_concurrency=max_concurrency,
        catchup=catchup,
        token=token,
        version_name=version_name,
        inline=inline,
    )
    console.print(
        f"recurring run [bold]{info.recurring_run_id}[/] {info.name} cron '{info.cron}'", highlight=False
    )
    version = info.pipeline_version
    if version is not None:
        console.print(
            f"  pipeline {version.pipeline_name} version {version.version_name} ({version.version_id})",
            highlight=False,
        )
    console.print(f"  {info.url or NO_UI}", highlight=False)
