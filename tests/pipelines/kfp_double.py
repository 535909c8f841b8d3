"""A local test double of the Kubeflow Pipelines REST API v2beta1: NOT a real Kubeflow.

One ThreadingHTTPServer on 127.0.0.1 implementing only the endpoints kfp.Client 2.17 calls for Slipway:
GET healthz; experiments create/get/list (display_name EQUALS filter); pipelines create/get/list (the filter
kfp's get_pipeline_id sends), the multipart uploads `pipelines/upload` (a pipeline and its first version, named
like it, as the KFP API server does) and `pipelines/upload_version`, versions get/list; runs create (inline spec
or a pipeline_version_reference that must exist)/get/list; recurringruns create. Names are unique as KFP keeps
them (409 ALREADY_EXISTS). Every request is recorded (method, path, query, headers, JSON body, or the multipart
fields). Runs move through a scripted list of states, one per GET, so that waiting can be tested without
sleeping; a run can end FAILED with a failed task. `required_token` makes every call without
`Authorization: Bearer <token>` answer 401. `ui=True` serves HTML at / as the KFP UI (ml-pipeline-ui) does;
without it / answers 404 like the API server (ml-pipeline:8888). `faults` (tests/transient_faults.py) serves
injected 5xx/429/resets before the normal answers. Requests through the Kubernetes API server's service proxy
(`/api/v1/namespaces/<ns>/services/ml-pipeline:http/proxy/...`, where kfp.Client's kube-context discovery
points) are served too, so that one double stands in for "the API server proxies to ml-pipeline".
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml
from loopback import LoopbackServer
from transient_faults import FaultPlan

PREFIX = "/apis/v2beta1"
KUBE_PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services/ml-pipeline:http/proxy(?=/)")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    kube_proxy_namespace: str | None = None  # set when it came through the kube API server's service proxy


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
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    ui: bool = False
    faults: FaultPlan = field(default_factory=FaultPlan)
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
        if path.startswith("/pipelines"):
            return self._pipelines(method, path, query, body, now)
        if path in ("/runs", "/recurringruns") and method == "POST":
            problem = self._source_problem(body)
            if problem:
                return problem
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

    # ---- pipelines and versions (PipelineService, PipelineUploadService) ----
    def _source_problem(self, body: dict[str, Any]) -> tuple[int, Any] | None:
        """A run needs an inline pipeline_spec or a reference to an existing version of that pipeline."""
        reference = body.get("pipeline_version_reference")
        if reference is None:
            if not body.get("pipeline_spec"):
                return 400, {"code": 3, "message": "a run needs pipeline_spec or pipeline_version_reference"}
            return None
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            return 404, {"code": 5, "message": f"pipeline version {reference} not found"}
        return None

    def _new_pipeline(self, display_name: str, description: str, namespace: str, now: str) -> tuple[int, Any]:
        if not display_name.strip():
            return 400, {"code": 3, "message": "pipeline name cannot be empty"}
        for existing in self.pipelines.values():
            if existing["display_name"] == display_name and existing.get("namespace", "") == namespace:
                return 409, {
                    "code": 6,
                    "message": f"pipeline {display_name!r} already exists (ALREADY_EXISTS)",
                }
        pipeline = {
            "pipeline_id": uuid.uuid4().hex,
            "display_name": display_name,
            "name": display_name,
            "description": description,
            "created_at": now,
        }
        if namespace:
            pipeline["namespace"] = namespace
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        return 200, pipeline

    def _new_version(
        self, pipeline_id: str, display_name: str, description: str, upload: Any, now: str
    ) -> tuple[int, Any]:
        if pipeline_id not in self.pipelines:
            return 404, {"code": 5, "message": f"pipeline {pipeline_id} not found"}
        if any(
            v["pipeline_id"] == pipeline_id and v["display_name"] == display_name
            for v in self.versions.values()
        ):
            return 409, {
                "code": 6,
                "message": f"pipeline version {display_name!r} already exists (ALREADY_EXISTS)",
            }
        try:
            docs = list(yaml.safe_load_all(upload or b""))
        except yaml.YAMLError as err:
            return 400, {"code": 3, "message": f"invalid pipeline spec: {err}"}
        if not docs or not isinstance(docs[0], dict) or "pipelineInfo" not in docs[0]:
            return 400, {"code": 3, "message": "invalid pipeline spec: no pipelineInfo"}
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": uuid.uuid4().hex,
            "display_name": display_name,
            "name": display_name,
            "description": description,
            "created_at": now,
            "pipeline_spec": docs[0],
        }
        self.versions[version["pipeline_version_id"]] = version
        return 200, version

    def _pipelines(
        self, method: str, path: str, query: dict[str, list[str]], body: Any, now: str
    ) -> tuple[int, Any]:
        def q(key: str) -> str:
            return query.get(key, [""])[0]

        parts = path.strip("/").split("/")
        if path == "/pipelines" and method == "POST":
            return self._new_pipeline(
                body.get("display_name") or body.get("name") or "",
                body.get("description") or "",
                body.get("namespace") or "",
                now,
            )
        if path == "/pipelines" and method == "GET":
            found = [p for p in self.pipelines.values() if p.get("namespace", "") == q("namespace")]
            found = _filtered(found, q("filter"))
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if path == "/pipelines/upload" and method == "POST":
            name = q("display_name") or q("name") or (body or {}).get("filename", "")
            status, pipeline = self._new_pipeline(name, q("description"), q("namespace"), now)
            if status != 200:
                return status, pipeline
            status, version = self._new_version(
                pipeline["pipeline_id"], name, q("description"), (body or {}).get("uploadfile"), now
            )
            if status != 200:
                del self.pipelines[pipeline["pipeline_id"]]
                return status, version
            return 200, pipeline
        if path == "/pipelines/upload_version" and method == "POST":
            return self._new_version(
                q("pipelineid"),
                q("display_name") or q("name"),
                q("description"),
                (body or {}).get("uploadfile"),
                now,
            )
        if len(parts) == 2 and method == "GET":
            pipeline = self.pipelines.get(parts[1])
            if pipeline is None:
                return 404, {"code": 5, "message": f"pipeline {parts[1]} not found"}
            return 200, pipeline
        if len(parts) == 3 and parts[2] == "versions" and method == "GET":
            if parts[1] not in self.pipelines:
                return 404, {"code": 5, "message": f"pipeline {parts[1]} not found"}
            found = [v for v in self.versions.values() if v["pipeline_id"] == parts[1]]
            found = _filtered(found, q("filter"))
            found.sort(key=lambda v: v["created_at"], reverse=q("sort_by").endswith("desc"))
            found = found[: int(q("page_size") or 10)]
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if len(parts) == 4 and parts[2] == "versions" and method == "GET":
            version = self.versions.get(parts[3])
            if version is None or version["pipeline_id"] != parts[1]:
                return 404, {"code": 5, "message": f"pipeline version {parts[3]} not found"}
            return 200, version
        return 404, {"code": 5, "message": f"{method} {path} is not implemented by the test double"}


def _filtered(items: list[dict[str, Any]], raw_filter: str) -> list[dict[str, Any]]:
    """The display_name EQUALS predicates of a KFP filter (what kfp's name lookups send)."""
    for pred in json.loads(raw_filter or "{}").get("predicates", []):
        if pred.get("key") == "display_name":
            items = [i for i in items if i.get("display_name") == pred.get("stringValue")]
    return items


def _multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """The fields of a multipart/form-data body (the upload endpoints) as text, plus the file's `filename`."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        if part.get_filename():
            fields["filename"] = part.get_filename()
    return fields


class _Handler(BaseHTTPRequestHandler):
    double: KfpDouble

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _serve(self, method: str) -> None:
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        body: Any
        if content_type.startswith("multipart/form-data"):
            body = _multipart(content_type, raw)
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        query = parse_qs(parsed.query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        double = self.double
        path, proxied = parsed.path, KUBE_PROXY.match(parsed.path)
        if proxied:  # kfp joins host ".../proxy/" and "/apis/...": the proxy forwards one clean path
            path = "/" + path[proxied.end() :].lstrip("/")
        if double.faults.serve(self, method, path):
            return
        if path == "/" and double.ui and method == "GET":
            self._send(200, b"<!doctype html><title>Kubeflow Pipelines</title>", "text/html; charset=utf-8")
            return
        with double._lock:
            namespace = proxied["ns"] if proxied else None
            double.requests.append(Request(method, path, query, headers, body, namespace))
            if double.required_token and headers.get("authorization") != f"Bearer {double.required_token}":
                status, payload = 401, {"code": 16, "message": "unauthenticated"}
            elif not path.startswith(PREFIX):
                status, payload = 404, {"code": 5, "message": "Not Found"}
            else:
                status, payload = double.handle(method, path[len(PREFIX) :], query, body)
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
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
