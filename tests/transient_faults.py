"""Transient API failures on demand for the HTTP test doubles (KFP, Kubernetes + KServe): a plan of faults
that a double serves, in order, to the requests whose method and path match, before answering normally.

A fault is an HTTP status (503, 429, ...), `(status, retry_after)` to add a Retry-After header, or "reset":
the connection is closed with SO_LINGER 0, so the client reads a TCP RST instead of a response.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal

Fault = int | tuple[int, float] | Literal["reset"]


@dataclass
class _Rule:
    method: str
    pattern: re.Pattern[str]
    faults: deque[Fault]
    skip: int  # matching requests still to let through before the faults


@dataclass
class FaultPlan:
    """Faults queued per (method, path pattern); `served` records what was injected, in order."""

    rules: list[_Rule] = field(default_factory=list)
    served: list[tuple[str, str, Fault]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, method: str, path_pattern: str, *faults: Fault, after: int = 0) -> None:
        """Serve `faults` to the matching requests that come after the first `after` of them."""
        with self._lock:
            self.rules.append(_Rule(method, re.compile(path_pattern), deque(faults), after))

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self.rules:
                if not rule.faults or rule.method != method or not rule.pattern.search(path):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                fault = rule.faults.popleft()
                self.served.append((method, path, fault))
                return fault
        return None

    def pending(self) -> int:
        with self._lock:
            return sum(len(rule.faults) for rule in self.rules)

    def serve(self, handler: BaseHTTPRequestHandler, method: str, path: str) -> bool:
        """Answer the request with the next matching fault; False when none is due (answer normally)."""
        fault = self.take(method, path)
        if fault is None:
            return False
        handler.close_connection = True
        if fault == "reset":  # close now with linger 0: the kernel answers with RST, not a FIN
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(handler.connection.detach())
            return True
        status, retry_after = fault if isinstance(fault, tuple) else (fault, None)
        data = json.dumps({"code": 14, "message": f"injected transient fault: HTTP {status}"}).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.send_header("Connection", "close")
        if retry_after is not None:
            handler.send_header("Retry-After", f"{retry_after:g}")
        handler.end_headers()
        handler.wfile.write(data)
        return True
