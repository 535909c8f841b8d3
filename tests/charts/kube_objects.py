"""Validation of rendered Kubernetes objects: core kinds against the official OpenAPI schemas
(kubernetes_validate), KServe and Prometheus Operator kinds against their required fields (no CRD schemas here)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import kubernetes_validate

# kubectl from `make tools` is v1.35.2; kubernetes_validate ships schemas for 1.34-1.37.
KUBERNETES_VERSION = "1.35.0"

CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "Namespace",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "Pod",
    "PodDisruptionBudget",
    "Role",
    "RoleBinding",
    "Service",
    "ServiceAccount",
}
DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d)$")


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Problems with one rendered object (empty when valid); unknown kinds are problems too."""
    kind = obj.get("kind", "<no kind>")
    if kind in CORE_KINDS:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return [f"{kind}: {error.message} at {'.'.join(map(str, error.path))}"]
        return []
    checker = CUSTOM_RESOURCE_CHECKERS.get(kind)
    if checker is None:
        return [f"{kind}: no validator; add it to CORE_KINDS or CUSTOM_RESOURCE_CHECKERS"]
    return [f"{kind} {obj.get('metadata', {}).get('name')}: {p}" for p in checker(obj)]


def _get(obj: Any, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _missing(obj: dict[str, Any], paths: list[str]) -> list[str]:
    return [f"missing {path}" for path in paths if _get(obj, path) in (None, "", [], {})]


def _api_version(obj: dict[str, Any], expected: str) -> list[str]:
    return [] if obj.get("apiVersion") == expected else [f"apiVersion {obj.get('apiVersion')} != {expected}"]


def check_inference_service(obj: dict[str, Any]) -> list[str]:
    problems = _api_version(obj, "serving.kserve.io/v1beta1")
    problems += _missing(
        obj,
        [
            "metadata.name",
            "metadata.namespace",
            "spec.predictor.model.modelFormat.name",
            "spec.predictor.model.runtime",
            "spec.predictor.model.storageUri",
        ],
    )
    predictor = _get(obj, "spec.predictor") or {}
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None and not (isinstance(canary, int) and 0 <= canary <= 100):
        problems.append(f"canaryTrafficPercent {canary!r} is not an integer in 0..100")
    logger = predictor.get("logger")
    if logger is not None:
        if logger.get("mode") not in {"all", "request", "response"}:
            problems.append(f"logger.mode {logger.get('mode')!r} is not all|request|response")
        if not str(logger.get("url", "")).startswith("http"):
            problems.append("logger.url is not an http(s) URL")
    if _get(obj, "spec.predictor.model.protocolVersion") not in {None, "v1", "v2", "grpc-v2"}:
        problems.append("model.protocolVersion is not v1|v2|grpc-v2")
    return problems


def check_cluster_serving_runtime(obj: dict[str, Any]) -> list[str]:
    problems = _api_version(obj, "serving.kserve.io/v1alpha1")
    problems += _missing(obj, ["metadata.name", "spec.supportedModelFormats", "spec.containers"])
    if _get(obj, "metadata.namespace"):
        problems.append("is cluster-scoped but has metadata.namespace")
    problems += [
        f"supportedModelFormats[{i}] has no name"
        for i, fmt in enumerate(_get(obj, "spec.supportedModelFormats") or [])
        if not fmt.get("name")
    ]
    problems += [
        f"containers[{i}] needs name and image"
        for i, container in enumerate(_get(obj, "spec.containers") or [])
        if not (container.get("name") and container.get("image"))
    ]
    unknown = set(_get(obj, "spec.protocolVersions") or []) - {"v1", "v2", "grpc-v1", "grpc-v2"}
    if unknown:
        problems.append(f"unknown protocolVersions {sorted(unknown)}")
    return problems


def check_service_monitor(obj: dict[str, Any]) -> list[str]:
    problems = _api_version(obj, "monitoring.coreos.com/v1")
    problems += _missing(obj, ["metadata.name", "spec.selector", "spec.endpoints"])
    problems += [
        f"endpoints[{i}] names no port"
        for i, endpoint in enumerate(_get(obj, "spec.endpoints") or [])
        if not (endpoint.get("port") or endpoint.get("targetPort"))
    ]
    return problems


def check_pod_monitor(obj: dict[str, Any]) -> list[str]:
    problems = _api_version(obj, "monitoring.coreos.com/v1")
    problems += _missing(obj, ["metadata.name", "spec.selector", "spec.podMetricsEndpoints"])
    problems += [
        f"podMetricsEndpoints[{i}] names no port"
        for i, endpoint in enumerate(_get(obj, "spec.podMetricsEndpoints") or [])
        if not (endpoint.get("port") or endpoint.get("portNumber") or endpoint.get("targetPort"))
    ]
    return problems


def check_prometheus_rule(obj: dict[str, Any]) -> list[str]:
    problems = _api_version(obj, "monitoring.coreos.com/v1")
    problems += _missing(obj, ["metadata.name", "spec.groups"])
    for group in _get(obj, "spec.groups") or []:
        if not group.get("name") or not group.get("rules"):
            problems.append(f"group {group.get('name')!r} needs a name and rules")
        for rule in group.get("rules") or []:
            label = rule.get("alert") or rule.get("record")
            if bool(rule.get("alert")) == bool(rule.get("record")):
                problems.append(f"rule {label!r} needs exactly one of alert/record")
            if not str(rule.get("expr", "")).strip():
                problems.append(f"rule {label!r} has no expr")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                problems.append(f"rule {label!r} has an invalid `for` {rule['for']!r}")
    return problems


CUSTOM_RESOURCE_CHECKERS = {
    "InferenceService": check_inference_service,
    "ClusterServingRuntime": check_cluster_serving_runtime,
    "ServiceMonitor": check_service_monitor,
    "PodMonitor": check_pod_monitor,
    "PrometheusRule": check_prometheus_rule,
}


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(where, pod-level spec, containers) for every kind that runs containers, including KServe's."""
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    if kind == "Deployment":
        spec = obj["spec"]["template"]["spec"]
        yield f"Deployment {name}", spec, spec.get("initContainers", []) + spec["containers"]
    elif kind == "Pod":
        spec = obj["spec"]
        yield f"Pod {name}", spec, spec.get("initContainers", []) + spec["containers"]
    elif kind == "InferenceService":
        predictor = obj["spec"]["predictor"]
        yield f"InferenceService {name}", predictor, [predictor["model"], *predictor.get("containers", [])]
        explainer = obj["spec"].get("explainer")
        if explainer is not None:
            yield f"InferenceService {name} explainer", explainer, explainer["containers"]
    elif kind == "ClusterServingRuntime":
        yield f"ClusterServingRuntime {name}", obj["spec"], obj["spec"]["containers"]
