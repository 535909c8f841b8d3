"""The dependency rule and the CLI's import weight, checked the way a user meets them: in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "sklearn",
    "mlflow",
    "kfp",
    "kserve",
    "evidently",
    "tritonclient",
    "pandas",
)


def test_import_linter_contracts_hold() -> None:
    """cli -> pipelines -> components -> steps -> domain -> core; components call only the steps."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "2 kept" in done.stdout, done.stdout[-2000:]


def _imported_by(*argv: str) -> set[str]:
    """Modules a fresh `slipway ARGV` process imports (Python's own -X importtime report)."""
    slipway = Path(sys.executable).with_name("slipway")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([str(slipway), *argv], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "click" in names, "the import-time report was not produced"
    return names


def _help_invocations() -> list[tuple[str, ...]]:
    """`--help`, `--version`, and `COMMAND --help` for every command (and a subcommand of each group)."""
    import click

    from slipway.cli.main import main

    ctx = click.Context(main)
    argvs: list[tuple[str, ...]] = [("--help",), ("--version",)]
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        argvs.append((name, "--help"))
        if isinstance(command, click.Group):
            argvs += [(name, sub, "--help") for sub in command.list_commands(click.Context(command))[:1]]
    return argvs


@pytest.mark.parametrize("argv", _help_invocations(), ids=" ".join)
def test_help_and_version_import_no_heavy_library(argv: tuple[str, ...]) -> None:
    imported = _imported_by(*argv)
    heavy = sorted(set(HEAVY) & {name.split(".")[0] for name in imported})
    assert not heavy, f"`slipway {' '.join(argv)}` imports {heavy}: move the import into the command"


def test_top_level_help_and_version_import_no_command_module() -> None:
    """What keeps `slipway --help` near 50 ms: the command modules (and pydantic) wait for their command."""
    for argv in (("--help",), ("--version",)):
        imported = _imported_by(*argv)
        main_modules = {"slipway.cli.main", "slipway.cli.errors"}
        loaded = sorted(n for n in imported if n.startswith("slipway.cli.") and n not in main_modules)
        assert not loaded and "pydantic" not in imported, f"`slipway {argv[0]}` imports {loaded}"


def test_step_exports_load_lazily_from_the_module_their_map_names() -> None:
    """slipway.steps imports a step's module on first use (`_EXPORTS`): every exported name resolves to the object
    its module defines, and a step that needs neither torch nor scikit-learn (the gate) imports neither."""
    import importlib
    import json

    from slipway import steps

    assert sorted(steps._EXPORTS) == sorted(steps.__all__)
    for name, module in steps._EXPORTS.items():
        assert getattr(steps, name) is getattr(importlib.import_module(f"slipway.steps.{module}"), name)
    code = "import json, sys; from slipway import steps; steps.begin, steps.gate_candidate; print(json.dumps(list(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = set(json.loads(done.stdout))
    assert not loaded & {"torch", "sklearn"}, sorted(loaded & {"torch", "sklearn"})
