"""What every layer needs to know about an AOTInductor package (compiled in compression, served in serving,
checked in deploy): its file name in a Triton model folder and whether a serving side can run it."""

from __future__ import annotations

from slipway.core.artifacts import ModelArtifact
from slipway.core.errors import ConfigError

PACKAGE_FILE = "model.pt2"


def check_serving_compatibility(
    artifact: ModelArtifact, torch_version: str, compute_capability: str | None, where: str
) -> None:
    """Refuse an AOTInductor package that the serving side cannot run: compiled by another torch release (the
    package's runtime ABI is torch's), for another device, or for another GPU compute capability. `where` names
    the serving side (an image, this machine) in the error, with both values."""
    if artifact.framework != "aoti":
        return
    built_torch = artifact.torch_version or "unknown"
    if _release(built_torch) != _release(torch_version):
        raise ConfigError(
            f"{artifact.file}: AOTInductor package compiled with torch {built_torch}, but {where} runs torch "
            f"{torch_version}; compile it again with torch {torch_version} or serve it with an image whose torch "
            f"is {built_torch}"
        )
    built_cc = artifact.compute_capability
    if built_cc != compute_capability:
        built = f"CUDA compute capability {built_cc}" if built_cc else "the CPU"
        serving = f"CUDA compute capability {compute_capability}" if compute_capability else "the CPU only"
        raise ConfigError(
            f"{artifact.file}: AOTInductor package compiled for {built}, but {where} serves on {serving}; "
            "compile it on the serving device"
        )


def _release(version: str) -> str:
    """torch's release without the local build tag: 2.13.0+cpu and 2.13.0+cu128 share the runtime ABI."""
    return version.split("+")[0]
