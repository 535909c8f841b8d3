"""Spellings the commands share, in kubectl's habits: durations with units, `-n`, NAME, `-o json|yaml`.

One style for every wait: `--timeout 10m` and `--poll-interval 5s` take a DURATION (`90`, `90s`, `1.5m`,
`2h`, `1m30s`, `500ms`; a bare number is seconds, so the old `--timeout-s 600` spellings keep their meaning).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import click

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `1.5m`, `2h`, `1m30s`, `500ms`, `7d` -> seconds; ValueError for anything else."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        parts = _PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"{text!r} is not a duration such as 30, 30s, 5m, 1h30m or 500ms") from None
        seconds = sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} is not a duration: it must be finite and not negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest DURATION spelling of `seconds`: 600 -> `10m`, 90 -> `90s`, 0.02 -> `0.02s`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class Duration(click.ParamType):
    """A DURATION option value, in seconds (float), at least `min_s` (or above it, with `min_open`)."""

    name = "duration"

    def __init__(self, min_s: float = 0.0, *, min_open: bool = False) -> None:
        self.min_s, self.min_open = min_s, min_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(str(value))
        except ValueError as err:
            self.fail(str(err), param, ctx)
        if seconds < self.min_s or (self.min_open and seconds == self.min_s):
            bound = "more than" if self.min_open else "at least"
            self.fail(f"{value!r} is too short: give {bound} {format_duration(self.min_s)}", param, ctx)
        return seconds

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"


class AliasedOption(click.Option):
    """An option whose old spellings (`aliases`) still parse but are left out of --help."""

    def __init__(self, param_decls: Sequence[str], *, aliases: Sequence[str] = (), **attrs: Any) -> None:
        super().__init__([*param_decls, *aliases], **attrs)
        self.aliases = tuple(aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = [name for name in shown if name not in self.aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{name}'" for name in self.opts if name not in self.aliases)


def option(*param_decls: str, aliases: Sequence[str] = (), **attrs: Any) -> Any:
    """`click.option` with hidden old spellings: option("--timeout", "timeout_s", aliases=["--timeout-s"])."""
    return click.option(*param_decls, cls=AliasedOption, aliases=aliases, **attrs)


def output_option(formats: Sequence[str] = ("json", "yaml"), default: str = "json") -> Any:
    """`-o/--output FORMAT`, as kubectl's."""
    return click.option(
        "-o",
        "--output",
        "output_format",
        type=click.Choice(list(formats)),
        default=default,
        show_default=True,
        help="how the result document is printed on stdout",
    )


def emit(document: Any, output_format: str) -> None:
    """Print a result document on stdout as JSON (sorted keys) or YAML (in the document's order)."""
    if output_format == "yaml":
        import yaml

        click.echo(yaml.safe_dump(document, sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(document, indent=2, sort_keys=True))


def resource_name(positional: str | None, flag: str | None, what: str = "InferenceService") -> str:
    """NAME given as kubectl takes it (positional) or by the older `--name`; both must agree."""
    ctx = click.get_current_context(silent=True)
    if positional and flag and positional != flag:
        raise click.UsageError(f"NAME {positional!r} and --name {flag!r} differ: give the name once", ctx)
    name = positional or flag
    if not name:
        raise click.UsageError(f"missing NAME (the {what})", ctx)
    return name
