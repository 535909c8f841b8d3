"""Serving: the Triton repository format (writer, reader), the local Triton-compatible server, the v2 client.

A domain package: imports slipway.core (and sibling domain packages); never steps, pipelines or cli. Nothing is
imported eagerly: the local server pulls in tritonclient.grpc, which cannot share a process with kserve (used
by slipway.cluster.kserve). `start_server` etc. resolve lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "ServerHandle": "slipway.serving.server",
    "run_server": "slipway.serving.server",
    "start_server": "slipway.serving.server",
    "ServerOptions": "slipway.serving.service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slipway.serving' has no attribute {name!r}")
