"""The `slipway` command: list, run locally, compile pipelines; the other verbs come from their CLI modules."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml
from rich.table import Table

from slipway import __version__
from slipway.cli.errors import fail
from slipway.core.errors import SlipwayError
from slipway.core.logs import output_console

console = output_console()
REJECTED_EXIT_CODE = 3  # distinct from 1 (a step failed): the run worked, the gate said no

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML config file or preset name (default: the pipeline's preset)",
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override one config value, e.g. --set train.epochs=5 (repeatable)",
)


def _resolve(pipeline: str, config_file: str | None, overrides: tuple[str, ...]):
    from slipway.cli.compile import resolve_pipeline

    return resolve_pipeline(pipeline, config_file, overrides)


class SlipwayGroup(click.Group):
    """Turns every SlipwayError a command raises into `error: ...` and its exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SlipwayError as err:
            fail(err)


@click.group(cls=SlipwayGroup)
@click.version_option(__version__, prog_name="slipway")
def main() -> None:
    """Slipway: train, distill, compress, gate, register and serve PyTorch models, locally or on Kubeflow."""
    from slipway.core.logs import setup_logging

    setup_logging()


@main.command("pipelines")
def list_pipelines() -> None:
    """List the pipelines this version ships."""
    from slipway.pipelines import PIPELINES

    table = Table("pipeline", "default preset", "steps")
    for entry in PIPELINES.values():
        table.add_row(entry.name, entry.preset, entry.description)
    console.print(table)


@main.command()
@click.argument("pipeline")
@config_option
@set_option
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    default="runs/latest",
    show_default=True,
    help="folder for summary.json, the MLflow store, checkpoints and artifacts",
)
@click.option(
    "--allow-reject",
    is_flag=True,
    help=f"exit 0 (not {REJECTED_EXIT_CODE}) when the gate rejects the candidate",
)
def run(
    pipeline: str, config_file: str | None, overrides: tuple[str, ...], output: str, allow_reject: bool
) -> None:
    """Run PIPELINE on this machine (kfp.local) and write OUTPUT/summary.json.

    Exit status: 0 succeeded, 1 failed, 3 rejected by the gate."""
    from slipway.cli.local_run import run_local
    from slipway.core.summary import render

    entry, cfg = _resolve(pipeline, config_file, overrides)
    summary = run_local(entry, cfg, output)
    render(summary, console)
    console.print(f"summary: {Path(output).resolve() / 'summary.json'}")
    if summary.status == "failed":
        sys.exit(1)
    if summary.status == "rejected" and not allow_reject:
        sys.exit(REJECTED_EXIT_CODE)


@main.command()
@click.argument("pipeline")
@config_option
@set_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="pipeline YAML to write")
def compile(pipeline: str, config_file: str | None, overrides: tuple[str, ...], output: str) -> None:
    """Compile PIPELINE to KFP IR YAML, with the resolved config as the default `config` parameter."""
    from slipway.cli.compile import compile_pipeline

    entry, cfg = _resolve(pipeline, config_file, overrides)
    compile_pipeline(entry, cfg, output)
    console.print(f"wrote {output}")


@main.group("config")
def config_group() -> None:
    """Inspect configurations."""


@config_group.command("show")
@click.argument("pipeline", default="quickstart")
@config_option
@set_option
def config_show(pipeline: str, config_file: str | None, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved configuration (defaults, preset or file, then --set overrides)."""
    _, cfg = _resolve(pipeline, config_file, overrides)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), highlight=False)


def _register_subsystems() -> None:
    """Verbs owned by the other CLI modules; each keeps its heavy imports inside its commands."""
    from slipway.cli.deploy import deploy, rollout
    from slipway.cli.experiment import experiment_group
    from slipway.cli.kubeflow import runs, schedule, submit
    from slipway.cli.monitor import drift_group, monitor_group
    from slipway.cli.serve import serve, smoke

    for command in (serve, smoke, deploy, rollout, submit, runs, schedule):
        main.add_command(command)
    main.add_command(monitor_group, "monitor")
    main.add_command(drift_group, "drift")
    main.add_command(experiment_group, "experiment")


_register_subsystems()
