"""User journeys: the public CLI in subprocesses, pipelines under kfp.local, small data, minutes not hours.

Each test does what a user does from the README (a project folder with a model module, a config and data) and
checks what the user sees: the exit status, summary.json, the MLflow registry, the Triton repository.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loop import TIMEOUT_S, readme_block, signal_data, user_env

__all__ = ["readme_block", "signal_data", "user_env"]  # journeys import them from here

SLIPWAY = Path(sys.executable).with_name("slipway")
RUN_TIMEOUT_S = TIMEOUT_S


def make_project(root: Path) -> Path:
    """A user's project folder: the README's model module and config, verbatim, and a `.venv` like theirs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "my_models.py").write_text(readme_block("# my_models.py"))
    (root / "my-config.yaml").write_text(readme_block("# my-config.yaml"))
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return root


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    print(done.stdout[-4000:], done.stderr[-8000:], sep="\n")  # shown by pytest when the test fails
    return done


def slipway_run(project: Path, output: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`slipway run quickstart --config my-config.yaml` with `--set` overrides, as a user types it."""
    sets = " ".join(f"--set '{o}'" for o in overrides)
    return shell(
        f"PYTHONPATH=$PWD {SLIPWAY} run quickstart --config my-config.yaml --output {output} {sets}", project
    )


def summary(project: Path, output: str) -> dict[str, Any]:
    return json.loads((project / output / "summary.json").read_text())


def steps_by_name(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in run["steps"]}


@pytest.fixture(scope="module")
def noisy_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README project on hard data: classes overlap (many test rows near the boundary) and 10% of the
    labels are wrong, so no model can reach 100% test accuracy."""
    project = make_project(tmp_path_factory.mktemp("noisy"))
    signal_data(
        project / "data" / "my_data.npz",
        n=8000,
        n_test=1500,
        length=32,
        classes=3,
        noise=0.9,
        label_noise=0.1,
    )
    return project


FAST = (  # fewer epochs and timing iterations: the journeys check flows, not accuracy records
    "train.epochs=4",
    "distill.epochs=4",
    "compress.prune.finetune.epochs=2",
    "evaluate.latency_iterations=20",
    "evaluate.throughput_iterations=3",
    "evaluate.repeats=2",
)
