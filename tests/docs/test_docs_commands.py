"""Every command in the docs runs as written.

Fast (default suite): every shell block is marked with what it needs (doc_blocks.py), and every `slipway ...`
line of every block, cluster ones included, parses against the real click CLI: the commands and options exist,
values convert, choices hold, required options are there, and `--set` keys exist in the config schema.
Slow: the blocks marked `local` run in a shell, line by line, against one demo run made at the path they use
(`runs/demo`), their servers on 127.0.0.1 and stopped afterwards (block_runner.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import pytest
from block_runner import BlockRun, PortBusy, send_captured_traffic
from doc_blocks import KINDS, DocBlock, doc_blocks, parse_slipway, slipway_invocations

from slipway.core.config import PRESETS
from slipway.core.errors import SlipwayError

BLOCKS = list(doc_blocks())
SLIPWAY_LINES = [
    (block, command, args)
    for block in BLOCKS
    for command in block.commands()
    for args in slipway_invocations(command)
]


def check_slipway_line(args: list[str]) -> None:
    """Parse `slipway ARGS`; where it names a pipeline with `--set` overrides, resolve them too (a stale config
    key fails here as `slipway run` would fail on it). A `--config FILE` that only the reader has is left out."""
    ctx = parse_slipway(args)
    params = ctx.params
    if "overrides" in params and "pipeline" in params and params["pipeline"]:
        from slipway.cli.compile import resolve_pipeline

        config = params.get("config_file")
        resolve_pipeline(params["pipeline"], config if config in PRESETS else None, params["overrides"])


def message_of(err: Exception) -> str:
    """What the user would read after `error:`."""
    return err.format_message() if isinstance(err, click.ClickException) else str(err)


def test_every_shell_block_says_what_it_needs() -> None:
    unmarked = [b.where for b in BLOCKS if b.kind not in KINDS]
    assert not unmarked, (
        f"shell blocks without a `<!-- docs-test: {'|'.join(KINDS)} -->` line above the fence: {unmarked}"
    )
    assert {b.kind for b in BLOCKS} == set(KINDS)
    assert len(SLIPWAY_LINES) >= 30  # the extraction finds the docs' commands (about 50 today)


@pytest.mark.parametrize(
    ("block", "command", "args"),
    SLIPWAY_LINES,
    ids=[f"{block.where}:{' '.join(args[:3])}" for block, _, args in SLIPWAY_LINES],
)
def test_slipway_line_parses(block: DocBlock, command: str, args: list[str]) -> None:
    try:
        check_slipway_line(args)
    except (click.ClickException, SlipwayError) as err:
        pytest.fail(f"{block.where} ({block.kind}): `{command}`\n  -> {message_of(err)}")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["serve", "runs/demo/model_repository", "--http-port", "8000", "--grpc", "8001"], "No such option"),
        (["smoke", "--url", "127.0.0.1:8000", "--model", "m", "--protocol", "https"], "is not one of"),
        (["smoke", "--url", "127.0.0.1:8000"], "Missing option '--model'"),
        (["monitor", "serve", "--port", "8081"], "Missing option '--data-dir'"),
        (
            ["drift", "report", "--reference", "r.npz", "--current", "w.npz", "-o", "x", "[--fail-on-drift]"],
            "extra",
        ),
        (["monitr", "serve"], "No such command"),
        (["serve", "repo", "--model-control-mode", "explicitly"], "is not one of"),
        (["run", "quickstart", "--set", "train.epoch=3"], "train.epoch"),
    ],
)
def test_stale_commands_are_caught(args: list[str], error: str) -> None:
    """The check above can fail: stale flags, choices, commands, missing options and config keys."""
    with pytest.raises((click.ClickException, SlipwayError)) as caught:
        check_slipway_line(args)
    assert error in message_of(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_local_block_runs_as_written(block: DocBlock, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The block in a shell, against the demo run, from the folder the docs assume (the project root)."""
    if block.kind != "local":
        pytest.skip(f"{block.where}: marked `{block.kind}`, not run here (its slipway lines are parsed)")
    docs_workspace = request.getfixturevalue("docs_workspace")  # the demo run only when a block needs it
    missing = [tool for tool in block.needs if shutil.which(tool, path=docs_workspace.env["PATH"]) is None]
    if missing:
        pytest.skip(f"{block.where}: needs {', '.join(missing)}, not installed here")
    reference = docs_workspace.project / "runs" / "demo" / "reference.npz"
    run = BlockRun(
        block,
        cwd=docs_workspace.project,
        env=docs_workspace.env,
        logs=tmp_path,
        hooks={"slipway monitor export": lambda running: send_captured_traffic(running, reference)},
    )
    try:
        run.run()
    except PortBusy as busy:
        pytest.skip(f"{block.where}: {busy}; the docs' fixed ports must be free to run it")
    assert run.ran, f"{block.where}: nothing ran"
