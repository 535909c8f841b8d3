"""The `cluster` config section: GPUs, secrets, resources, caching, retries per kind of step, checkpoint storage.

Secrets are named (a Kubernetes secret and its keys), never valued: nothing is read from the environment at
compile time. `slipway.pipelines.platform` applies these settings to pipeline tasks.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from slipway.core.schema import StrictModel

StepKind = Literal["cpu", "gpu", "side_effects"]
STEP_KINDS: tuple[StepKind, ...] = ("cpu", "gpu", "side_effects")
# Pod label naming each step's kind: `kubectl get pods -l slipway.dev/step-kind=gpu`, cost reports, and tests.
STEP_KIND_LABEL = "slipway.dev/step-kind"

# The same grammar kfp's PipelineTask.set_cpu_limit / set_memory_limit accept, checked when the config is built.
CPU_QUANTITY = r"^([0-9]*[.])?[0-9]+m?$"
MEMORY_QUANTITY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"
SECRET_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"  # DNS-1123 subdomain
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PVC_NAME = re.compile(SECRET_NAME)  # the same DNS-1123 subdomain grammar
# Folders a checkpoint volume must not hide: the system's, and those the KFP launcher keeps artifacts in.
SYSTEM_DIRS = ("/bin", "/dev", "/etc", "/lib", "/proc", "/sys", "/tmp", "/usr")
KFP_DIRS = ("/gcs", "/kfp-launcher", "/minio", "/s3")
# How a GPU step tells the TrainJob/PyTorchJob it starts which claim to mount, and where (set at compile time).
CHECKPOINT_PVC_ENV = "SLIPWAY_CHECKPOINT_PVC"
CHECKPOINT_MOUNT_PATH_ENV = "SLIPWAY_CHECKPOINT_MOUNT_PATH"
_MEMORY_UNITS = {
    "": 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def _over_defaults(model: type[BaseModel], data: Any, fields: tuple[str, ...]) -> Any:
    """Merge partial dicts for `fields` over those fields' defaults, so `--set a.b.c=x` keeps the rest of a.b."""
    if not isinstance(data, dict):
        return data
    merged = dict(data)
    for name in fields:
        value = merged.get(name)
        if isinstance(value, dict):
            default = model.model_fields[name].get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                merged[name] = {**default.model_dump(exclude_unset=False), **value}
    return merged


def cpu_cores(quantity: str) -> float:
    """'500m' -> 0.5, '2' -> 2.0."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_bytes(quantity: str) -> int:
    """'512Mi' -> 536870912, '2G' -> 2000000000."""
    match = re.fullmatch(MEMORY_QUANTITY, quantity)
    if match is None:
        raise ValueError(f"invalid memory quantity {quantity!r}")
    unit = match.group(1) or ""
    return int(quantity[: len(quantity) - len(unit)]) * _MEMORY_UNITS[unit]


class SecretEnvConfig(StrictModel):
    """A Kubernetes Secret exposed to steps as environment variables: names and keys only, never values."""

    name: str = Field(pattern=SECRET_NAME, description="Secret name in the pipeline run's namespace")
    env: dict[str, str] = Field(description="environment variable -> key inside the Secret")
    optional: bool = Field(default=False, description="True: steps start even when the Secret is missing")

    @field_validator("env")
    @classmethod
    def _names(cls, env: dict[str, str]) -> dict[str, str]:
        if not env:
            raise ValueError("name at least one ENV_VAR: secret-key pair")
        bad_env = [k for k in env if not ENV_NAME.match(k)]
        bad_keys = [v for v in env.values() if not SECRET_KEY.match(v)]
        if bad_env:
            raise ValueError(f"invalid environment variable names {bad_env}")
        if bad_keys:
            raise ValueError(f"invalid Secret keys {bad_keys} (letters, digits, '-', '_', '.')")
        return env


class TolerationConfig(StrictModel):
    """One pod toleration, as in the Kubernetes PodSpec."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _operator(self) -> TolerationConfig:
        if self.operator == "Exists" and self.value:
            raise ValueError("operator 'Exists' takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("an empty key needs operator 'Exists'")
        return self


class GpuConfig(StrictModel):
    """Where GPU-kind steps run: accelerator, count, node placement and the image with CUDA."""

    count: int = Field(
        default=1, ge=0, le=16, description="GPUs per GPU step (0: GPU steps run on CPU nodes)"
    )
    accelerator: str = Field(default="nvidia.com/gpu", min_length=1, description="extended resource name")
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="node labels GPU steps require (GPU Operator feature discovery sets this one)",
    )
    tolerations: list[TolerationConfig] = Field(
        default_factory=lambda: [
            TolerationConfig(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
        ],
        description="taints GPU nodes carry that GPU steps tolerate",
    )
    image: str | None = Field(
        default=None, description="image for GPU steps (None: slipway.core.images.GPU_IMAGE)"
    )


class StepSettings(StrictModel):
    """Resources, caching and retries for one kind of step."""

    cpu_request: str | None = Field(default=None, pattern=CPU_QUANTITY)
    cpu_limit: str | None = Field(default=None, pattern=CPU_QUANTITY)
    memory_request: str | None = Field(default=None, pattern=MEMORY_QUANTITY)
    memory_limit: str | None = Field(default=None, pattern=MEMORY_QUANTITY)
    caching: bool = Field(default=True, description="reuse outputs of an earlier run with identical inputs")
    retries: int = Field(
        default=0, ge=0, le=10, description="retries after a failure (pod eviction, preemption)"
    )
    backoff_s: int = Field(default=30, ge=0, description="wait before the first retry")
    backoff_factor: float = Field(default=2.0, ge=1)
    backoff_max_s: int = Field(default=3600, ge=1, description="stop retrying after this long")

    @field_validator("cpu_request", "cpu_limit", "memory_request", "memory_limit", mode="before")
    @classmethod
    def _number_as_quantity(cls, value: Any) -> Any:
        """`--set ...cpu_limit=4` parses as YAML int 4: Kubernetes reads it as the quantity '4'."""
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _request_within_limit(self) -> StepSettings:
        if self.cpu_request and self.cpu_limit and cpu_cores(self.cpu_request) > cpu_cores(self.cpu_limit):
            raise ValueError(f"cpu_request {self.cpu_request} exceeds cpu_limit {self.cpu_limit}")
        if (
            self.memory_request
            and self.memory_limit
            and memory_bytes(self.memory_request) > memory_bytes(self.memory_limit)
        ):
            raise ValueError(f"memory_request {self.memory_request} exceeds memory_limit {self.memory_limit}")
        return self


class StepKindsConfig(StrictModel):
    """Per kind of step: cpu (data, export, evaluate), gpu (training), registry (gate, register, promote...)."""

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, data: Any) -> Any:
        return _over_defaults(cls, data, STEP_KINDS)

    cpu: StepSettings = Field(
        default_factory=lambda: StepSettings(
            cpu_request="1", cpu_limit="2", memory_request="2Gi", memory_limit="4Gi", caching=True, retries=1
        ),
        description="deterministic work: cached; one retry for an evicted pod",
    )
    gpu: StepSettings = Field(
        default_factory=lambda: StepSettings(
            cpu_request="4",
            cpu_limit="8",
            memory_request="16Gi",
            memory_limit="32Gi",
            caching=True,
            retries=2,
            backoff_s=60,
        ),
        description="training: cached; retried on preemption (checkpoints resume it)",
    )
    side_effects: StepSettings = Field(
        default_factory=lambda: StepSettings(
            cpu_request="250m",
            cpu_limit="1",
            memory_request="512Mi",
            memory_limit="1Gi",
            caching=False,
            retries=0,
        ),
        description="steps with side effects (MLflow registry, the cluster): never cached, never retried",
    )

    @field_validator("side_effects")
    @classmethod
    def _registry_side_effects(cls, value: StepSettings) -> StepSettings:
        if value.caching:
            raise ValueError(
                "side_effects steps must not be cached: a cache hit would skip registering/promoting the new model"
            )
        if value.retries:
            raise ValueError(
                "side_effects steps must not be retried: a retry could register or promote twice"
            )
        return value


class CheckpointsConfig(StrictModel):
    """Durable checkpoint storage: a retried GPU step runs in a new pod, which resumes only from a folder that
    outlived the pod before it."""

    pvc: str | None = Field(
        default=None,
        description="PersistentVolumeClaim in the runs' namespace that GPU steps mount (None: checkpoints stay in "
        "the pod and a retry starts over)",
    )
    mount_path: str = Field(
        default="/checkpoints",
        description="where GPU steps and their TrainJob/PyTorchJob pods mount the claim",
    )

    @field_validator("pvc")
    @classmethod
    def _claim_name(cls, value: str | None) -> str | None:
        if value is not None and not PVC_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a PersistentVolumeClaim name (DNS-1123: lowercase letters, digits, '-' and "
                "'.', starting and ending with a letter or digit, at most 253 characters)"
            )
        return value

    @field_validator("mount_path")
    @classmethod
    def _absolute_folder(cls, value: str) -> str:
        normal = value.startswith("/") and not value.startswith("//") and posixpath.normpath(value) == value
        if not normal or ":" in value:
            raise ValueError(f"{value!r} must be a normalised absolute path without ':' (e.g. /checkpoints)")
        hidden = [r for r in SYSTEM_DIRS + KFP_DIRS if value == r or value.startswith(r + "/")]
        if value == "/" or hidden:
            raise ValueError(f"mounting at {value!r} would hide {hidden or ['/']}; use a folder of its own")
        return value


def _default_mlflow_secret() -> SecretEnvConfig:
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    return SecretEnvConfig(name="slipway-mlflow", env={k: k for k in keys})


def _default_storage_secret() -> SecretEnvConfig:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")
    return SecretEnvConfig(name="slipway-object-store", env={k: k for k in keys})


class ClusterConfig(StrictModel):
    """How pipeline tasks run in a Kubeflow cluster; applied when a pipeline is compiled, ignored by kfp.local."""

    @model_validator(mode="before")
    @classmethod
    def _partial(cls, data: Any) -> Any:
        return _over_defaults(cls, data, ("mlflow_secret", "storage_secret"))

    gpu: GpuConfig = Field(default_factory=lambda: GpuConfig())
    mlflow_secret: SecretEnvConfig | None = Field(
        default_factory=_default_mlflow_secret, description="MLflow tracking server URI and credentials"
    )
    storage_secret: SecretEnvConfig | None = Field(
        default_factory=_default_storage_secret, description="object storage behind MLflow artifacts (S3 API)"
    )
    steps: StepKindsConfig = Field(default_factory=lambda: StepKindsConfig())
    service_account: str | None = Field(
        default=None,
        pattern=SECRET_NAME,
        description="Kubernetes service account runs use (None: KFP's default)",
    )
    checkpoints: CheckpointsConfig = Field(default_factory=lambda: CheckpointsConfig())

    @model_validator(mode="after")
    def _no_env_twice(self) -> ClusterConfig:
        secrets = [s for s in (self.mlflow_secret, self.storage_secret) if s is not None]
        seen: set[str] = set()
        for secret in secrets:
            twice = seen & set(secret.env)
            if twice:
                raise ValueError(f"environment variables {sorted(twice)} come from two secrets")
            seen |= set(secret.env)
        return self
