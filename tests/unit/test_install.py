"""What the package imports is what pyproject.toml declares, and constraints.txt pins it (issue #15, items 14-16).

Imports are read with ast from sdk/ (the installed package), including modules loaded by
name (`importlib.import_module("x")`, `importlib.util.find_spec("x")`), and mapped to distributions with the
installed venv's `importlib.metadata.packages_distributions()`. A distribution that is only there transitively
(through kfp, mlflow, kserve...) is not enough: a release of those may drop it.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = ("sdk",)
FIRST_PARTY = {"slipway"}
# Imported, but deliberately not a dependency: name -> why.
OPTIONAL_IMPORTS = {
    "tensorrt": "GPU images only: imported lazily, installed there at the TensorRT version of the NGC base image",
    "triton_python_backend_utils": "provided by Triton's Python backend to the generated model.py it runs",
}
# Declared, but not imported by Slipway: distribution -> why.
NOT_IMPORTED = {
    "onnxscript": "torch.onnx.export(dynamo=True) imports it, and torch does not declare it",
}
LOADERS = {"import_module", "find_spec", "__import__"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = _pyproject()["project"]
    raw = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(line) for line in raw]


def _imported_modules() -> dict[str, set[str]]:
    """Dotted names imported anywhere in the package (for `from a import b`, `a.b`), with the files importing them."""
    found: dict[str, set[str]] = {}

    def add(name: str, path: Path) -> None:
        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))

    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        add(alias.name, path)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    for alias in node.names:
                        add(f"{node.module}.{alias.name}" if alias.name != "*" else node.module, path)
                elif (
                    isinstance(node, ast.Call)
                    and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in LOADERS
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    add(node.args[0].value, path)
    return {
        name: files
        for name, files in found.items()
        if (top := name.split(".")[0]) not in sys.stdlib_module_names and top not in FIRST_PARTY
    }


@functools.cache
def _files(distribution: str) -> tuple[str, ...]:
    return tuple(str(f) for f in metadata.distribution(distribution).files or ())


def _providers(module: str, top_level: dict[str, list[str]]) -> set[str]:
    """The distributions that provide `module` (canonical names); empty when none is installed.

    A top-level name several distributions share (the `google` namespace, kfp and kfp-kubernetes, mlflow and
    mlflow-skinny) is narrowed to those holding files at the deepest level of the dotted path that any holds.
    """
    parts = module.split(".")
    candidates = set(top_level.get(parts[0], ()))
    if len(candidates) > 1:
        for depth in range(len(parts), 0, -1):
            prefix = "/".join(parts[:depth])
            holders = {
                d
                for d in candidates
                if any(f == f"{prefix}.py" or f.startswith(f"{prefix}/") for f in _files(d))
            }
            if holders:
                candidates = holders
                break
    return {canonicalize_name(d) for d in candidates}


@functools.cache
def _imports_by_distribution() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(distribution -> files importing it, module not installed -> files importing it)."""
    top_level = metadata.packages_distributions()
    by_distribution: dict[str, set[str]] = {}
    missing: dict[str, set[str]] = {}
    for module, files in _imported_modules().items():
        providers = _providers(module, top_level)
        if not providers:
            missing.setdefault(module.split(".")[0], set()).update(files)
        declared = providers & _declared()
        # Shared names (mlflow, kfp): satisfied by any declared provider; else report them all.
        for distribution in declared or providers:
            by_distribution.setdefault(distribution, set()).update(files)
    return by_distribution, missing


def _declared() -> set[str]:
    return {canonicalize_name(r.name) for r in _requirements()}


def test_every_imported_distribution_is_declared() -> None:
    by_distribution, missing = _imports_by_distribution()
    undeclared = {
        distribution: sorted(files)[:3]
        for distribution, files in by_distribution.items()
        if distribution not in _declared()
    }
    assert not undeclared, (
        "imported by the package but not in pyproject.toml's dependencies (declare them, then `make constraints`): "
        f"{undeclared}"
    )
    not_installed = {m: sorted(f)[:3] for m, f in missing.items() if m not in OPTIONAL_IMPORTS}
    assert not not_installed, f"imported, but no installed distribution provides it: {not_installed}"


def test_nothing_is_declared_that_is_not_imported() -> None:
    by_distribution, _ = _imports_by_distribution()
    unused = _declared() - by_distribution.keys() - set(NOT_IMPORTED)
    assert not unused, (
        f"declared in pyproject.toml but never imported by the package: {sorted(unused)}; drop them, or say in "
        "NOT_IMPORTED why they are needed"
    )
    stale = set(NOT_IMPORTED) - _declared()
    assert not stale, f"NOT_IMPORTED names distributions that are not declared: {sorted(stale)}"


def _pins() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: not a `name==version` pin: {raw!r}"
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("extra", [None, "dev"])
def test_constraints_pin_every_requirement_within_its_range(extra: str | None) -> None:
    pins = _pins()
    problems = []
    for requirement in _requirements(extra):
        version = pins.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name}: not pinned")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert not problems, f"constraints.txt is stale (run `make constraints`): {problems}"


def test_cloudevents_stays_below_2() -> None:
    """cloudevents 2.0 moved `cloudevents.http`, which slipway.monitoring.events imports."""
    (requirement,) = [r for r in _requirements() if r.name == "cloudevents"]
    assert not requirement.specifier.contains("2.0.0"), f"cloudevents{requirement.specifier} admits 2.0"


def test_fastapi_is_not_a_dependency() -> None:
    """Slipway's servers are starlette apps; fastapi comes (and is pinned) only through mlflow and kserve."""
    assert "fastapi" not in _declared()


def test_makefile_installs_the_pinned_torch() -> None:
    match = re.search(r"^TORCH_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile sets no TORCH_VERSION"
    assert _pins()["torch"] == match[1], "the Makefile and constraints.txt disagree on torch"


def _dry_run(target: str, tmp_path: Path) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        [make, "-n", target, f"VENV={tmp_path / 'venv'}", f"TOOLS={tmp_path / 'tools'}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout


def test_demo_installs_the_project_without_the_dev_tools(tmp_path: Path) -> None:
    commands = _dry_run("demo", tmp_path)
    assert "install-torch.sh" in commands
    assert "-c constraints.txt -e ." in commands
    assert "[dev]" not in commands
    assert commands.index("install-torch.sh") < commands.index("-c constraints.txt")


def test_test_adds_the_dev_tools(tmp_path: Path) -> None:
    commands = _dry_run("test", tmp_path)
    assert "-c constraints.txt -e '.[dev]'" in commands
    assert commands.index("-e .\n") < commands.index("[dev]") < commands.index("-m pytest")


def test_torch_comes_from_the_cpu_index_by_default(tmp_path: Path) -> None:
    assert "'https://download.pytorch.org/whl/cpu'" in _dry_run("install", tmp_path)
