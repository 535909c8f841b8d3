"""Metadata every model artifact carries between steps: sha256, framework, precision, tensor specs.

The metadata lives in a JSON sidecar (`model.onnx` -> `model.onnx.meta.json`) so that any consumer,
including the server, can verify the bytes before it loads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slipway.core.errors import ArtifactIntegrityError, NotFoundError

METADATA_SUFFIX = ".meta.json"
Framework = Literal["pytorch", "onnx", "tensorrt", "aoti"]  # aoti: a torch.export + AOTInductor .pt2
Precision = Literal["fp32", "fp16", "int8", "bf16"]


class TensorSpec(BaseModel):
    """One graph input or output; -1 marks a dynamic dimension (the batch axis)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str = Field(description="numpy dtype name, e.g. float32")
    shape: list[int]


class ModelArtifact(BaseModel):
    """What a model file is, and the hash its bytes must have."""

    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int
    framework: Framework
    precision: Precision
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int | None = None
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    torch_version: str | None = None  # AOTInductor packages run only on the torch release that compiled them
    extra: dict[str, Any] = Field(default_factory=dict)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(model_path: str | Path) -> Path:
    path = Path(model_path)
    return path.with_name(path.name + METADATA_SUFFIX)


def write_metadata(model_path: str | Path, artifact: ModelArtifact) -> Path:
    out = metadata_path(model_path)
    out.write_text(artifact.model_dump_json(indent=2) + "\n")
    return out


def read_metadata(model_path: str | Path) -> ModelArtifact:
    meta = metadata_path(model_path)
    if not meta.is_file():
        raise NotFoundError(
            f"{model_path}: no metadata sidecar {meta.name}; artifacts must come from Slipway"
        )
    return ModelArtifact.model_validate(json.loads(meta.read_text()))


def verify_artifact(model_path: str | Path) -> ModelArtifact:
    """Check the file's sha256 against its metadata; refuse a mismatch (tampered or truncated file)."""
    artifact = read_metadata(model_path)
    actual = sha256_file(model_path)
    if actual != artifact.sha256:
        raise ArtifactIntegrityError(
            f"{model_path}: sha256 {actual} does not match metadata {artifact.sha256}; refusing to load it"
        )
    return artifact
