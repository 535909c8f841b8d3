"""Long cluster waits survive transient API errors and still stop at once on permanent ones.

The REAL `kubernetes` client talks HTTP to local test doubles (not a cluster) that serve injected faults
(tests/transient_faults.py): HTTP 503, 429, 500, and connection resets (TCP RST; four in a row, since urllib3
itself retries a GET three times). Time is simulated: the waits' injected clock and sleep also drive the
retries' backoff, so no test sleeps for real.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from k8s_double import FakeClock, KServeDouble
from kubernetes import client as k8s
from loopback import LoopbackServer
from transient_faults import FaultPlan

from slipway.cluster import trainjob
from slipway.cluster.kserve import build_inference_service
from slipway.cluster.rollout import Rollout, RolloutSettings
from slipway.core.errors import ClusterError, NotFoundError

NS, NAME = "models", "mnist"
ISVC_PATH = rf"/inferenceservices/{NAME}$"
TRANSIENT = (503, 429, "reset", "reset", "reset", "reset", 500)
FAST = RolloutSettings(ready_timeout_s=60, poll_interval_s=0.02, request_timeout_s=5, analysis_s=0)

pytestmark = [pytest.mark.timeout(60)]


def _rollout(api: k8s.CustomObjectsApi, clock: FakeClock) -> Rollout:
    return Rollout(api, FAST, sleep=clock.sleep, clock=clock)


def _body(uri: str) -> dict[str, Any]:
    return build_inference_service(NAME, NS, uri, "onnx", deployment_mode="Knative")  # type: ignore[arg-type]


def test_deploy_waits_through_transient_errors(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    double.faults.inject("GET", ISVC_PATH, *TRANSIENT, after=1)  # after deploy's check that it is new
    with caplog.at_level(logging.WARNING, logger="slipway.cluster.retry"):
        result = _rollout(api, clock).deploy(_body("s3://models/mnist/v1"))

    assert result.outcome == "created" and result.ok and result.status.ready
    assert double.faults.pending() == 0 and len(double.faults.served) == len(TRANSIENT)
    retries = [r.getMessage() for r in caplog.records if r.name == "slipway.cluster.retry"]
    assert any("HTTP 503" in m for m in retries) and any("HTTP 429" in m for m in retries)
    assert any(
        "MaxRetryError" in m or "ProtocolError" in m for m in retries
    )  # the resets, past urllib3's own
    assert all("get InferenceService models/mnist" in m for m in retries)


@pytest.mark.parametrize(("status", "error"), [(403, ClusterError), (404, NotFoundError)])
def test_deploy_wait_stops_at_once_on_a_permanent_error(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock, status: int, error: type[Exception]
) -> None:
    ro = _rollout(api, clock)
    ro.deploy(_body("s3://models/mnist/v1"), wait=False)
    double.faults.inject("GET", ISVC_PATH, status, status, status)

    with pytest.raises(error, match=f"HTTP {status}"):
        ro._wait(NAME, NS, generation=1, what="readiness", done=lambda st: st.ready)

    assert len(double.faults.served) == 1  # not retried
    assert clock.now < FAST.poll_interval_s  # no backoff slept


def test_a_wait_gives_up_at_its_deadline_when_errors_persist(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock
) -> None:
    settings = FAST.model_copy(update={"ready_timeout_s": 5})
    ro = Rollout(api, settings, sleep=clock.sleep, clock=clock)
    ro.deploy(_body("s3://models/mnist/v1"), wait=False)
    double.faults.inject("GET", ISVC_PATH, *([503] * 200))

    with pytest.raises(ClusterError, match="HTTP 503"):
        ro._wait(NAME, NS, generation=1, what="readiness", done=lambda st: st.ready)
    assert clock.now == pytest.approx(5)  # bounded by the wait's own deadline
    assert double.faults.pending() > 0


# --- TrainJob: a minimal API double (create + scripted GETs), with the same fault plan -----------------------


class TrainJobApi:
    """Serves one TrainJob: POST stores it, GETs report Created, then Running, then Complete."""

    def __init__(self) -> None:
        self.faults = FaultPlan()
        self.obj: dict[str, Any] | None = None
        self.gets = 0
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if api.faults.serve(self, method, self.path):
                    return
                code, payload = api.handle(method, body)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

        self._http = LoopbackServer(Handler)

    def handle(self, method: str, body: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if method == "POST":
                self.obj = body
                return 201, body
            if self.obj is None:
                return 404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": "no job"}
            self.gets += 1
            kind = ["Created", "Running", "Complete"][min(self.gets, 3) - 1]
            return 200, {**self.obj, "status": {"conditions": [{"type": kind, "status": "True"}]}}


@pytest.fixture
def trainjob_api() -> Iterator[TrainJobApi]:
    server = TrainJobApi()
    server._http.start()
    yield server
    server._http.stop()


def _job_client(server: TrainJobApi, clock: FakeClock) -> trainjob.TrainingJobClient:
    config = k8s.Configuration()
    config.host = server._http.url
    return trainjob.TrainingJobClient(
        k8s.CustomObjectsApi(k8s.ApiClient(config)), clock=clock, sleep=clock.sleep
    )


def test_trainjob_wait_survives_transient_errors(trainjob_api: TrainJobApi) -> None:
    clock = FakeClock()
    client = _job_client(trainjob_api, clock)
    trainjob_api.handle("POST", {"kind": "TrainJob", "metadata": {"name": "job", "namespace": "ml"}})
    trainjob_api.faults.inject("GET", r"/trainjobs/job$", *TRANSIENT)

    done = client.wait("trainjob", "ml", "job", timeout_s=600, poll_interval_s=5)

    assert done["status"]["conditions"][0]["type"] == "Complete"
    assert len(trainjob_api.faults.served) == len(TRANSIENT) and trainjob_api.gets == 3


def test_trainjob_wait_fails_fast_on_forbidden(trainjob_api: TrainJobApi) -> None:
    clock = FakeClock()
    client = _job_client(trainjob_api, clock)
    trainjob_api.handle("POST", {"kind": "TrainJob", "metadata": {"name": "job", "namespace": "ml"}})
    trainjob_api.faults.inject("GET", r"/trainjobs/job$", 403, 403)

    with pytest.raises(ClusterError, match=r"reading trainjob ml/job failed: HTTP 403.*RBAC"):
        client.wait("trainjob", "ml", "job", timeout_s=600, poll_interval_s=5)
    assert len(trainjob_api.faults.served) == 1 and clock.now == 0
