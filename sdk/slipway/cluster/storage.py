"""Object storage by URI (fsspec): local paths and file:// need nothing else, s3:// needs s3fs and its env."""

from __future__ import annotations

import shutil
from pathlib import Path


def s3_uri(uri: str) -> str:
    """KFP names MinIO artifacts minio://bucket/key; fsspec and KServe's storage initializer read them as s3://."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


def read_bytes(uri: str) -> bytes:
    import fsspec

    with fsspec.open(s3_uri(uri), "rb") as fh:
        data: bytes = fh.read()
        return data


def download(uri: str, path: Path) -> Path:
    import fsspec

    path.parent.mkdir(parents=True, exist_ok=True)
    with fsspec.open(s3_uri(uri), "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def upload(path: Path, uri: str) -> None:
    import fsspec

    with open(path, "rb") as src, fsspec.open(s3_uri(uri), "wb", auto_mkdir=True) as dst:
        shutil.copyfileobj(src, dst)
