"""A user's working folder for the docs' local blocks: one demo run at the path the docs use, made once."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 1200  # one pipeline run on 2 busy cores takes a few minutes; a hang must not stall anyone
# The fast config trains for seconds, too little for the demo's gates; the blocks need a packaged model, not a
# good one, so the gate lets any candidate through.
OPEN_GATE = ("gate.min_accuracy=0", "gate.max_accuracy_drop=1", "gate.max_latency_ms_p99=10000")


@dataclass(frozen=True)
class Workspace:
    """Where the blocks run (`runs/demo` inside), the HOME they see, and their environment."""

    project: Path
    home: Path
    env: dict[str, str]


def _fast_overrides(config: pytest.Config) -> list[str]:
    """tests/conftest.py's fast config (FAST), from the conftest pytest already loaded."""
    plugin = config.pluginmanager.get_plugin(str(ROOT / "tests" / "conftest.py"))
    assert plugin is not None, "tests/conftest.py is not loaded"
    return list(plugin.FAST)


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: the venv's commands on PATH, no MLflow or Slipway settings, and the keys the docs' prose
    asks the reader to choose (restricted APIs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLIPWAY_"))}
    tools = ROOT / ".tools" / "bin"
    return {
        **env,
        "PATH": os.pathsep.join([str(VENV_BIN), str(tools), env.get("PATH", "")]),
        "HOME": str(home),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "COLUMNS": "160",
        "ADMIN_KEY": secrets.token_hex(8),
        "INFER_KEY": secrets.token_hex(8),
        "FEEDBACK_KEY": secrets.token_hex(8),
    }


@pytest.fixture(scope="session")
def docs_workspace(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Workspace:
    """`slipway run quickstart --output runs/demo` (fast config), a `.venv` like the user's, and an ordinary
    Triton repository (the demo's model without Slipway's metadata) at `~/triton/model_repository`."""
    root = tmp_path_factory.mktemp("docs")
    project, home = root / "project", root / "home"
    project.mkdir()
    home.mkdir()
    (project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    env = user_env(home)
    sets = [arg for override in (*_fast_overrides(pytestconfig), *OPEN_GATE) for arg in ("--set", override)]
    done = subprocess.run(
        ["slipway", "run", "quickstart", "--output", "runs/demo", *sets],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"the demo run failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    repository = project / "runs" / "demo" / "model_repository"
    assert repository.is_dir(), f"the demo run wrote no {repository}"
    shutil.copytree(
        repository, home / "triton" / "model_repository", ignore=shutil.ignore_patterns("*.meta.json")
    )
    return Workspace(project=project, home=home, env=env)
