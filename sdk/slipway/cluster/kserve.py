"""Typed builders for KServe InferenceServices on the Triton runtime, checked against KServe's own models.

The dict we send to the API server is built from validated pydantic settings, then walked field by field
through `kserve.models` (and `kubernetes.client.models` for core types) so that a misspelt or unknown field
fails here, with its path, instead of being silently pruned by the API server's structural schema.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import logging
import re
import sys
import types
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.core import images
from slipway.core.aoti_package import check_serving_compatibility
from slipway.core.artifacts import ModelArtifact
from slipway.core.errors import ConfigError

log = logging.getLogger(__name__)

KSERVE_GROUP = "serving.kserve.io"
KSERVE_VERSION = "v1beta1"
KSERVE_PLURAL = "inferenceservices"
KSERVE_API_VERSION = f"{KSERVE_GROUP}/{KSERVE_VERSION}"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
PROMETHEUS_SCRAPING_ANNOTATION = "serving.kserve.io/enable-prometheus-scraping"
# Slipway's own bookkeeping: the storageUri that served before the current canary (for rollback).
PREVIOUS_STORAGE_URI_ANNOTATION = "slipway.dev/previous-storage-uri"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"

KSERVE_TRITON_RUNTIME: Final = "kserve-tritonserver"
SLIPWAY_TRITON_RUNTIME: Final = "slipway-triton"
SLIPWAY_TRITON_TORCH_RUNTIME: Final = "slipway-triton-torch"

ModelFormat = Literal["onnx", "tensorrt", "aoti"]
Runtime = Literal["kserve-tritonserver", "slipway-triton", "slipway-triton-torch"]
# What each runtime serves (manifests/base/*-runtime.yaml); aoti: AOTInductor packages on Triton's Python backend.
RUNTIME_FORMATS: Final[dict[str, frozenset[str]]] = {
    KSERVE_TRITON_RUNTIME: frozenset({"onnx", "tensorrt"}),
    SLIPWAY_TRITON_RUNTIME: frozenset({"onnx", "tensorrt"}),
    SLIPWAY_TRITON_TORCH_RUNTIME: frozenset({"aoti"}),
}
# KServe >= 0.15 names the modes Knative / Standard; Serverless / RawDeployment are the legacy spellings
# it still accepts and normalises (pkg/constants ParseDeploymentMode).
DeploymentMode = Literal["Knative", "Serverless", "Standard", "RawDeployment"]
KNATIVE_MODES = frozenset({"Knative", "Serverless"})
STANDARD_MODES = frozenset({"Standard", "RawDeployment"})

# Knative revision names are "<isvc>-predictor-00001" and tag hosts "latest-<isvc>-predictor": both must
# stay valid 63-character DNS labels, hence 45 rather than 63.
_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"

# KServe's contract for a custom explainer (explainer_custom.go, the explainer reconciler): the first container is
# renamed kserve-container, its STORAGE_URI env var is downloaded into /mnt/models by the storage initializer, and
# `--model_name <isvc> --predictor_host <host> --http_port 8080` are appended to its args (`slipway serve` takes them).
EXPLAINER_CONTAINER = "kserve-container"
EXPLAINER_PORT = 8080
STORAGE_URI_ENV = "STORAGE_URI"
MODEL_MOUNT = "/mnt/models"
# The chart's podSecurityContext / containerSecurityContext defaults (tests/charts/test_explainer.py keeps them equal).
POD_SECURITY_CONTEXT: Final = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


class StrictSettings(BaseModel):
    """Unknown keys are errors, so a typo in a setting is reported rather than ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceSettings(StrictSettings):
    """Requests equal limits (Guaranteed QoS): Triton latency is unpredictable when CPU is overcommitted."""

    cpu: str = Field(
        default="1", pattern=_QUANTITY_PATTERN, description="Kubernetes CPU quantity, e.g. 500m or 2"
    )
    memory: str = Field(default="2Gi", pattern=_QUANTITY_PATTERN, description="Kubernetes memory quantity")
    gpu: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu count (limits only)")

    def to_k8s(self) -> dict[str, dict[str, str]]:
        requests = {"cpu": self.cpu, "memory": self.memory}
        limits = dict(requests)
        if self.gpu:
            limits["nvidia.com/gpu"] = str(self.gpu)
        return {"requests": requests, "limits": limits}


def explainer_command() -> list[str]:
    """`slipway serve` over the repository the storage initializer fills, HTTP on KServe's port, digests required."""
    return [
        "slipway", "serve", MODEL_MOUNT, "--host", "0.0.0.0", "--http-port", str(EXPLAINER_PORT),
        "--allow-metrics", "false", "--require-digest",
    ]  # fmt: skip


class ExplainerSettings(StrictSettings):
    """KServe's explainer as `slipway serve` on the Slipway CPU image, over the predictor's model repository: it
    answers `/v1/models/{m}:explain` with the PyTorch checkpoint packaged beside the served version."""

    image: str = Field(default=images.CPU_IMAGE, min_length=1, description="pinned Slipway CPU image")
    resources: ResourceSettings = Field(default_factory=lambda: ResourceSettings(cpu="1", memory="2Gi"))
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ExplainerSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        if self.resources.gpu:
            raise ValueError("the explainer runs on CPU (the Slipway CPU image); resources.gpu must be 0")
        return self


class InferenceServiceSettings(StrictSettings):
    """Everything that decides the InferenceService we render; validated when built."""

    name: str = Field(min_length=1, max_length=45, pattern=_NAME_PATTERN)
    namespace: str = Field(min_length=1, max_length=63, pattern=_NAME_PATTERN)
    storage_uri: str = Field(min_length=1, description="Triton model repository root (s3://, gs://, pvc://)")
    model_format: ModelFormat
    runtime: Runtime = SLIPWAY_TRITON_RUNTIME
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    canary_traffic_percent: int | None = Field(default=None, ge=0, le=100)
    logger_url: str | None = Field(
        default=None, description="payload logger sink (the drift monitor); mode all"
    )
    service_account: str | None = Field(default=None, pattern=_NAME_PATTERN)
    deployment_mode: DeploymentMode = "Knative"
    tensorrt_version: str | None = Field(default=None, description="from the plan's metadata; TensorRT only")
    explainer: ExplainerSettings | None = Field(default=None, description="None: no explainer")

    @model_validator(mode="after")
    def _check(self) -> InferenceServiceSettings:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})")
        if self.storage_uri.startswith("/"):
            raise ValueError(f"storage_uri {self.storage_uri!r} is a local path; the cluster cannot read it")
        if self.canary_traffic_percent is not None and self.deployment_mode in STANDARD_MODES:
            raise ValueError(
                f"canary_traffic_percent is ignored by KServe in {self.deployment_mode} mode "
                "(revision-based canary needs Knative/Serverless); refusing rather than pretending"
            )
        if self.logger_url is not None and not re.match(r"^https?://", self.logger_url):
            raise ValueError(f"logger_url {self.logger_url!r} must be an http(s) URL")
        if self.explainer is not None and self.model_format != "onnx":
            raise ValueError(
                f"explainer: slipway serve (the explainer) serves ONNX models; model_format is {self.model_format!r}"
            )
        if self.model_format not in RUNTIME_FORMATS[self.runtime]:
            raise ValueError(
                f"runtime {self.runtime!r} serves {', '.join(sorted(RUNTIME_FORMATS[self.runtime]))}, not "
                f"{self.model_format!r}; use runtime {default_runtime(self.model_format)!r}"
            )
        return self


def default_runtime(model_format: ModelFormat) -> Runtime:
    """The Slipway runtime that serves a format: Triton with torch for .pt2 packages, plain Triton otherwise."""
    return SLIPWAY_TRITON_TORCH_RUNTIME if model_format == "aoti" else SLIPWAY_TRITON_RUNTIME


def check_serving_image(artifact: ModelArtifact | None, model_format: ModelFormat, gpus: int) -> None:
    """Refuse a model the serving image cannot run: a TensorRT plan not built by the TensorRT inside our
    Triton image, an AOTInductor package not compiled by the torch of the Triton-with-torch image (or for
    another GPU than the serving nodes', or for a GPU with no GPU requested). Both are not portable."""
    if artifact is not None and artifact.framework != model_format:
        raise ConfigError(
            f"model_format is {model_format!r} but the artifact metadata says framework={artifact.framework!r}"
        )
    if model_format == "aoti":
        _check_aoti_package(artifact, gpus)
    if model_format != "tensorrt":
        return
    if artifact is None or not artifact.tensorrt_version:
        raise ConfigError(
            "a TensorRT plan must come with its metadata (tensorrt_version): plans only load in the "
            f"TensorRT release that built them ({images.TRITON_IMAGE} ships TensorRT {images.TENSORRT_VERSION})"
        )
    wanted = images.TENSORRT_VERSION.split(".")
    have = artifact.tensorrt_version.split(".")
    if have[: len(wanted)] != wanted:
        raise ConfigError(
            f"TensorRT plan was built with TensorRT {artifact.tensorrt_version}, but the serving image "
            f"{images.TRITON_IMAGE} runs TensorRT {images.TENSORRT_VERSION}; rebuild the plan with the "
            "matching GPU image (images.GPU_IMAGE) or deploy the ONNX model instead"
        )


def _check_aoti_package(artifact: ModelArtifact | None, gpus: int) -> None:
    if artifact is None:
        raise ConfigError(
            "an AOTInductor package must come with its metadata (torch_version, compute_capability): it runs only "
            f"on the torch that compiled it ({images.TRITON_TORCH_IMAGE} runs torch {images.AOTI_TORCH_VERSION})"
        )
    capability = images.SERVING_COMPUTE_CAPABILITY if artifact.compute_capability else None
    image = f"the serving image {images.TRITON_TORCH_IMAGE} (torch {images.AOTI_TORCH_VERSION})"
    check_serving_compatibility(artifact, images.AOTI_TORCH_VERSION, capability, image)
    if artifact.compute_capability and not gpus:
        raise ConfigError(
            f"{artifact.file}: compiled for CUDA compute capability {artifact.compute_capability}, so it needs a "
            "GPU: request one (resources.gpu / --gpu 1)"
        )


def build_inference_service(
    name: str,
    namespace: str,
    storage_uri: str,
    model_format: ModelFormat,
    *,
    runtime: Runtime | None = None,
    resources: ResourceSettings | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    canary_traffic_percent: int | None = None,
    logger_url: str | None = None,
    service_account: str | None = None,
    deployment_mode: DeploymentMode = "Knative",
    artifact: ModelArtifact | None = None,
    explainer: ExplainerSettings | None = None,
) -> dict[str, Any]:
    """Build and validate an InferenceService dict; raises ConfigError naming the wrong setting. `runtime`
    None: the Slipway runtime for the format (default_runtime)."""
    if explainer is not None and model_format != "onnx":
        raise ConfigError(
            f"explainer: slipway serve (the explainer) serves ONNX models; model_format is {model_format!r}"
        )
    resources = resources or ResourceSettings()
    check_serving_image(artifact, model_format, resources.gpu)
    try:
        settings = InferenceServiceSettings(
            name=name,
            namespace=namespace,
            storage_uri=storage_uri,
            model_format=model_format,
            runtime=runtime or default_runtime(model_format),
            resources=resources,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            canary_traffic_percent=canary_traffic_percent,
            logger_url=logger_url,
            service_account=service_account,
            deployment_mode=deployment_mode,
            tensorrt_version=artifact.tensorrt_version if artifact else None,
            explainer=explainer,
        )
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
    return render_inference_service(settings)


def render_inference_service(settings: InferenceServiceSettings) -> dict[str, Any]:
    """Render validated settings into the dict the API server receives, then check it against KServe."""
    annotations = {
        DEPLOYMENT_MODE_ANNOTATION: settings.deployment_mode,
        PROMETHEUS_SCRAPING_ANNOTATION: "true",
    }
    if settings.deployment_mode in KNATIVE_MODES:
        # Tag routing gives the canary revision its own URL ("latest-..."), which the smoke test calls.
        annotations[TAG_ROUTING_ANNOTATION] = "true"
    predictor: dict[str, Any] = {
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "model": {
            "modelFormat": {"name": settings.model_format},
            "runtime": settings.runtime,
            "protocolVersion": "v2",
            "storageUri": settings.storage_uri,
            "resources": settings.resources.to_k8s(),
        },
    }
    if settings.canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = settings.canary_traffic_percent
    if settings.logger_url is not None:
        predictor["logger"] = {"mode": "all", "url": settings.logger_url}
    if settings.service_account is not None:
        predictor["serviceAccountName"] = settings.service_account
    body: dict[str, Any] = {
        "apiVersion": KSERVE_API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": settings.name,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY_LABEL: "slipway", "app.kubernetes.io/name": settings.name},
            "annotations": annotations,
        },
        "spec": {"predictor": predictor},
    }
    if settings.explainer is not None:
        body["spec"]["explainer"] = _render_explainer(settings.explainer, settings)
    validate_inference_service(body)
    return body


def _render_explainer(explainer: ExplainerSettings, settings: InferenceServiceSettings) -> dict[str, Any]:
    """The custom explainer: the chart's `explainer` block (templates/inferenceservice.yaml), field for field."""
    container = {
        "name": EXPLAINER_CONTAINER,
        "image": explainer.image,
        "command": explainer_command(),
        "env": [{"name": STORAGE_URI_ENV, "value": settings.storage_uri}, {"name": "HOME", "value": "/tmp"}],
        "ports": [{"containerPort": EXPLAINER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": EXPLAINER_PORT},
            "periodSeconds": 10,
        },
        "resources": explainer.resources.to_k8s(),
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: dict[str, Any] = {
        "minReplicas": explainer.min_replicas,
        "maxReplicas": explainer.max_replicas,
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    if settings.service_account is not None:
        spec["serviceAccountName"] = settings.service_account
    return spec


def _format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"{where}: {err['msg']}")
    return "invalid InferenceService settings: " + "; ".join(parts)


# --- validation against KServe's generated models -------------------------------------------------------


_MODELS_CACHE: dict[str, Any] = {}


def _kserve_models() -> Any:
    """Load `kserve.models` (plain generated classes) without running `kserve/__init__.py`.

    `import kserve` parses sys.argv and registers KServe's gRPC protos in the default protobuf pool, which
    then clash with tritonclient.grpc's (duplicate `inference.*` symbols) in whichever is imported second.
    The models only need `kserve.configuration`, so we import them under a temporary bare `kserve` package
    and then take that package out of sys.modules again: a later real `import kserve` is unaffected.
    """
    if "models" in _MODELS_CACHE:
        return _MODELS_CACHE["models"]
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the kserve package is not installed; it is needed to validate InferenceServices")
    saved = {k: v for k, v in sys.modules.items() if k == "kserve" or k.startswith("kserve.")}
    bare = types.ModuleType("kserve")
    bare.__path__ = list(spec.submodule_search_locations)
    for key in saved:
        del sys.modules[key]
    sys.modules["kserve"] = bare
    try:
        models = importlib.import_module("kserve.models")
    finally:
        for key in [k for k in sys.modules if k == "kserve" or k.startswith("kserve.")]:
            del sys.modules[key]
        sys.modules.update(saved)
    _MODELS_CACHE["models"] = models
    return models


_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}


def validate_inference_service(body: dict[str, Any]) -> Any:
    """Check `body` against kserve.V1beta1InferenceService; return the model instance or raise ConfigError.

    The OpenAPI deserializer silently drops unknown keys, so we walk `openapi_types`/`attribute_map` of every
    nested model ourselves (unknown key -> error with its path and the closest valid name), then construct
    each model, which runs KServe's own required-field checks (e.g. spec.predictor, model.modelFormat).
    """
    models = _kserve_models()
    import kubernetes.client.models as k8s_models

    return _validate(body, "V1beta1InferenceService", "", models, k8s_models)


def _resolve(type_name: str, models: Any, k8s_models: Any, path: str) -> Any:
    for module in (models, k8s_models):
        klass = getattr(module, type_name, None)
        if klass is not None:
            return klass
    raise ConfigError(
        f"{path or '<root>'}: type {type_name} is unknown to the installed kserve/kubernetes clients"
    )


def _validate(value: Any, type_name: str, path: str, models: Any, k8s_models: Any) -> Any:
    where = path or "<root>"
    if value is None:
        return None
    if type_name.startswith("list["):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        inner = type_name[5:-1]
        return [_validate(v, inner, f"{path}[{i}]", models, k8s_models) for i, v in enumerate(value)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        return {k: _validate(v, inner, f"{path}.{k}", models, k8s_models) for k, v in value.items()}
    if type_name == "object":
        return value
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if not isinstance(value, allowed) or (type_name != "bool" and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    klass = _resolve(type_name, models, k8s_models, path)
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected an object ({type_name}), got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    kwargs = {}
    for key, item in value.items():
        if key not in by_json:
            lowered = {k.lower(): k for k in by_json}
            close = [lowered[key.lower()]] if key.lower() in lowered else []
            close = close or difflib.get_close_matches(key, list(by_json), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown field {key!r} for {type_name}{hint}")
        attr = by_json[key]
        child = f"{path}.{key}" if path else key
        kwargs[attr] = _validate(item, klass.openapi_types[attr], child, models, k8s_models)
    try:
        return klass(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {type_name} rejected it: {exc}") from None


def deployment_mode_of(isvc: dict[str, Any]) -> str | None:
    """The mode KServe applies: status.deploymentMode first, then the annotation (KServe's own order)."""
    status_mode = (isvc.get("status") or {}).get("deploymentMode")
    annotated = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    mode = status_mode or annotated
    if mode == "Serverless":
        return "Knative"
    if mode == "RawDeployment":
        return "Standard"
    return mode
