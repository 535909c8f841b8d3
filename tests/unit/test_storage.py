"""Object storage by URI: the same reader for paths, file:// and http(s)://, and errors that name the URI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slipway.cluster.storage import download, read_bytes, s3_uri
from slipway.core.errors import DataError


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static file server on 127.0.0.1 over a temporary folder."""
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_paths_file_uris_and_http_read_the_same(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, url = http_root
    (root / "pipeline.yaml").write_text("pipelineSpec: {}\n")
    for uri in (str(root / "pipeline.yaml"), f"file://{root / 'pipeline.yaml'}", f"{url}/pipeline.yaml"):
        assert download(uri, tmp_path / "out" / "p.yaml").read_text() == "pipelineSpec: {}\n"
        assert read_bytes(uri) == b"pipelineSpec: {}\n"


def test_a_missing_object_is_a_data_error_naming_it(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, url = http_root
    for uri in (str(tmp_path / "absent.yaml"), f"{url}/absent.yaml"):
        with pytest.raises(DataError, match=f"cannot read {uri}"):
            download(uri, tmp_path / "out" / "p.yaml")


def test_minio_artifacts_are_read_as_s3() -> None:
    assert s3_uri("minio://mlpipeline/v2/a") == "s3://mlpipeline/v2/a"
    assert s3_uri("gs://bucket/a") == "gs://bucket/a"
