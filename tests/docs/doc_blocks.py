"""The shell blocks of README.md and docs/*.md, what each is marked to need, and their `slipway` command lines.

Every fenced block tagged `bash`, `sh`, `shell` or `console` carries a marker on the line above its fence:

    <!-- docs-test: local -->                 runs here against a demo run (tests/docs runs it)
    <!-- docs-test: local needs=grpcurl -->   the same, when that tool is on PATH (else skipped, named)
    <!-- docs-test: slow -->                  runs here but takes minutes (a pipeline run, an install)
    <!-- docs-test: cluster -->               needs a cluster, Kubeflow Pipelines, Docker or a GPU

Every `slipway ...` line of every block, whatever its marker, is parsed against the real click CLI.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
KINDS = ("local", "slow", "cluster")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)(?P<options>(?:\s+\w+=\S+)*)\s*-->\s*$")
OPERATORS = {"&&", "||", ";", "|", "&", ";;", "|&"}


@dataclass(frozen=True)
class DocBlock:
    """One shell block: where it is, what it needs, and its text."""

    path: Path
    line: int  # of the opening fence, 1-based
    kind: str | None  # None: unmarked (an error the tests report)
    needs: tuple[str, ...] = field(default=())
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """Logical command lines: backslash continuations joined, comment-only lines dropped; in a transcript
        (lines starting `$ `) only those lines, the rest being what they print."""
        transcript = any(line.startswith("$ ") for line in self.text.splitlines())
        lines: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            text = raw.rstrip()
            if not pending and transcript:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            command = (pending + text).strip()
            pending = ""
            if command and not command.startswith("#"):
                lines.append(command)
        return lines


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_blocks() -> Iterator[DocBlock]:
    """Every shell block of the docs, with the marker on the line above its fence (if any)."""
    for path in doc_files():
        text = path.read_text()
        for match in FENCE.finditer(text):
            if match.group("lang") not in SHELL_LANGUAGES:
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.match(before.strip())
            kind, needs = None, ()
            if marker:
                kind = marker.group("kind")
                options = dict(option.split("=", 1) for option in marker.group("options").split())
                needs = tuple(filter(None, options.get("needs", "").split(",")))
            yield DocBlock(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                kind=kind,
                needs=needs,
                text=match.group("body"),
            )


def words(command: str) -> list[list[str]]:
    """The simple commands of one line, split on `&&`, `||`, `;`, `|` and `&`, each as its words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="();<>|&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    simple: list[list[str]] = [[]]
    for token in lexer:
        if token in OPERATORS:
            simple.append([])
        else:
            simple[-1].append(token)
    return [each for each in simple if each]


def program(argv: list[str]) -> tuple[str, list[str]]:
    """The program's base name and its arguments, past leading `NAME=value` environment assignments."""
    start = 0
    while start < len(argv) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[start]):
        start += 1
    if start == len(argv):
        return "", []
    return Path(argv[start]).name, argv[start + 1 :]


def slipway_invocations(command: str) -> list[list[str]]:
    """The arguments of every `slipway` (or `.venv/bin/slipway`) call on one command line."""
    calls = []
    for argv in words(command):
        name, args = program(argv)
        if name == "slipway":
            calls.append(args)
    return calls


def _without_existence_checks(command: click.Command) -> click.Command:
    """The command as is, except that path arguments need not exist: parsing is about the options; whether a
    documented path exists is what running the local blocks checks."""
    relaxed = copy.copy(command)
    params = []
    for param in command.params:
        if isinstance(param.type, click.Path) and param.type.exists:
            param = copy.copy(param)
            param.type = copy.copy(param.type)
            param.type.exists = False  # type: ignore[attr-defined]
        params.append(param)
    relaxed.params = params
    return relaxed


def parse_slipway(args: list[str]) -> click.Context:
    """Parse `slipway ARGS` with the real CLI, as click does before it invokes anything: every group and the
    command at the end (options exist, values convert, choices hold, required ones are there). Raises
    click.UsageError (or BadParameter) exactly as the command line would fail; returns the command's context."""
    from slipway.cli.main import main

    command: click.Command = main
    name = "slipway"
    parent: click.Context | None = None
    rest = list(args)
    while True:
        ctx = _without_existence_checks(command).make_context(name, rest, parent=parent)
        if not isinstance(command, click.Group):
            return ctx
        rest = [*ctx._protected_args, *ctx.args]  # what click's own Group.invoke hands to the subcommand
        if not rest:
            raise click.UsageError(f"{ctx.command_path}: no command given", ctx)
        found_name, found, rest = command.resolve_command(ctx, rest)
        assert found is not None and found_name is not None  # resolve_command raised otherwise
        command, name, parent = found, found_name, ctx
