"""Distributed training in a cluster: a Kubeflow Trainer `TrainJob` or a Training Operator `PyTorchJob`.

The manifests are typed (pydantic, camelCase on the wire) and built from `train.distributed` in the config.
Either job runs `torchrun -m slipway.steps.cluster_train ...` in `GPU_IMAGE` on every node: torchrun reads
its node count, node rank and rendezvous address from the `PET_*` variables both operators inject. Rank 0
writes the model to `<artifact_uri_prefix>/<job name>/model.pt` (plus `result.json`), which is what the
client returns, so that the next pipeline step can read it.

With `cluster.checkpoints.pvc` set, the compiled GPU step carries the claim in its environment and the job's
pods mount it at the same path, so that `train.checkpoint_dir` names the same folder in them.

The client creates the job through the real `kubernetes` client (CustomObjectsApi), follows its status
conditions until it completes, fails (ClusterError with the job's reason and message) or times out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from slipway.cluster.kube import api_error, custom_objects_api
from slipway.cluster.retry import call_with_retries
from slipway.cluster.storage import read_bytes
from slipway.core.cluster_config import CHECKPOINT_MOUNT_PATH_ENV, CHECKPOINT_PVC_ENV, CheckpointsConfig
from slipway.core.config import DistributedConfig, SlipwayConfig
from slipway.core.errors import ClusterError
from slipway.core.images import GPU_IMAGE

log = logging.getLogger(__name__)

TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL = "kubeflow.org", "v1", "pytorchjobs"
MODEL_FILE = "model.pt"
RESULT_FILE = "result.json"
Role = Literal["teacher", "student"]
# Terminal condition types per engine: (succeeded, failed).
TERMINAL = {"trainjob": ("Complete", "Failed"), "pytorchjob": ("Succeeded", "Failed")}
CHECKPOINT_VOLUME = "checkpoints"
# The replicated job and container of a TrainJob's trainer in the torch runtimes (podTemplateOverrides target).
TRAINER_NODE = "node"


class K8sModel(BaseModel):
    """Kubernetes objects: camelCase keys on the wire, unknown keys rejected, None fields omitted."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(K8sModel):
    name: str = Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class SecretKeySelector(K8sModel):
    name: str
    key: str


class EnvVarSource(K8sModel):
    secret_key_ref: SecretKeySelector


class EnvVar(K8sModel):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class ResourceRequirements(K8sModel):
    limits: dict[str, str] | None = None
    requests: dict[str, str] | None = None


class PersistentVolumeClaimVolumeSource(K8sModel):
    claim_name: str


class Volume(K8sModel):
    name: str
    persistent_volume_claim: PersistentVolumeClaimVolumeSource


class VolumeMount(K8sModel):
    name: str
    mount_path: str


# --- Kubeflow Trainer v2: trainer.kubeflow.org/v1alpha1 TrainJob ---
class RuntimeRef(K8sModel):
    name: str
    api_group: str = TRAINJOB_GROUP
    kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"


class Trainer(K8sModel):
    image: str
    command: list[str]
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    num_nodes: int = Field(ge=1)
    resources_per_node: ResourceRequirements | None = None
    num_proc_per_node: int | None = Field(None, ge=1)


class TargetJob(K8sModel):
    name: str


class ContainerOverride(K8sModel):
    name: str
    volume_mounts: list[VolumeMount] | None = None


class PodTemplateSpecOverride(K8sModel):
    volumes: list[Volume] | None = None
    containers: list[ContainerOverride] | None = None


class PodTemplateOverride(K8sModel):
    """Kubeflow Trainer's way to add to the runtime's pods (volumes here) without another runtime."""

    target_jobs: list[TargetJob]
    spec: PodTemplateSpecOverride


class TrainJobSpec(K8sModel):
    runtime_ref: RuntimeRef
    trainer: Trainer
    active_deadline_seconds: int | None = Field(None, ge=1)
    pod_template_overrides: list[PodTemplateOverride] | None = None


class TrainJob(K8sModel):
    api_version: Literal["trainer.kubeflow.org/v1alpha1"] = "trainer.kubeflow.org/v1alpha1"
    kind: Literal["TrainJob"] = "TrainJob"
    metadata: ObjectMeta
    spec: TrainJobSpec


# --- Training Operator v1: kubeflow.org/v1 PyTorchJob ---
class Container(K8sModel):
    name: Literal["pytorch"] = "pytorch"  # the operator finds the training container by this name
    image: str
    command: list[str]
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    resources: ResourceRequirements | None = None
    volume_mounts: list[VolumeMount] | None = None


class PodSpec(K8sModel):
    containers: list[Container]
    volumes: list[Volume] | None = None


class PodTemplateSpec(K8sModel):
    spec: PodSpec


class ReplicaSpec(K8sModel):
    replicas: int = Field(ge=1)
    restart_policy: Literal["Always", "OnFailure", "Never", "ExitCode"] = "OnFailure"
    template: PodTemplateSpec


class ElasticPolicy(K8sModel):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    rdzv_backend: Literal["c10d"] = "c10d"
    max_restarts: int = Field(ge=0)


class RunPolicy(K8sModel):
    clean_pod_policy: Literal["None", "Running", "All"] = "None"
    backoff_limit: int | None = Field(None, ge=0)
    active_deadline_seconds: int | None = Field(None, ge=1)


class PyTorchJobSpec(K8sModel):
    run_policy: RunPolicy
    elastic_policy: ElasticPolicy | None = None
    nproc_per_node: str
    pytorch_replica_specs: dict[Literal["Master", "Worker"], ReplicaSpec]


class PyTorchJob(K8sModel):
    api_version: Literal["kubeflow.org/v1"] = "kubeflow.org/v1"
    kind: Literal["PyTorchJob"] = "PyTorchJob"
    metadata: ObjectMeta
    spec: PyTorchJobSpec


# --- what a job is asked to do ---
@dataclasses.dataclass(frozen=True)
class TrainingRequest:
    """One distributed training step: inputs and outputs as object-storage URIs."""

    config: SlipwayConfig
    role: Role
    dataset_uri: str
    teacher_uri: str | None = None
    checkpoints: CheckpointsConfig | None = None  # the claim the job's pods mount (None: none)

    @property
    def distributed(self) -> DistributedConfig:
        return (self.config.train if self.role == "teacher" else self.config.distill).distributed

    @property
    def job_name(self) -> str:
        """Deterministic (a retried step finds its job again) and a DNS-1035 label, as both CRDs require.

        Named by the inputs alone: the dataset URI is unique to the data step's execution that wrote it."""
        key = json.dumps([self.role, self.dataset_uri, self.teacher_uri, _config_arg(self.config)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        base = f"{self.config.name}-{self.role}"
        base = base if base[0].isalpha() else f"s-{base}"
        return f"{base[: 63 - len(digest) - 1].rstrip('-')}-{digest}"

    @property
    def output_prefix(self) -> str:
        return f"{self.distributed.artifact_uri_prefix.rstrip('/')}/{self.job_name}"

    @property
    def model_uri(self) -> str:
        return f"{self.output_prefix}/{MODEL_FILE}"

    @property
    def result_uri(self) -> str:
        return f"{self.output_prefix}/{RESULT_FILE}"


def _config_arg(cfg: SlipwayConfig) -> str:
    """The config as compact JSON, defaults left out (the worker validates it back to the same config)."""
    return json.dumps(
        cfg.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
    )


def worker_args(request: TrainingRequest) -> list[str]:
    """Arguments of `python -m slipway.steps.cluster_train` for this request."""
    args = [
        "--config-json",
        _config_arg(request.config),
        "--role",
        request.role,
        "--dataset-uri",
        request.dataset_uri,
        "--output-uri",
        request.output_prefix,
    ]
    if request.teacher_uri:
        args += ["--teacher-uri", request.teacher_uri]
    return args


def _torchrun(nproc: int) -> list[str]:
    # Node count, node rank and the rendezvous address come from PET_* variables set by the operator.
    return ["torchrun", f"--nproc-per-node={nproc}", "-m", "slipway.steps.cluster_train"]


def _env(dcfg: DistributedConfig) -> list[EnvVar] | None:
    env = [EnvVar(name=k, value=v) for k, v in sorted(dcfg.env.items())]
    for name, ref in sorted(dcfg.secret_env.items()):
        secret, key = ref.split(":")
        env.append(
            EnvVar(name=name, value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=secret, key=key)))
        )
    return env or None


def _resources(dcfg: DistributedConfig) -> ResourceRequirements | None:
    amounts: dict[str, str] = {}
    if dcfg.gpus_per_node:
        amounts["nvidia.com/gpu"] = str(dcfg.gpus_per_node)
    if dcfg.cpu_per_node:
        amounts["cpu"] = dcfg.cpu_per_node
    if dcfg.memory_per_node:
        amounts["memory"] = dcfg.memory_per_node
    return ResourceRequirements(limits=amounts, requests=dict(amounts)) if amounts else None


def checkpoints_from_env(environ: Mapping[str, str] | None = None) -> CheckpointsConfig | None:
    """The checkpoint claim the compiled pipeline gave this GPU step (`cluster.checkpoints`), if any."""
    env = os.environ if environ is None else environ
    pvc = env.get(CHECKPOINT_PVC_ENV)
    if not pvc:
        return None
    mount_path = env.get(CHECKPOINT_MOUNT_PATH_ENV) or CheckpointsConfig().mount_path
    return CheckpointsConfig(pvc=pvc, mount_path=mount_path)


def _checkpoint_volume(request: TrainingRequest) -> tuple[list[Volume], list[VolumeMount]] | None:
    """The claim as a pod volume and its mount, at the path the step's checkpoint_dir lies under."""
    ckpt = request.checkpoints
    if ckpt is None or ckpt.pvc is None:
        return None
    claim = PersistentVolumeClaimVolumeSource(claim_name=ckpt.pvc)
    volume = Volume(name=CHECKPOINT_VOLUME, persistent_volume_claim=claim)
    return [volume], [VolumeMount(name=CHECKPOINT_VOLUME, mount_path=ckpt.mount_path)]


def _labels(request: TrainingRequest) -> dict[str, str]:
    return {
        "app.kubernetes.io/part-of": "slipway",
        "slipway.dev/pipeline": request.config.name,
        "slipway.dev/role": request.role,
    }


def build_trainjob(request: TrainingRequest) -> TrainJob:
    """A TrainJob on the configured ClusterTrainingRuntime: numNodes pods, one process per GPU."""
    dcfg = request.distributed
    nproc = max(dcfg.gpus_per_node, 1)
    overrides = None
    if (checkpoints := _checkpoint_volume(request)) is not None:
        volumes, mounts = checkpoints
        spec = PodTemplateSpecOverride(
            volumes=volumes, containers=[ContainerOverride(name=TRAINER_NODE, volume_mounts=mounts)]
        )
        overrides = [PodTemplateOverride(target_jobs=[TargetJob(name=TRAINER_NODE)], spec=spec)]
    return TrainJob(
        metadata=ObjectMeta(name=request.job_name, namespace=dcfg.namespace, labels=_labels(request)),
        spec=TrainJobSpec(
            runtime_ref=RuntimeRef(name=dcfg.runtime),
            trainer=Trainer(
                image=GPU_IMAGE,
                command=_torchrun(nproc),
                args=worker_args(request),
                env=_env(dcfg),
                num_nodes=dcfg.num_nodes,
                resources_per_node=_resources(dcfg),
                num_proc_per_node=nproc,
            ),
            active_deadline_seconds=int(dcfg.timeout_s),
            pod_template_overrides=overrides,
        ),
    )


def build_pytorchjob(request: TrainingRequest) -> PyTorchJob:
    """A PyTorchJob: Master + (num_nodes - 1) Workers, or num_nodes elastic Workers with elasticPolicy."""
    dcfg = request.distributed
    nproc = max(dcfg.gpus_per_node, 1)
    volumes, mounts = _checkpoint_volume(request) or (None, None)
    container = Container(
        image=GPU_IMAGE,
        command=_torchrun(nproc),
        args=worker_args(request),
        env=_env(dcfg),
        resources=_resources(dcfg),
        volume_mounts=mounts,
    )

    # Elastic jobs restart failed pods (up to maxRestarts); static ones fail fast, with the pod's reason.
    restart: Literal["OnFailure", "Never"] = "OnFailure" if dcfg.elastic_min_nodes is not None else "Never"

    def replicas(n: int) -> ReplicaSpec:
        template = PodTemplateSpec(spec=PodSpec(containers=[container], volumes=volumes))
        return ReplicaSpec(replicas=n, restart_policy=restart, template=template)

    elastic = None
    specs: dict[Literal["Master", "Worker"], ReplicaSpec]
    if dcfg.elastic_min_nodes is not None:
        # Elastic jobs rendezvous through c10d among Workers only (the Training Operator's elastic examples).
        elastic = ElasticPolicy(
            min_replicas=dcfg.elastic_min_nodes,
            max_replicas=dcfg.num_nodes,
            max_restarts=dcfg.elastic_max_restarts,
        )
        specs = {"Worker": replicas(dcfg.num_nodes)}
    else:
        specs = {"Master": replicas(1)}
        if dcfg.num_nodes > 1:
            specs["Worker"] = replicas(dcfg.num_nodes - 1)
    return PyTorchJob(
        metadata=ObjectMeta(name=request.job_name, namespace=dcfg.namespace, labels=_labels(request)),
        spec=PyTorchJobSpec(
            run_policy=RunPolicy(
                backoff_limit=0 if elastic is None else None, active_deadline_seconds=int(dcfg.timeout_s)
            ),
            elastic_policy=elastic,
            nproc_per_node=str(nproc),
            pytorch_replica_specs=specs,
        ),
    )


def build_job(request: TrainingRequest) -> TrainJob | PyTorchJob:
    """The job the config's `engine` asks for."""
    return build_trainjob(request) if request.distributed.engine == "trainjob" else build_pytorchjob(request)


# --- the client ---
@dataclasses.dataclass(frozen=True)
class ClusterTrainResult:
    """Where the job left its outputs, and what rank 0 reported."""

    job_name: str
    namespace: str
    engine: str
    model_uri: str
    result: dict[str, Any]


def _api_target(engine: str) -> tuple[str, str, str]:
    if engine == "trainjob":
        return TRAINJOB_GROUP, TRAINJOB_VERSION, TRAINJOB_PLURAL
    return PYTORCHJOB_GROUP, PYTORCHJOB_VERSION, PYTORCHJOB_PLURAL


class TrainingJobClient:
    """Create a TrainJob or PyTorchJob and follow it to the end; the API is injectable for tests."""

    def __init__(self, api: Any | None = None, clock: Any = time.monotonic, sleep: Any = time.sleep) -> None:
        self._api = api
        self._clock = clock
        self._sleep = sleep

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = custom_objects_api()
        return self._api

    def create(self, job: TrainJob | PyTorchJob) -> dict[str, Any]:
        """Create the job; an existing job of the same (deterministic) name is followed instead."""
        from kubernetes.client.exceptions import ApiException

        engine = "trainjob" if isinstance(job, TrainJob) else "pytorchjob"
        group, version, plural = _api_target(engine)
        ns, name = job.metadata.namespace, job.metadata.name
        try:
            created: dict[str, Any] = self.api.create_namespaced_custom_object(
                group, version, ns, plural, job.to_dict()
            )
            log.info("created %s %s/%s", job.kind, ns, name)
            return created
        except ApiException as err:
            if err.status == 409:
                log.info("%s %s/%s already exists (a retried step): following it", job.kind, ns, name)
                return self.get(engine, ns, name)
            raise api_error(f"creating {job.kind} {ns}/{name}", err) from None
        except Exception as err:
            raise api_error(f"creating {job.kind} {ns}/{name}", err) from None

    def get(
        self, engine: str, namespace: str, name: str, *, retry_until: float | None = None
    ) -> dict[str, Any]:
        """Read the job; with `retry_until` (a deadline on this client's clock), through transient errors."""
        from kubernetes.client.exceptions import ApiException

        group, version, plural = _api_target(engine)

        def read() -> dict[str, Any]:
            obj: dict[str, Any] = self.api.get_namespaced_custom_object(
                group, version, namespace, plural, name
            )
            return obj

        try:
            return call_with_retries(
                read,
                what=f"reading {engine} {namespace}/{name}",
                deadline=retry_until,
                clock=self._clock,
                sleep=self._sleep,
            )
        except ApiException as err:
            raise api_error(f"reading {engine} {namespace}/{name}", err) from None
        except Exception as err:
            raise api_error(f"reading {engine} {namespace}/{name}", err) from None

    def wait(
        self, engine: str, namespace: str, name: str, timeout_s: float, poll_interval_s: float
    ) -> dict[str, Any]:
        """Follow the job's conditions (each new one is logged) until success; failure or timeout raise."""
        succeeded, failed = TERMINAL[engine]
        deadline = self._clock() + timeout_s
        seen: set[tuple[str, str, str | None]] = set()
        while True:
            obj = self.get(engine, namespace, name, retry_until=deadline)
            conditions = (obj.get("status") or {}).get("conditions") or []
            for cond in conditions:
                key = (cond.get("type", ""), cond.get("status", ""), cond.get("reason"))
                if key not in seen:
                    seen.add(key)
                    log.info(
                        "%s %s/%s: %s=%s %s %s",
                        engine,
                        namespace,
                        name,
                        key[0],
                        key[1],
                        cond.get("reason") or "",
                        cond.get("message") or "",
                    )
            active = {c.get("type"): c for c in conditions if c.get("status") == "True"}
            if failed in active:
                cond = active[failed]
                raise ClusterError(
                    f"{engine} {namespace}/{name} failed: {cond.get('reason') or 'no reason'}: "
                    f"{cond.get('message') or 'no message'} (see `kubectl -n {namespace} logs` of its pods)"
                )
            if succeeded in active:
                return obj
            if self._clock() >= deadline:
                state = ", ".join(sorted(str(t) for t in active)) or "no condition yet"
                raise ClusterError(
                    f"{engine} {namespace}/{name} did not finish within {timeout_s:.0f}s ({state}); "
                    "raise train.distributed.timeout_s or check the cluster's capacity"
                )
            self._sleep(poll_interval_s)

    def run(self, request: TrainingRequest) -> ClusterTrainResult:
        """Create the job for `request`, wait for it, and return where it wrote the model."""
        if request.checkpoints is None:
            request = dataclasses.replace(request, checkpoints=checkpoints_from_env())
        dcfg = request.distributed
        job = build_job(request)
        self.create(job)
        self.wait(dcfg.engine, dcfg.namespace, request.job_name, dcfg.timeout_s, dcfg.poll_interval_s)
        try:
            result = json.loads(read_bytes(request.result_uri))
        except Exception as err:
            raise ClusterError(
                f"{dcfg.engine} {request.job_name} completed but its result {request.result_uri} is unreadable: {err}"
            ) from None
        return ClusterTrainResult(request.job_name, dcfg.namespace, dcfg.engine, request.model_uri, result)


def render(job: TrainJob | PyTorchJob) -> str:
    return yaml.safe_dump(job.to_dict(), sort_keys=False, width=1000)
