"""Serving: the local Triton-compatible server (`slipway serve`) and the cluster objects (KServe).

Nothing is imported eagerly: the local server pulls in tritonclient.grpc, which cannot share a process with
kserve, so `slipway.serving.kserve` must be importable without it. `start_server` etc. resolve lazily.
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
