"""The `slipway` command: list, run locally, compile pipelines; the other verbs come from their CLI modules.

Those modules are imported when their command runs (or shows its help), never for `slipway --help` or
`--version`: `LAZY_COMMANDS` lists them with the line `slipway --help` shows for each.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from slipway import __version__
from slipway.cli.errors import CommandError, ExitCode, as_command_error, print_traceback, show_usage_error

REJECTED_EXIT_CODE = ExitCode.REJECTED  # distinct from 1 (a step failed): the run worked, the gate said no
DEBUG_ENV = "SLIPWAY_DEBUG"

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


def _console() -> Any:
    from slipway.core.logs import output_console

    return output_console()


def _resolve(pipeline: str, config_file: str | None, overrides: tuple[str, ...]):
    from slipway.cli.compile import resolve_pipeline

    return resolve_pipeline(pipeline, config_file, overrides)


class SlipwayGroup(click.Group):
    """Every error a command raises ends as `error: ...` on stderr and its exit code (cli.errors.ExitCode),
    never a traceback unless `--debug`; subcommands listed in `lazy_commands` are imported when used."""

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})  # name -> (module, attribute, short help)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            import importlib

            module, attribute, _ = self.lazy_commands[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not imported yet is listed with its line from `lazy_commands`."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is None:
                command = click.Command(name, help=self.lazy_commands[name][2])
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:
            _styled(err)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            _styled(err)
            raise
        except CommandError as err:  # a SlipwayError a command stopped on: its message is the whole story
            if _debug(ctx):
                print_traceback(err)
            raise
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as err:
            debug = _debug(ctx)
            if debug:
                print_traceback(err)
            raise as_command_error(err, debug) from None


def _styled(err: click.UsageError) -> None:
    """Show a usage error as every other error (`error: ...`), still exit 2; a group called without a
    command keeps click's answer, its help."""
    if not isinstance(err, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        err.show = lambda file=None: show_usage_error(err, file)  # type: ignore[method-assign]


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool(root.params.get("debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


# name -> (module, attribute, the line `slipway --help` shows: the command's first sentence, checked by
# tests/unit/test_cli_errors.py against the command itself)
LAZY_COMMANDS = {
    "serve": (
        "slipway.cli.serve",
        "serve",
        "Serve a Triton model repository (ONNX models) over the v2 protocol, HTTP and gRPC, until Ctrl-C.",
    ),
    "smoke": (
        "slipway.cli.serve",
        "smoke",
        "Check that a server is live and ready and that MODEL answers metadata, config and one inference.",
    ),
    "deploy": (
        "slipway.cli.deploy",
        "deploy",
        "Deploy a Triton model repository to KServe as a canary, then promote or roll it back.",
    ),
    "rollout": (
        "slipway.cli.deploy",
        "rollout",
        "Inspect, promote or roll back a canary rollout of an InferenceService.",
    ),
    "submit": (
        "slipway.cli.kubeflow",
        "submit",
        "Compile PIPELINE with the resolved config and run it on Kubeflow Pipelines.",
    ),
    "runs": ("slipway.cli.kubeflow", "runs", "List and inspect pipeline runs on Kubeflow Pipelines."),
    "schedule": (
        "slipway.cli.kubeflow",
        "schedule",
        "Run PIPELINE on Kubeflow Pipelines on a cron schedule (a recurring run).",
    ),
    "monitor": (
        "slipway.cli.monitor",
        "monitor_group",
        "Capture inference payloads and watch them for drift.",
    ),
    "drift": ("slipway.cli.monitor", "drift_group", "Offline drift reports."),
    "card": (
        "slipway.cli.card",
        "card",
        "Print the model card of MODEL at VERSION (a number, or an alias such as champion).",
    ),
    "explain": (
        "slipway.cli.explain",
        "explain",
        "Explain a model's predictions for the rows of an NPZ file with Captum, with the sanity check.",
    ),
    "experiment": (
        "slipway.cli.experiment",
        "experiment_group",
        "A/B experiments between two versions of a model: start, status, stop.",
    ),
}


@click.group(cls=SlipwayGroup, lazy_commands=LAZY_COMMANDS)
@click.option(
    "--debug",
    is_flag=True,
    help=f"show the traceback behind an error (also ${DEBUG_ENV}=1)",
)
@click.version_option(__version__, prog_name="slipway")
def main(debug: bool) -> None:
    """Slipway: train, distill, compress, gate, register and serve PyTorch models, locally or on Kubeflow.

    Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 rejected by the gate; some commands
    add their own outcomes (README, "Exit codes")."""
    from slipway.core.logs import setup_logging

    setup_logging()


@main.command("pipelines")
def list_pipelines() -> None:
    """List the pipelines this version ships."""
    from rich.table import Table

    from slipway.pipelines import PIPELINES

    table = Table("pipeline", "default preset", "steps")
    for entry in PIPELINES.values():
        table.add_row(entry.name, entry.preset, entry.description)
    _console().print(table)


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
@click.option(
    "-v", "--verbose", is_flag=True, help="stream every step's full output (always in OUTPUT/logs/<step>.log)"
)
def run(
    pipeline: str,
    config_file: str | None,
    overrides: tuple[str, ...],
    output: str,
    allow_reject: bool,
    verbose: bool,
) -> None:
    """Run PIPELINE on this machine (kfp.local) and write OUTPUT/summary.json.

    Prints one line per step; each step's full output goes to OUTPUT/logs/<step>.log.
    Exit status: 0 succeeded, 1 failed, 3 rejected by the gate."""
    from slipway.cli.local_run import run_local
    from slipway.core.summary import render

    entry, cfg = _resolve(pipeline, config_file, overrides)
    summary = run_local(entry, cfg, output, verbose=verbose)
    console = _console()
    render(summary, console)
    console.print(f"summary: {Path(output).resolve() / 'summary.json'}")
    if summary.status == "failed":
        sys.exit(ExitCode.FAILED)
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
    _console().print(f"wrote {output}")


@main.group("config")
def config_group() -> None:
    """Inspect configurations."""


@config_group.command("show")
@click.argument("pipeline", default="quickstart")
@config_option
@set_option
def config_show(pipeline: str, config_file: str | None, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved configuration (defaults, preset or file, then --set overrides)."""
    import yaml

    _, cfg = _resolve(pipeline, config_file, overrides)
    _console().print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), highlight=False)
