"""A local test double of the Kubernetes API server + KServe controller, a Triton v2 endpoint and Prometheus.

It is NOT a real cluster: one HTTP server on 127.0.0.1 that implements only what Slipway's rollout and
experiments use, so the real `kubernetes` client can be exercised end to end:

- GET/POST/DELETE /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}] and PATCH
  with merge-patch (RFC 7386, what CustomObjectsApi sends) or json-patch (RFC 6902); resourceVersion
  preconditions (409), NotFound/AlreadyExists Status bodies like the real server.
- GET/POST/DELETE /apis/serving.kserve.io/v1alpha1/namespaces/{ns}/inferencegraphs[/{name}], refusing (422)
  what KServe's InferenceGraph webhook refuses (no `root` node, a step with no or several targets, Splitter
  weights not summing to 100); a graph is Ready at once with a URL on the double (no router runs).
- A simplified KServe Knative-mode controller: a new revision per predictor change, revisions Ready
  `ready_after_s` after their creation on the double's `clock` (a `FakeClock` that the Rollout's injected
  sleep advances makes readiness follow polls, not wall time), traffic split by canaryTrafficPercent
  between the latest ready revision and the last rolled-out one, latestRolledoutRevision bookkeeping,
  tag-routing URLs; Standard mode reports no revisions.
- Failure injection by storageUri: `failing_uris` (Ready=False with a reason), `stuck_uris` (never Ready),
  `broken_model_uris` (Ready, but v2 inference answers 500).
- /revisions/{rev}/v2/... : a tiny Triton v2 HTTP endpoint per revision (health, metadata, config, infer;
  binary request tensors accepted, answers in JSON).
- /api/v1/query : Prometheus instant queries answered from `prom_rules` (substring match -> value).
- `faults` (tests/transient_faults.py): injected 5xx / 429 / connection resets, served before the normal answer.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from loopback import LoopbackServer
from transient_faults import FaultPlan

ISVC_PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1beta1/namespaces/(?P<ns>[^/]+)/inferenceservices(?:/(?P<name>[^/]+))?$"
)
GRAPH_PATH = re.compile(
    r"^/apis/serving\.kserve\.io/v1alpha1/namespaces/(?P<ns>[^/]+)/inferencegraphs(?:/(?P<name>[^/]+))?$"
)
REVISION_PATH = re.compile(r"^/revisions/(?P<rev>[^/]+)(?P<rest>/v2.*)$")


@dataclass
class Revision:
    name: str
    storage_uri: str
    created_at: float


@dataclass
class IsvcState:
    obj: dict[str, Any]
    revisions: list[Revision] = field(default_factory=list)
    rolled_out: str | None = None
    previous_rolled_out: str | None = None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, replace, remove, test) on dicts and lists."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent[last]
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise KeyError(op["path"])
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported op {kind}")
    return doc


class FakeClock:
    """Seconds that pass only when `sleep` is called: a test's time that no machine's speed can stretch."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class KServeDouble:
    """In-process fake of the API server + KServe controller; see the module docstring for its limits."""

    def __init__(
        self,
        *,
        ready_after_s: float = 0.05,
        default_mode: str = "Standard",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ready_after_s = ready_after_s
        self.clock = clock
        self.default_mode = default_mode
        self.failing_uris: dict[str, str] = {}
        self.stuck_uris: set[str] = set()
        self.broken_model_uris: set[str] = set()
        self.prom_rules: list[tuple[tuple[str, ...], float]] = []
        self.prom_queries: list[str] = []
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content-type, body
        self.infer_calls: list[str] = []  # revision names that received a v2 inference
        self.faults = FaultPlan()
        self._items: dict[tuple[str, str], IsvcState] = {}
        self._graphs: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._rv = 0
        self._http = LoopbackServer(self._handler())

    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> KServeDouble:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    # --- test helpers ---
    def patches(self) -> list[tuple[str, Any]]:
        return [(ctype, body) for method, _, ctype, body in self.requests if method == "PATCH"]

    def stored(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            state = self._items[(namespace, name)]
            return self._render(state)

    def exists(self, namespace: str, name: str) -> bool:
        """Whether an InferenceService of that name is stored."""
        with self._lock:
            return (namespace, name) in self._items

    def stored_graph(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The InferenceGraph as the API returns it, or None."""
        with self._lock:
            graph = self._graphs.get((namespace, name))
            return self._render_graph(graph) if graph is not None else None

    # --- controller simulation ---
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _mode(self, obj: dict[str, Any]) -> str:
        mode = ((obj.get("metadata") or {}).get("annotations") or {}).get(
            "serving.kserve.io/deploymentMode", self.default_mode
        )
        return {"Serverless": "Knative", "RawDeployment": "Standard"}.get(mode, mode)

    def _revision_state(self, rev: Revision) -> str:
        if rev.storage_uri in self.failing_uris:
            return "failed"
        if rev.storage_uri in self.stuck_uris:
            return "pending"
        return "ready" if self.clock() - rev.created_at >= self.ready_after_s else "pending"

    @staticmethod
    def _template(obj: dict[str, Any]) -> dict[str, Any]:
        predictor = dict((obj.get("spec") or {}).get("predictor") or {})
        predictor.pop("canaryTrafficPercent", None)
        return predictor

    def _new_revision(self, state: IsvcState) -> None:
        name = state.obj["metadata"]["name"]
        number = len(state.revisions) + 1
        uri = self._template(state.obj).get("model", {}).get("storageUri", "")
        state.revisions.append(Revision(f"{name}-predictor-{number:05d}", uri, self.clock()))

    def _render(self, state: IsvcState) -> dict[str, Any]:
        """Compute status the way KServe would by now (called on every read)."""
        obj = copy.deepcopy(state.obj)
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        mode = self._mode(obj)
        latest = state.revisions[-1]
        latest_state = self._revision_state(latest)
        ready_revs = [r for r in state.revisions if self._revision_state(r) == "ready"]
        latest_ready = ready_revs[-1].name if ready_revs else None
        pct = obj["spec"]["predictor"].get("canaryTrafficPercent")
        base = self.url
        traffic: list[dict[str, Any]] = []
        if latest_ready is not None:
            if pct is None or pct == 100 or state.rolled_out is None or state.rolled_out == latest_ready:
                if state.rolled_out != latest_ready and (
                    pct is None or pct == 100 or state.rolled_out is None
                ):
                    state.previous_rolled_out, state.rolled_out = state.rolled_out, latest_ready
                target = latest_ready if (pct is None or pct == 100) else state.rolled_out
                traffic = [{"revisionName": target, "percent": 100, "latestRevision": target == latest_ready}]
            else:
                traffic = [
                    {"revisionName": latest_ready, "percent": pct, "latestRevision": True, "tag": "latest"},
                    {
                        "revisionName": state.rolled_out,
                        "percent": 100 - pct,
                        "latestRevision": False,
                        "tag": "prev",
                    },
                ]
        tag_routing = (
            obj["metadata"].get("annotations", {}).get("serving.kserve.io/enable-tag-routing") == "true"
        )
        for entry in traffic:
            if tag_routing or len(traffic) == 1:
                entry["url"] = f"{base}/revisions/{entry['revisionName']}"
        if latest_state == "ready":
            ready = {"type": "Ready", "status": "True"}
        elif latest_state == "failed":
            ready = {
                "type": "Ready",
                "status": "False",
                "reason": "RevisionFailed",
                "message": f'Revision "{latest.name}" failed: {self.failing_uris[latest.storage_uri]}',
            }
        else:
            ready = {
                "type": "Ready",
                "status": "Unknown",
                "reason": "RevisionMissing",
                "message": "Deploying",
            }
        predictor_ready = dict(ready, type="PredictorReady")
        status: dict[str, Any] = {
            "observedGeneration": obj["metadata"]["generation"],
            "deploymentMode": mode,
            "conditions": [{"type": "IngressReady", "status": "True"}, predictor_ready, ready],
            "url": f"{base}/isvc/{ns}/{name}",
        }
        if latest_ready is not None:  # KServe's cluster-local address, what an InferenceGraph routes to
            host = name if mode == "Knative" else f"{name}-predictor"
            status["address"] = {"url": f"http://{host}.{ns}.svc.cluster.local"}
        if mode == "Knative":
            status["components"] = {
                "predictor": {
                    "url": f"{base}/isvc/{ns}/{name}",
                    "latestCreatedRevision": latest.name,
                    "latestReadyRevision": latest_ready,
                    "latestRolledoutRevision": state.rolled_out,
                    "previousRolledoutRevision": state.previous_rolled_out,
                    "traffic": traffic,
                }
            }
        else:
            url = f"{base}/revisions/{latest_ready}" if latest_ready else None
            status["components"] = {"predictor": {"url": url}}
            status["url"] = url
        obj["status"] = status
        return obj

    # --- HTTP API ---
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: with Nagle on, each response stalls on a delayed ACK.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, code: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                # Triton's binary tensor extension: a JSON header, then raw tensor bytes (ignored here).
                header = self.headers.get("Inference-Header-Content-Length")
                return json.loads(raw[: int(header)] if header else raw) if raw else None

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def _dispatch(self, method: str) -> None:
                parsed = urlparse(self.path)
                body = self._body() if method in ("POST", "PATCH", "DELETE") else None
                if double.faults.serve(self, method, parsed.path):
                    return
                if parsed.path == "/api/v1/query":
                    query = parse_qs(parsed.query).get("query", [""])[0]
                    self._send(200, double._prom(query))
                    return
                rev_match = REVISION_PATH.match(parsed.path)
                if rev_match:
                    code, payload = double._triton(method, rev_match["rev"], rev_match["rest"], body)
                    self._send(code, payload)
                    return
                graph_match = GRAPH_PATH.match(parsed.path)
                if graph_match:
                    double.requests.append((method, parsed.path, self.headers.get("Content-Type", ""), body))
                    code, payload = double._graph(method, graph_match["ns"], graph_match["name"], body)
                    self._send(code, payload)
                    return
                match = ISVC_PATH.match(parsed.path)
                if not match:
                    self._send(404, _status(404, "NotFound", f"no route {parsed.path}"))
                    return
                ctype = self.headers.get("Content-Type", "")
                double.requests.append((method, parsed.path, ctype, body))
                code, payload = double._isvc(method, match["ns"], match["name"], ctype, body)
                self._send(code, payload)

        return Handler

    def _isvc(self, method: str, ns: str, name: str | None, ctype: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            if method == "POST" and name is None:
                return self._create(ns, body)
            if name is None:
                return 405, _status(405, "MethodNotAllowed", "list is not implemented by this double")
            state = self._items.get((ns, name))
            if state is None:
                return 404, _status(
                    404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found'
                )
            if method == "GET":
                return 200, self._render(state)
            if method == "PATCH":
                return self._patch(state, ctype, body)
            if method == "DELETE":
                del self._items[(ns, name)]
                return 200, _deleted("inferenceservices", name)
            return 405, _status(405, "MethodNotAllowed", method)

    # --- InferenceGraphs ---
    def _graph(self, method: str, ns: str, name: str | None, body: Any) -> tuple[int, Any]:
        with self._lock:
            if method == "POST" and name is None:
                return self._create_graph(ns, body)
            if name is None:
                return 405, _status(405, "MethodNotAllowed", "list is not implemented by this double")
            graph = self._graphs.get((ns, name))
            if graph is None:
                return 404, _status(404, "NotFound", f'inferencegraphs.serving.kserve.io "{name}" not found')
            if method == "GET":
                return 200, self._render_graph(graph)
            if method == "DELETE":
                del self._graphs[(ns, name)]
                return 200, _deleted("inferencegraphs", name)
            return 405, _status(405, "MethodNotAllowed", method)

    def _create_graph(self, ns: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = (body.get("metadata") or {}).get("name")
        if body.get("kind") != "InferenceGraph" or body.get("apiVersion") != "serving.kserve.io/v1alpha1":
            return 400, _status(400, "BadRequest", "kind/apiVersion mismatch")
        if (ns, name) in self._graphs:
            return 409, _status(
                409, "AlreadyExists", f'inferencegraphs.serving.kserve.io "{name}" already exists'
            )
        problem = _graph_problem(body)
        if problem:
            return 422, _status(422, "Invalid", problem)
        graph = copy.deepcopy(body)
        graph.pop("status", None)
        graph["metadata"].update(
            namespace=ns, generation=1, resourceVersion=self._next_rv(), uid=str(uuid.uuid4())
        )
        self._graphs[(ns, name)] = graph
        return 201, self._render_graph(graph)

    def _render_graph(self, graph: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(graph)
        ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [{"type": "Ready", "status": "True"}],
            "url": f"{self.url}/graphs/{ns}/{name}",
        }
        return obj

    def _create(self, ns: str, body: dict[str, Any]) -> tuple[int, Any]:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if body.get("kind") != "InferenceService" or body.get("apiVersion") != "serving.kserve.io/v1beta1":
            return 400, _status(400, "BadRequest", "kind/apiVersion mismatch")
        if (ns, name) in self._items:
            return 409, _status(
                409, "AlreadyExists", f'inferenceservices.serving.kserve.io "{name}" already exists'
            )
        problem = _schema_problem(body)
        if problem:
            return 422, _status(422, "Invalid", problem)
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        obj["metadata"].update(
            namespace=ns,
            generation=1,
            resourceVersion=self._next_rv(),
            uid=str(uuid.uuid4()),
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        state = IsvcState(obj)
        self._new_revision(state)
        self._items[(ns, name)] = state
        return 201, self._render(state)

    def _patch(self, state: IsvcState, ctype: str, body: Any) -> tuple[int, Any]:
        current = state.obj
        if ctype.startswith("application/merge-patch+json"):
            if not isinstance(body, dict):
                return 400, _status(400, "BadRequest", "merge patch body must be an object")
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
                return 409, _status(
                    409, "Conflict", "the object has been modified; please apply your changes"
                )
            updated = merge_patch(current, body)
        elif ctype.startswith("application/json-patch+json"):
            try:
                updated = json_patch(current, body)
            except (KeyError, IndexError, ValueError) as exc:
                return 422, _status(422, "Invalid", f"json patch failed: {exc}")
        else:
            return 415, _status(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}"
            )
        problem = _schema_problem(updated)
        if problem:
            return 422, _status(422, "Invalid", problem)
        updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        spec_changed = updated.get("spec") != current.get("spec")
        template_changed = self._template(updated) != self._template(current)
        if updated == current:
            return 200, self._render(state)
        updated["metadata"]["resourceVersion"] = self._next_rv()
        if spec_changed:
            updated["metadata"]["generation"] = current["metadata"]["generation"] + 1
        state.obj = updated
        if template_changed:
            self._new_revision(state)
        return 200, self._render(state)

    # --- Triton v2 per revision ---
    def _triton(self, method: str, rev: str, rest: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            revision = next(
                (r for s in self._items.values() for r in s.revisions if r.name == rev),
                None,
            )
            state = self._revision_state(revision) if revision else None
        if revision is None or state != "ready":
            return 503, {"error": f"revision {rev} not ready"}
        if rest in ("/v2/health/ready", "/v2/health/live"):
            return 200, {}
        m = re.match(r"^/v2/models/([^/]+)(/ready|/infer|/config)?$", rest)
        if not m:
            return 404, {"error": f"no route {rest}"}
        model, action = m.group(1), m.group(2)
        if action == "/ready":
            return 200, {}
        if action == "/config":
            return 200, {"name": model, "platform": "onnxruntime_onnx", "max_batch_size": 8}
        if action is None:
            return 200, {
                "name": model,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
            }
        self.infer_calls.append(rev)
        if revision.storage_uri in self.broken_model_uris:
            return 500, {"error": "onnxruntime: input 'input' has an unexpected shape"}
        batch = int(body["inputs"][0]["shape"][0])
        return 200, {
            "model_name": model,
            "id": body.get("id", ""),
            "outputs": [
                {"name": "logits", "datatype": "FP32", "shape": [batch, 3], "data": [0.1, 0.2, 0.7] * batch}
            ],
        }

    # --- Prometheus ---
    def _prom(self, query: str) -> dict[str, Any]:
        self.prom_queries.append(query)
        for needles, value in self.prom_rules:
            if all(n in query for n in needles):
                result = [{"metric": {}, "value": [time.time(), str(value)]}]
                return {"status": "success", "data": {"resultType": "vector", "result": result}}
        return {"status": "success", "data": {"resultType": "vector", "result": []}}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _deleted(plural: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success",
        "details": {"name": name, "group": "serving.kserve.io", "kind": plural},
    }


def _graph_problem(obj: dict[str, Any]) -> str | None:
    """What KServe's InferenceGraph validating webhook refuses (pkg/apis/serving/v1alpha1)."""
    nodes = (obj.get("spec") or {}).get("nodes") or {}
    if "root" not in nodes:
        return (
            "root node not found, InferenceGraph needs a node with name 'root' as the root node of the graph"
        )
    for node_name, node in nodes.items():
        steps = node.get("steps") or []
        for i, step in enumerate(steps):
            targets = [k for k in ("nodeName", "serviceName", "serviceUrl") if step.get(k)]
            if len(targets) != 1:
                return f'Step {i} in node "{node_name}" must specify exactly one of nodeName, serviceName, serviceUrl'
        if node.get("routerType") == "Splitter" and (
            any(s.get("weight") is None for s in steps) or sum(s.get("weight") or 0 for s in steps) != 100
        ):
            return f"Node[{node_name}] splitter node: the sum of traffic weights for all routing targets should be 100"
    return None


def _schema_problem(obj: dict[str, Any]) -> str | None:
    """The part of the CRD's OpenAPI schema the rollout touches."""
    predictor = (obj.get("spec") or {}).get("predictor")
    if not isinstance(predictor, dict):
        return "spec.predictor: Required value"
    pct = predictor.get("canaryTrafficPercent")
    if pct is not None and (not isinstance(pct, int) or not 0 <= pct <= 100):
        return f"spec.predictor.canaryTrafficPercent: Invalid value: {pct!r}: must be 0..100"
    return None
