"""A local test double of the Kubeflow Pipelines REST API v2beta1: NOT a real Kubeflow.

One ThreadingHTTPServer on 127.0.0.1 implementing only the endpoints kfp.Client 2.17 calls for Slipway:
GET healthz; experiments create/get/list (display_name EQUALS filter); runs create/get/list; recurringruns
create. Every request is recorded (method, path, query, headers, JSON body). Runs move through a scripted list of
states, one per GET, so that waiting can be tested without sleeping; a run can end FAILED with a failed task.
`required_token` makes every call without `Authorization: Bearer <token>` answer 401.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from loopback import LoopbackServer

PREFIX = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class KfpDouble:
    required_token: str | None = None
    # states a new run goes through, one per GET; the last one sticks
    run_script: list[str] = field(default_factory=lambda: ["RUNNING", "SUCCEEDED"])
    failure_message: str = "task train-teacher failed: OOMKilled"
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _scripts: dict[str, list[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bodies(self, method: str, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == method and r.path == PREFIX + path]

    # ---- handlers: (status, json) ----
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if path == "/healthz" and method == "GET":
            return 200, {"multi_user": False, "pipeline_store": "test-double"}
        if path == "/experiments" and method == "POST":
            exp = {**body, "experiment_id": uuid.uuid4().hex, "created_at": now, "storage_state": "AVAILABLE"}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == "/experiments" and method == "GET":
            found = list(self.experiments.values())
            for pred in json.loads(query.get("filter", ["{}"])[0] or "{}").get("predicates", []):
                if pred.get("key") == "display_name":
                    found = [e for e in found if e.get("display_name") == pred.get("stringValue")]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if path.startswith("/experiments/") and method == "GET":
            exp_id = path.rsplit("/", 1)[1]
            if exp_id not in self.experiments:
                return 404, {"code": 5, "message": f"experiment {exp_id} not found"}
            return 200, self.experiments[exp_id]
        if path == "/runs" and method == "POST":
            run_id = uuid.uuid4().hex
            run = {
                **body,
                "run_id": run_id,
                "created_at": now,
                "state": "PENDING",
                "storage_state": "AVAILABLE",
            }
            self.runs[run_id] = run
            self._scripts[run_id] = list(self.run_script)
            return 200, run
        if path == "/runs" and method == "GET":
            runs = list(self.runs.values())
            exp = query.get("experiment_id", [None])[0]
            if exp:
                runs = [r for r in runs if r.get("experiment_id") == exp]
            runs.sort(key=lambda r: r["created_at"], reverse=True)
            size = int(query.get("page_size", ["10"])[0])
            return 200, {"runs": runs[:size], "total_size": len(runs)} if runs else {}
        if path.startswith("/runs/") and method == "GET":
            run_id = path.rsplit("/", 1)[1]
            if run_id not in self.runs:
                return 404, {"code": 5, "message": f"run {run_id} not found"}
            run = self.runs[run_id]
            script = self._scripts[run_id]
            run["state"] = script.pop(0) if len(script) > 1 else script[0]
            if run["state"] in ("SUCCEEDED", "FAILED"):
                run["finished_at"] = now
            if run["state"] == "FAILED":
                run["error"] = {"code": 2, "message": self.failure_message}
                run["run_details"] = {
                    "task_details": [
                        {"display_name": "data", "state": "SUCCEEDED"},
                        {
                            "display_name": "train-teacher",
                            "state": "FAILED",
                            "error": {"code": 2, "message": "OOMKilled"},
                        },
                    ]
                }
            return 200, run
        if path == "/recurringruns" and method == "POST":
            rec = {**body, "recurring_run_id": uuid.uuid4().hex, "created_at": now, "status": "ENABLED"}
            self.recurring_runs[rec["recurring_run_id"]] = rec
            return 200, rec
        return 404, {"code": 5, "message": f"{method} {path} is not implemented by the test double"}


class _Handler(BaseHTTPRequestHandler):
    double: KfpDouble

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _serve(self, method: str) -> None:
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        query = parse_qs(parsed.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        double = self.double
        with double._lock:
            double.requests.append(Request(method, parsed.path, query, headers, body))
            if double.required_token and headers.get("authorization") != f"Bearer {double.required_token}":
                status, payload = 401, {"code": 16, "message": "unauthenticated"}
            elif not parsed.path.startswith(PREFIX):
                status, payload = 404, {"code": 5, "message": "not found"}
            else:
                status, payload = double.handle(method, parsed.path[len(PREFIX) :], query, body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")


class RunningDouble:
    """Context manager: serve a KfpDouble on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, double: KfpDouble) -> None:
        handler = type("Handler", (_Handler,), {"double": double})
        self.double = double
        self._http = LoopbackServer(handler)
        self.url = self._http.url

    def __enter__(self) -> RunningDouble:
        self._http.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.stop()
