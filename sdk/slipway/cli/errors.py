"""How every command ends: its exit code, and `error: <message>` on stderr instead of a traceback.

The exit codes are `ExitCode` (the table in the README); `SlipwayGroup` in `main` turns whatever a command
raises into one of them, and `--debug` adds the traceback.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Mapping
from typing import IO, Any, NoReturn

import click

from slipway.core.errors import ConfigError, SlipwayError, problems_message, validation_problems


class ExitCode(enum.IntEnum):
    """What a `slipway` process's exit status means, the same for every command (README: "Exit codes")."""

    OK = 0
    # a step, a call or a check failed; a canary was rolled back; an unexpected error
    FAILED = 1
    # a wrong command line or configuration (click's usage errors, ConfigError): fix it and rerun
    USAGE = 2
    # `run`: the gate rejected the candidate; `experiment status --watch`: stopped on a guardrail breach
    REJECTED = 3
    # `experiment status --watch`: its timeout passed before a final verdict
    NO_VERDICT = 4
    # `deploy`: no check could judge the canary; it is left at its split for a person
    CANARY_HELD = 5
    # `drift report --fail-on-drift`: drift detected
    DRIFT = 6


DEBUG_HINT = "rerun with --debug for the traceback"


class CommandError(click.ClickException):
    """A SlipwayError as click shows errors: one line on stderr, no traceback, the error's own exit code."""

    def __init__(
        self, err: BaseException, context: str = "", exit_code: int | None = None, message: str | None = None
    ) -> None:
        text = str(err) if message is None else message
        super().__init__(f"{context}: {text}" if context else text)
        self.error = err  # the original, whose traceback --debug prints
        # click declares exit_code a ClassVar; ours is the error's own, so it is set per instance.
        self.exit_code = exit_code if exit_code is not None else getattr(err, "exit_code", 1)  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        _error_line(self.format_message(), file)


def _error_line(message: str, file: IO[Any] | None = None) -> None:
    click.secho("error: ", file=file, err=file is None, fg="red", bold=True, nl=False)
    click.echo(message, file=file, err=file is None)


def fail(err: SlipwayError, context: str = "") -> NoReturn:
    """Stop the command with `err` (works for a command run alone, as tests do, and under the group)."""
    raise CommandError(err, context) from None


def option_name(loc: tuple[str | int, ...], flags: Mapping[str, str] | None = None) -> str:
    """The command-line spelling of a settings field: `flags[field]`, else `--field-name`."""
    field = str(loc[-1]) if loc else "value"
    return (flags or {}).get(field) or "--" + field.replace("_", "-")


def invalid_options(err: Any, flags: Mapping[str, str] | None = None) -> NoReturn:
    """Stop the command on a pydantic ValidationError raised by settings built from its options: one line per
    problem, naming the option (`flags` maps a field to its option where the names differ); exit 2."""
    problems = validation_problems(err, name=lambda loc: option_name(loc, flags))
    fail(ConfigError(problems_message("invalid option", problems)))


def as_command_error(exc: Exception, debug: bool = False) -> CommandError:
    """What the user sees for an exception no command turned into a message: a validation error as one line
    per key (exit 2), an OS error by its own words, anything else by its type (with the --debug hint, unless
    the traceback is shown already)."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, SlipwayError):
        return CommandError(exc)
    if _is_validation_error(exc):
        message = problems_message("invalid value", validation_problems(exc, name=option_name))
        return CommandError(exc, exit_code=ExitCode.USAGE, message=message)
    if isinstance(exc, OSError):
        return CommandError(exc, exit_code=ExitCode.FAILED)
    text = " ".join(str(exc).split())
    message = f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
    message += "" if debug else f" ({DEBUG_HINT})"
    return CommandError(exc, exit_code=ExitCode.FAILED, message=message)


def _is_validation_error(exc: BaseException) -> bool:
    """Without importing pydantic: a process that never imported it cannot have raised its error."""
    import sys

    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(exc, pydantic.ValidationError)


def print_traceback(exc: BaseException) -> None:
    """--debug: the traceback of the error behind what the user sees."""
    original = exc.error if isinstance(exc, CommandError) else exc
    click.echo("".join(traceback.format_exception(original)).rstrip(), err=True)


def show_usage_error(exc: click.UsageError, file: IO[Any] | None = None) -> None:
    """click's usage error display (usage line, help hint), ending in `error: ...` like every other error."""
    ctx = exc.ctx
    if ctx is not None:
        hint = ""
        if ctx.command.get_help_option(ctx) is not None:
            hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
        click.echo(f"{ctx.get_usage()}\n{hint}", file=file, err=file is None, color=ctx.color)
    message = exc.format_message()
    cause = exc.__cause__
    if cause is not None and _is_validation_error(cause):  # click.BadParameter(str(ValidationError))
        message = problems_message("invalid value", validation_problems(cause, name=option_name))
    _error_line(message, file)
