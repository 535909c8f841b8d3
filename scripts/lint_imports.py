"""Run import-linter's contracts (pyproject.toml) over the `slipway` package as it is installed.

`slipway.components` and `slipway.pipelines` live in top-level folders mapped in by setuptools' package-dir;
import-linter walks one package folder on disk, so this assembles that folder in a temporary directory
(sdk/slipway + components + pipelines) and points `lint-imports` at it. Exit status is lint-imports' own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "images")


def assemble(into: Path) -> Path:
    package = into / "slipway"
    shutil.copytree(ROOT / "sdk" / "slipway", package, ignore=IGNORE)
    for name in ("components", "pipelines"):
        shutil.copytree(ROOT / name, package / name, ignore=IGNORE)
    return package


def main() -> int:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    with tempfile.TemporaryDirectory(prefix="slipway-lint-imports-") as tmp:
        assemble(Path(tmp))
        env = {**os.environ, "PYTHONPATH": tmp}
        command = [str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache", *sys.argv[1:]]
        return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
