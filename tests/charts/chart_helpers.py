"""Shared by the chart, manifest and image tests: find the real helm/kubectl binaries and render with them.

A module of its own (not conftest) so that `from chart_helpers import ...` cannot pick up another test
folder's conftest."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "slipway"
MANIFESTS_DIR = REPO_ROOT / "manifests"
IMAGES_DIR = REPO_ROOT / "images"

RELEASE = "demo"
NAMESPACE = "models"

# Values scenarios: every ci/*-values.yaml (globbed, so a new scenario is tested at once), plus the chart defaults.
CI_VALUES: dict[str, Path] = {
    path.name.removesuffix("-values.yaml"): path for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
}
SCENARIOS: dict[str, Path | None] = {"default": None, **CI_VALUES}
# Kustomize entry points: the base and every overlay.
KUSTOMIZE_TARGETS: dict[str, Path] = {"base": MANIFESTS_DIR / "base"} | {
    path.name: path for path in sorted((MANIFESTS_DIR / "overlays").iterdir()) if path.is_dir()
}

Objects = list[dict[str, Any]]


def find_binary(name: str) -> str:
    """Path of a required tool; fails (never skips) so that a missing tool cannot hide untested YAML."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: run `make tools` (installs helm and kubectl into .tools/bin) and run the "
            "tests with .tools/bin on PATH, as `make test` does",
            pytrace=False,
        )
    return path


def run_tool(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output; the caller decides what a non-zero exit means."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def load_documents(text: str) -> Objects:
    """Parse a multi-document YAML stream, dropping empty documents."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(*set_values: str, values_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart as the release RELEASE in NAMESPACE; the caller checks the outcome."""
    args = [find_binary("helm"), "template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for assignment in set_values:
        args += ["--set", assignment]
    return run_tool(args)


@cache
def helm_template_text(values_file: Path | None, set_values: tuple[str, ...]) -> str:
    result = helm_template(*set_values, values_file=values_file)
    if result.returncode != 0:
        pytest.fail(
            f"helm template failed for {values_file or 'default values'}:\n{result.stderr}", pytrace=False
        )
    return result.stdout


@cache
def kustomize_text(target: Path) -> str:
    result = run_tool([find_binary("kubectl"), "kustomize", str(target)])
    if result.returncode != 0:
        pytest.fail(
            f"kubectl kustomize {target.relative_to(REPO_ROOT)} failed:\n{result.stderr}", pytrace=False
        )
    return result.stdout


def objects_of_kind(objects: Objects, kind: str) -> Objects:
    return [obj for obj in objects if obj.get("kind") == kind]


def one_object(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of a kind (and name); fails with what was there instead."""
    matches = [o for o in objects_of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(matches) == 1, (
        f"expected one {kind}{f' named {name}' if name else ''}, found "
        f"{[o['metadata']['name'] for o in objects_of_kind(objects, kind)]}"
    )
    return matches[0]
