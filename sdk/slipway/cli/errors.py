"""How every command turns a SlipwayError into what a user sees: `error: <message>` and the error's exit code.

Exit codes (README): 0 ok, 1 failed, 2 usage or configuration error, 3 rejected or held (gate, canary, drift).
"""

from __future__ import annotations

from typing import NoReturn

import click

from slipway.core.errors import SlipwayError


class CommandError(click.ClickException):
    """A SlipwayError as click shows errors: one line on stderr, no traceback, the error's own exit code."""

    def __init__(self, err: SlipwayError, context: str = "") -> None:
        super().__init__(f"{context}: {err}" if context else str(err))
        # click declares exit_code a ClassVar; ours is the error's own, so it is set per instance.
        self.exit_code = err.exit_code  # type: ignore[misc]

    def show(self, file: object = None) -> None:
        click.secho("error: ", err=True, fg="red", bold=True, nl=False)
        click.echo(self.format_message(), err=True)


def fail(err: SlipwayError, context: str = "") -> NoReturn:
    """Stop the command with `err` (works for a command run alone, as tests do, and under the group)."""
    raise CommandError(err, context) from None
