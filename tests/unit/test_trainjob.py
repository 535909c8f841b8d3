"""Cluster training: typed TrainJob / PyTorchJob manifests (golden files) and the job client.

The client is exercised with the REAL `kubernetes` client (CustomObjectsApi over HTTP) against a LOCAL TEST
DOUBLE of the Kubernetes API server defined below: a small HTTP server on 127.0.0.1 that implements create
and get of the two custom resources and simulates a controller's status conditions (including a failure
with a reason). It is not a cluster and runs no pods: no Kubeflow Trainer or Training Operator was
available here. The job's own entry point (`torchrun -m slipway.steps.cluster_train ...`) is run for
real, as 2 local gloo processes, from the very command the manifest carries.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import goldens
import pytest
import yaml
from loopback import LoopbackServer

from slipway.cluster import trainjob
from slipway.core.cluster_config import CHECKPOINT_MOUNT_PATH_ENV, CHECKPOINT_PVC_ENV, CheckpointsConfig
from slipway.core.config import SlipwayConfig, load_config, validate_config
from slipway.core.errors import ClusterError
from slipway.core.images import GPU_IMAGE
from slipway.steps import cluster_train

GOLDEN = Path(__file__).resolve().parent / "golden" / "trainjob"
PATH = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
KINDS = {"trainjobs": "TrainJob", "pytorchjobs": "PyTorchJob"}
Condition = dict[str, str]


def _cond(type_: str, reason: str = "", message: str = "") -> Condition:
    return {"type": type_, "status": "True", "reason": reason, "message": message}


class FakeApiServer:
    """Test double of the API server + training controller: create/get of trainjobs and pytorchjobs.

    `scripts[name]` is the list of condition sets the controller reports on successive GETs (the last one
    sticks); `on_finish(obj)` runs when a script reaches a Complete/Succeeded condition (the test writes the
    job's outputs there, as rank 0 would). `forbidden` answers 403 to every create, like missing RBAC.
    """

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.scripts: dict[str, list[list[Condition]]] = {}
        self.default_script: list[list[Condition]] = []
        self.on_finish: Callable[[dict[str, Any]], None] | None = None
        self.forbidden = False
        self.requests: list[tuple[str, str]] = []
        self._gets: dict[tuple[str, str, str], int] = {}
        self._lock = threading.Lock()
        self._http = LoopbackServer(self._handler())

    @property
    def url(self) -> str:
        return self._http.url

    def __enter__(self) -> FakeApiServer:
        self._http.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._http.stop()

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }

    def _handle(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        match = PATH.match(path.split("?")[0])
        if not match or match["plural"] not in KINDS:
            return 404, self._status(
                404, "NotFound", f"the server could not find the requested resource {path}"
            )
        key = (match["plural"], match["ns"], match["name"] or "")
        with self._lock:
            if method == "POST":
                assert body is not None
                if self.forbidden:
                    return 403, self._status(
                        403,
                        "Forbidden",
                        f'{match["plural"]}.{match["group"]} is forbidden: User "system:serviceaccount:kubeflow:pipeline-runner" cannot create resource',
                    )
                expected = (f"{match['group']}/{match['version']}", KINDS[match["plural"]])
                if (body.get("apiVersion"), body.get("kind")) != expected:
                    return 400, self._status(400, "BadRequest", f"body is not a {expected}")
                name = body["metadata"]["name"]
                key = (match["plural"], match["ns"], name)
                if key in self.objects:
                    return 409, self._status(
                        409, "AlreadyExists", f'{match["plural"]} "{name}" already exists'
                    )
                stored = json.loads(json.dumps(body))
                stored["metadata"] |= {"uid": f"uid-{len(self.objects)}", "resourceVersion": "1"}
                self.objects[key] = stored
                return 201, stored
            if method == "GET" and key in self.objects:
                obj = json.loads(json.dumps(self.objects[key]))
                script = self.scripts.get(key[2], self.default_script)
                n = self._gets[key] = self._gets.get(key, 0) + 1
                conditions = script[min(n, len(script)) - 1] if script else []
                if conditions:
                    obj["status"] = {"conditions": conditions}
                if any(c["type"] in ("Complete", "Succeeded") for c in conditions) and self.on_finish:
                    self.on_finish(obj)
                return 200, obj
            return 404, self._status(404, "NotFound", f'{key[0]} "{key[2]}" not found')

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, payload = server._handle(method, self.path, body)
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

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def _client(server: FakeApiServer) -> trainjob.TrainingJobClient:
    """The real kubernetes CustomObjectsApi, pointed at the double; sleeps are skipped, time is simulated."""
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = server.url
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return trainjob.TrainingJobClient(api, clock=lambda: now[0], sleep=sleep)


def _config(tmp_path: Path, *overrides: str) -> SlipwayConfig:
    return load_config(
        "quickstart",
        [
            f"train.distributed.artifact_uri_prefix={tmp_path / 'bucket'}",
            "train.distributed.namespace=ml-team",
            "train.distributed.poll_interval_s=5",
            "train.distributed.timeout_s=60",
            *overrides,
        ],
    )


def _write_outputs(obj: dict[str, Any]) -> None:
    """What rank 0 of the job does: model and result under --output-uri (read from the manifest's args)."""
    spec = obj["spec"]
    container = (
        spec["trainer"]
        if obj["kind"] == "TrainJob"
        else next(iter(spec["pytorchReplicaSpecs"].values()))["template"]["spec"]["containers"][0]
    )
    args = container["args"]
    out = Path(args[args.index("--output-uri") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pt").write_bytes(b"weights")
    (out / "result.json").write_text(json.dumps({"best_val_accuracy": 0.97, "epochs_run": 3}))


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_job_completes_and_the_model_is_fetched(
    tmp_path: Path, api_server: FakeApiServer, engine: str, caplog
) -> None:
    """Create -> conditions stream -> success: the model lands at the URI from config and is copied out."""
    done = (
        [_cond("Complete")]
        if engine == "trainjob"
        else [_cond("Created"), _cond("Running"), _cond("Succeeded", "PyTorchJobSucceeded")]
    )
    running = [] if engine == "trainjob" else [_cond("Created"), _cond("Running", "PyTorchJobRunning")]
    api_server.default_script = [[], running, running, done]
    api_server.on_finish = _write_outputs
    cfg = _config(tmp_path, f"train.distributed.engine={engine}")
    caplog.set_level("INFO", logger="slipway.cluster.trainjob")

    out = cluster_train.train_in_cluster(
        cfg, "teacher", "minio://mlpipeline/d", tmp_path / "model", client=_client(api_server)
    )

    request = trainjob.TrainingRequest(cfg, "teacher", "minio://mlpipeline/d")
    assert out.model_uri == f"{tmp_path / 'bucket'}/{request.job_name}/model.pt"
    assert (tmp_path / "model").read_bytes() == b"weights" and out.result["best_val_accuracy"] == 0.97
    plural = "trainjobs" if engine == "trainjob" else "pytorchjobs"
    stored = api_server.objects[(plural, "ml-team", request.job_name)]
    assert {k: v for k, v in stored.items() if k != "metadata"} == {
        k: v for k, v in trainjob.build_job(request).to_dict().items() if k != "metadata"
    }
    assert [m for m, _ in api_server.requests].count("GET") == 4
    assert any("Complete=True" in r.message or "Succeeded=True" in r.message for r in caplog.records)


def test_failed_job_raises_with_its_reason_and_message(tmp_path: Path, api_server: FakeApiServer) -> None:
    message = "PyTorchJob ml-team/x is failed because 1 Master replica(s) failed."
    api_server.default_script = [
        [_cond("Created")],
        [_cond("Created"), _cond("Failed", "PyTorchJobFailed", message)],
    ]
    cfg = _config(tmp_path, "train.distributed.engine=pytorchjob")
    with pytest.raises(
        ClusterError, match=r"failed: PyTorchJobFailed: PyTorchJob ml-team/x is failed because 1 Master"
    ):
        _client(api_server).run(trainjob.TrainingRequest(cfg, "teacher", "s3://b/d"))


def test_trainjob_deadline_failure_is_reported(tmp_path: Path, api_server: FakeApiServer) -> None:
    api_server.default_script = [
        [_cond("Failed", "DeadlineExceeded", "TrainJob exceeded its activeDeadlineSeconds")]
    ]
    with pytest.raises(ClusterError, match="DeadlineExceeded: TrainJob exceeded"):
        _client(api_server).run(trainjob.TrainingRequest(_config(tmp_path), "teacher", "s3://b/d"))


def test_a_job_that_never_finishes_times_out(tmp_path: Path, api_server: FakeApiServer) -> None:
    api_server.default_script = [[_cond("Created"), _cond("Running")]]
    cfg = _config(tmp_path, "train.distributed.engine=pytorchjob", "train.distributed.timeout_s=30")
    with pytest.raises(ClusterError, match=r"did not finish within 30s \(Created, Running\)"):
        _client(api_server).run(trainjob.TrainingRequest(cfg, "teacher", "s3://b/d"))
    assert [m for m, _ in api_server.requests].count("GET") == 7  # t = 0, 5, ..., 30


def test_a_retried_step_follows_the_existing_job(tmp_path: Path, api_server: FakeApiServer) -> None:
    api_server.default_script = [[_cond("Complete")]]
    api_server.on_finish = _write_outputs
    request = trainjob.TrainingRequest(_config(tmp_path), "teacher", "s3://b/d")
    client = _client(api_server)
    first, second = client.run(request), client.run(request)
    assert first.job_name == second.job_name and len(api_server.objects) == 1
    assert [m for m, _ in api_server.requests].count("POST") == 2


def test_api_errors_become_cluster_errors(tmp_path: Path, api_server: FakeApiServer) -> None:
    api_server.forbidden = True
    with pytest.raises(ClusterError, match=r"HTTP 403 Forbidden.*cannot create resource"):
        _client(api_server).run(trainjob.TrainingRequest(_config(tmp_path), "teacher", "s3://b/d"))


def test_unreachable_api_server_is_a_cluster_error(tmp_path: Path) -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = False
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    with pytest.raises(ClusterError, match="creating TrainJob"):
        trainjob.TrainingJobClient(api).create(
            trainjob.build_trainjob(trainjob.TrainingRequest(_config(tmp_path), "teacher", "s3://b/d"))
        )


def _normalise(text: str) -> Any:
    """Parsed YAML with image tags dropped (volatile: they follow the package version)."""
    return yaml.safe_load(re.sub(r"(image: [^:\s]+):\S+", r"\1:TAG", text))


def test_golden_manifests(tmp_path: Path) -> None:
    """Regenerate with `python tests/goldens.py`."""
    written = goldens.write_goldens(tmp_path)
    assert {p.name for p in written} == {"trainjob.yaml", "pytorchjob.yaml", "pytorchjob-elastic.yaml"}
    for path in written:
        golden = GOLDEN / path.name
        assert golden.is_file(), f"missing golden {golden}: run `python tests/goldens.py`"
        assert _normalise(path.read_text()) == _normalise(golden.read_text()), (
            f"{path.name} differs from its golden"
        )


def test_manifest_shapes(tmp_path: Path) -> None:
    requests = goldens.golden_requests()
    tj = trainjob.build_job(requests["trainjob"]).to_dict()
    trainer = tj["spec"]["trainer"]
    assert (
        tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
        and tj["spec"]["runtimeRef"]["name"] == "torch-distributed"
    )
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 4 and trainer["image"] == GPU_IMAGE
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "4"
    assert trainer["command"][:2] == ["torchrun", "--nproc-per-node=4"]

    pj = trainjob.build_job(requests["pytorchjob"]).to_dict()["spec"]
    assert {k: v["replicas"] for k, v in pj["pytorchReplicaSpecs"].items()} == {"Master": 1, "Worker": 1}
    assert "elasticPolicy" not in pj and pj["nprocPerNode"] == "4"
    elastic = trainjob.build_job(requests["pytorchjob-elastic"]).to_dict()["spec"]
    assert set(elastic["pytorchReplicaSpecs"]) == {"Worker"}
    assert elastic["elasticPolicy"] == {
        "minReplicas": 1,
        "maxReplicas": 2,
        "rdzvBackend": "c10d",
        "maxRestarts": 3,
    }

    one_node = trainjob.TrainingRequest(
        _config(tmp_path, "train.distributed.engine=pytorchjob"), "teacher", "r", "s3://b/d"
    )
    assert set(trainjob.build_job(one_node).to_dict()["spec"]["pytorchReplicaSpecs"]) == {"Master"}


def test_worker_args_carry_the_config_back_unchanged(tmp_path: Path) -> None:
    request = goldens.golden_requests()["trainjob"]
    args = trainjob.worker_args(request)
    assert validate_config(json.loads(args[args.index("--config-json") + 1])) == request.config
    assert args[args.index("--output-uri") + 1] == request.output_prefix
    assert len(request.job_name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", request.job_name)
    other = trainjob.TrainingRequest(request.config, "student", request.dataset_uri, "s3://t")
    assert other.job_name != request.job_name and "--teacher-uri" in trainjob.worker_args(other)


def test_the_manifest_command_trains_with_two_processes(tmp_path: Path, fast_config: SlipwayConfig) -> None:
    """Run the job's own command (torchrun replaced by the venv's, on loopback) with local-path URIs."""
    from slipway.core import data as data_lib
    from slipway.core.models import load_model

    dataset = tmp_path / "dataset.npz"
    data_lib.save_splits(data_lib.load_dataset(fast_config.data, fast_config.seed), dataset)
    cfg = fast_config.model_copy(deep=True)
    cfg.train.epochs = 2
    cfg.train.distributed.artifact_uri_prefix = str(tmp_path / "bucket")
    cfg.train.distributed.gpus_per_node = 2  # two processes per node
    cfg.train.distributed.engine = "pytorchjob"
    request = trainjob.TrainingRequest(cfg, "teacher", str(dataset))
    container = (
        trainjob.build_pytorchjob(request).spec.pytorch_replica_specs["Master"].template.spec.containers[0]
    )
    assert container.command[0] == "torchrun"
    local_torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--local-addr",
        "127.0.0.1",
    ]
    done = subprocess.run(
        [*local_torchrun, *container.command[1:], *(container.args or [])],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(Path(request.result_uri).read_text())
    assert result["epochs_run"] == 2 and result["best_val_accuracy"] > 0.3
    model, _ = load_model(request.model_uri)
    assert model(__import__("torch").zeros(1, 1, 8, 8)).shape == (1, 10)


CLAIM = CheckpointsConfig(pvc="ckpt", mount_path="/checkpoints")
CLAIM_VOLUME = {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "ckpt"}}
CLAIM_MOUNT = {"name": "checkpoints", "mountPath": "/checkpoints"}


def _valid_pod(spec: dict[str, Any]) -> None:
    """The pod spec against the Kubernetes OpenAPI schema (strict: unknown fields fail)."""
    import kubernetes_validate

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
    kubernetes_validate.validate(pod, "1.35.0", strict=True)


@pytest.mark.parametrize("name", ["pytorchjob", "pytorchjob-elastic"])
def test_pytorchjob_pods_mount_the_checkpoint_claim(name: str) -> None:
    """Every replica (Master, Worker) mounts the claim where train.checkpoint_dir points."""
    request = dataclasses.replace(goldens.golden_requests()[name], checkpoints=CLAIM)
    replicas = trainjob.build_job(request).to_dict()["spec"]["pytorchReplicaSpecs"]
    for replica in replicas.values():
        pod = replica["template"]["spec"]
        assert pod["volumes"] == [CLAIM_VOLUME]
        assert pod["containers"][0]["volumeMounts"] == [CLAIM_MOUNT]
        _valid_pod(pod)


def test_trainjob_mounts_the_checkpoint_claim_on_its_trainer_nodes() -> None:
    """Kubeflow Trainer adds volumes through podTemplateOverrides on the runtime's `node` job/container."""
    request = dataclasses.replace(goldens.golden_requests()["trainjob"], checkpoints=CLAIM)
    overrides = trainjob.build_job(request).to_dict()["spec"]["podTemplateOverrides"]
    assert overrides == [
        {
            "targetJobs": [{"name": "node"}],
            "spec": {
                "volumes": [CLAIM_VOLUME],
                "containers": [{"name": "node", "volumeMounts": [CLAIM_MOUNT]}],
            },
        }
    ]
    spec = overrides[0]["spec"]
    _valid_pod(
        {"volumes": spec["volumes"], "containers": [{"name": "node", "image": "i", **spec["containers"][0]}]}
    )


def test_no_claim_no_volume() -> None:
    for name, request in goldens.golden_requests().items():
        text = trainjob.render(trainjob.build_job(request))
        assert "volume" not in text.lower() and "podTemplateOverrides" not in text, name


def test_the_step_passes_its_claim_to_the_job(
    tmp_path: Path, api_server: FakeApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compiled GPU step's environment names the claim; the job it creates mounts it."""
    monkeypatch.setenv(CHECKPOINT_PVC_ENV, "ckpt")
    monkeypatch.setenv(CHECKPOINT_MOUNT_PATH_ENV, "/checkpoints")
    api_server.default_script = [[_cond("Succeeded")]]
    api_server.on_finish = _write_outputs
    cfg = _config(tmp_path, "train.distributed.engine=pytorchjob")
    request = trainjob.TrainingRequest(cfg, "teacher", "s3://b/d")
    _client(api_server).run(request)
    stored = api_server.objects[("pytorchjobs", "ml-team", request.job_name)]
    pod = stored["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert pod["volumes"] == [CLAIM_VOLUME] and pod["containers"][0]["volumeMounts"] == [CLAIM_MOUNT]
    assert trainjob.checkpoints_from_env({}) is None
