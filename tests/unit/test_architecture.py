"""The dependency rule and the CLI's import weight, checked the way a user meets them: in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnx", "onnxruntime", "sklearn", "mlflow", "kfp", "kserve")


def test_import_linter_contracts_hold() -> None:
    """cli -> pipelines -> components -> steps -> domain -> core; components call only the steps."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lint_imports.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout and "2 kept" in done.stdout, done.stdout[-2000:]


def _imported_by(*argv: str) -> set[str]:
    """Top-level modules a fresh `slipway ARGV` process imports (Python's own -X importtime report)."""
    slipway = Path(sys.executable).with_name("slipway")
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run([str(slipway), *argv], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "click" in names, "the import-time report was not produced"
    return names


def test_help_and_version_import_no_heavy_library() -> None:
    for argv in (("--help",), ("--version",), ("serve", "--help"), ("submit", "--help")):
        heavy = sorted(set(HEAVY) & _imported_by(*argv))
        assert not heavy, f"`slipway {' '.join(argv)}` imports {heavy}"
