"""Object storage by URI (fsspec): paths, file:// and http(s):// need nothing else, s3:// needs s3fs and its env.

A failed read is a DataError naming the URI, whatever the backend raised.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from slipway.core.errors import DataError


def s3_uri(uri: str) -> str:
    """KFP names MinIO artifacts minio://bucket/key; fsspec and KServe's storage initializer read them as s3://."""
    return "s3://" + uri.removeprefix("minio://") if uri.startswith("minio://") else uri


@contextmanager
def _reading(uri: str) -> Iterator[IO[bytes]]:
    import fsspec

    try:
        with fsspec.open(s3_uri(uri), "rb") as fh:
            yield fh
    except Exception as err:  # each fsspec backend raises its own types (OSError, aiohttp, botocore)
        raise DataError(f"cannot read {uri}: {type(err).__name__}: {err}") from None


def read_bytes(uri: str) -> bytes:
    with _reading(uri) as fh:
        data: bytes = fh.read()
        return data


def download(uri: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _reading(uri) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def upload(path: Path, uri: str) -> None:
    import fsspec

    with open(path, "rb") as src, fsspec.open(s3_uri(uri), "wb", auto_mkdir=True) as dst:
        shutil.copyfileobj(src, dst)
