"""A/B experiments in the cluster: the champion InferenceService, a challenger beside it, and a KServe
InferenceGraph whose root Splitter node shares traffic between them for as long as the experiment runs.

The objects are built with the rollout's typed builder and checked against KServe's generated models, plus the
rules KServe's InferenceGraph admission webhook applies (a `root` node, one target per step, unique step
names, Splitter weights summing to 100). The graph carries the experiment spec in an annotation, so status,
health and stop need nothing but the cluster.

Each Splitter step names its target by `serviceUrl`, resolved by `start` from the InferenceService's
`status.address.url` (where KServe's controller looks too) plus `/v2/models/<triton model>/infer`. KServe
resolves a `serviceName` step to `/v2/models/<InferenceService name>/infer` instead, which misses Triton's
model whenever the InferenceService is named otherwise (the challenger always is), and its webhook refuses a
step that sets both.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from slipway.cluster.kserve import (
    _NAME_PATTERN,
    DEPLOYMENT_MODE_ANNOTATION,
    KSERVE_GROUP,
    KSERVE_PLURAL,
    KSERVE_VERSION,
    MANAGED_BY_LABEL,
    PREVIOUS_STORAGE_URI_ANNOTATION,
    SLIPWAY_TRITON_RUNTIME,
    DeploymentMode,
    ModelFormat,
    ResourceSettings,
    Runtime,
    _kserve_models,
    _validate,
    build_inference_service,
    validate_inference_service,
)
from slipway.cluster.kube import api_error
from slipway.cluster.prometheus import PrometheusClient
from slipway.cluster.rollout import Rollout, RolloutSettings, SmokeTest
from slipway.core.errors import ClusterError, ConfigError, NotFoundError, SlipwayError
from slipway.experiments.spec import VARIANTS, ExperimentSpec, Health, Variant, parse_spec

log = logging.getLogger(__name__)

GRAPH_VERSION: Final = "v1alpha1"
GRAPH_PLURAL: Final = "inferencegraphs"
GRAPH_API_VERSION: Final = f"{KSERVE_GROUP}/{GRAPH_VERSION}"
GRAPH_ROOT_NODE: Final = "root"
ROUTER_TYPES: Final = frozenset({"Sequence", "Splitter", "Ensemble", "Switch"})  # the CRD's enum

EXPERIMENT_LABEL: Final = "slipway.dev/experiment"
VARIANT_LABEL: Final = "slipway.dev/variant"
SPEC_ANNOTATION: Final = "slipway.dev/experiment-spec"
TRITON_MODEL_ANNOTATION: Final = "slipway.dev/triton-model"
VARIANT_ANNOTATIONS: Final[dict[Variant, str]] = {
    "a": "slipway.dev/variant-a",  # the champion InferenceService's name
    "b": "slipway.dev/variant-b",  # the challenger's
}


# --- the objects -------------------------------------------------------------------------------------------


def challenger_name(experiment: str) -> str:
    """The challenger InferenceService of an experiment: `<experiment>-b` (at most 42 characters)."""
    return f"{experiment}-b"


def split_weights(b_share: float) -> tuple[int, int]:
    """Splitter weights (A, B) in whole percent summing to 100; a share that rounds to 0 or 100 is refused."""
    weight_a = round(100 * (1 - b_share))
    weight_b = 100 - weight_a
    if not 0 < weight_b < 100:
        raise ConfigError(
            f"experiment.b_share: {b_share} gives B {weight_b}% of traffic in whole percent (InferenceGraph "
            "Splitter weights are integers summing to 100); each variant needs 1% to 99%: shares from 0.01 to 0.99 "
            "always do"
        )
    return weight_a, weight_b


def build_experiment_objects(
    spec: ExperimentSpec | Mapping[str, Any],
    namespace: str,
    champion_isvc: str,
    challenger_storage_uri: str,
    *,
    logger_url: str | None = None,
    service_account: str | None = None,
    model_format: ModelFormat = "onnx",
    runtime: Runtime = SLIPWAY_TRITON_RUNTIME,
    resources: ResourceSettings | None = None,
    deployment_mode: DeploymentMode = "Knative",
    triton_model: str | None = None,
) -> list[dict[str, Any]]:
    """The challenger InferenceService and the InferenceGraph splitting traffic between it and the champion.

    Pass the champion's runtime, logger, service account, resources and mode so that B differs from A in its
    model only. `triton_model` is the model's name inside the Triton repositories (default: spec.model).
    Raises ConfigError naming the wrong field.
    """
    spec = spec if isinstance(spec, ExperimentSpec) else parse_spec(dict(spec))
    _check_names(spec, champion_isvc)
    weight_a, weight_b = split_weights(spec.b_share)
    challenger = build_inference_service(
        challenger_name(spec.name),
        namespace,
        challenger_storage_uri,
        model_format,
        runtime=runtime,
        resources=resources,
        logger_url=logger_url,
        service_account=service_account,
        deployment_mode=deployment_mode,
    )
    challenger["metadata"]["labels"].update({EXPERIMENT_LABEL: spec.name, VARIANT_LABEL: "b"})
    validate_inference_service(challenger)
    graph: dict[str, Any] = {
        "apiVersion": GRAPH_API_VERSION,
        "kind": "InferenceGraph",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: "slipway", EXPERIMENT_LABEL: spec.name},
            "annotations": {
                SPEC_ANNOTATION: spec.model_dump_json(),
                VARIANT_ANNOTATIONS["a"]: champion_isvc,
                VARIANT_ANNOTATIONS["b"]: challenger["metadata"]["name"],
                TRITON_MODEL_ANNOTATION: triton_model or spec.model,
                DEPLOYMENT_MODE_ANNOTATION: deployment_mode,
            },
        },
        "spec": {
            "nodes": {
                GRAPH_ROOT_NODE: {
                    "routerType": "Splitter",
                    "steps": [
                        {"name": "a", "serviceName": champion_isvc, "weight": weight_a},
                        {"name": "b", "serviceName": challenger["metadata"]["name"], "weight": weight_b},
                    ],
                }
            }
        },
    }
    validate_inference_graph(graph)
    log.info(
        "experiment.objects namespace=%s name=%s champion=%s challenger=%s weights=%d/%d",
        namespace,
        spec.name,
        champion_isvc,
        challenger["metadata"]["name"],
        weight_a,
        weight_b,
    )
    return [challenger, graph]


def _check_names(spec: ExperimentSpec, champion_isvc: str) -> None:
    if not re.match(_NAME_PATTERN, spec.name):
        raise ConfigError(
            f"experiment.name: {spec.name!r} must start with a letter in the cluster (it names the "
            "InferenceGraph and the challenger InferenceService)"
        )
    if not re.match(_NAME_PATTERN, champion_isvc) or len(champion_isvc) > 63:
        raise ConfigError(f"champion_isvc: {champion_isvc!r} is not an InferenceService name")
    if champion_isvc in (spec.name, challenger_name(spec.name)):
        raise ConfigError(
            f"experiment.name: {spec.name!r} clashes with the champion InferenceService {champion_isvc!r} "
            "(KServe gives both a Service of that name); choose another experiment name"
        )


def validate_inference_graph(body: dict[str, Any]) -> Any:
    """Check `body` against kserve.V1alpha1InferenceGraph and KServe's webhook rules; ConfigError names the path."""
    models = _kserve_models()
    import kubernetes.client.models as k8s_models

    model = _validate(body, "V1alpha1InferenceGraph", "", models, k8s_models)
    if body.get("apiVersion") != GRAPH_API_VERSION or body.get("kind") != "InferenceGraph":
        raise ConfigError(
            f"apiVersion/kind: expected {GRAPH_API_VERSION} InferenceGraph, got "
            f"{body.get('apiVersion')} {body.get('kind')}"
        )
    name = (body.get("metadata") or {}).get("name") or ""
    if not re.match(_NAME_PATTERN, name):
        raise ConfigError(f"metadata.name: {name!r} is not a valid InferenceGraph name")
    nodes = (body.get("spec") or {}).get("nodes") or {}
    if GRAPH_ROOT_NODE not in nodes:
        raise ConfigError(f"spec.nodes: needs a node named {GRAPH_ROOT_NODE!r} (where every request starts)")
    for node_name, node in nodes.items():
        where = f"spec.nodes.{node_name}"
        router = node.get("routerType")
        if router not in ROUTER_TYPES:
            raise ConfigError(f"{where}.routerType: {router!r} is not one of {sorted(ROUTER_TYPES)}")
        steps = node.get("steps") or []
        if not steps:
            raise ConfigError(f"{where}.steps: a node needs at least one step")
        seen: set[str] = set()
        for i, step in enumerate(steps):
            targets = [k for k in ("nodeName", "serviceName", "serviceUrl") if step.get(k)]
            if len(targets) != 1:
                raise ConfigError(
                    f"{where}.steps[{i}]: needs exactly one of nodeName, serviceName, serviceUrl, got {targets}"
                )
            if step.get("name"):
                if step["name"] in seen:
                    raise ConfigError(f"{where}.steps[{i}].name: {step['name']!r} is used twice")
                seen.add(step["name"])
        if router == "Splitter":
            weights = [step.get("weight") for step in steps]
            if any(w is None for w in weights) or sum(w for w in weights if w is not None) != 100:
                raise ConfigError(f"{where}.steps[].weight: Splitter weights must all be set and sum to 100")
            if any(w is not None and w < 0 for w in weights):
                raise ConfigError(f"{where}.steps[].weight: weights must not be negative")
    return model


def resolve_step_urls(
    graph: dict[str, Any], addresses: Mapping[str, str], triton_model: str
) -> dict[str, Any]:
    """A copy of `graph` whose `serviceName` steps call `<address>/v2/models/<triton_model>/infer` instead."""
    resolved = copy.deepcopy(graph)
    for node_name, node in resolved["spec"]["nodes"].items():
        for step in node.get("steps") or []:
            service = step.pop("serviceName", None)
            if service is None:
                continue
            address = addresses.get(service)
            if not address:
                raise ClusterError(
                    f"InferenceGraph {graph['metadata']['name']} node {node_name}: InferenceService {service} "
                    "reports no status.address.url (not Ready?)"
                )
            step["serviceUrl"] = f"{address.rstrip('/')}/v2/models/{triton_model}/infer"
    validate_inference_graph(resolved)
    return resolved


def spec_of(graph: dict[str, Any]) -> ExperimentSpec:
    """The experiment spec a graph carries in its annotation; ConfigError when it is missing or invalid."""
    meta = graph.get("metadata") or {}
    where = f"InferenceGraph {meta.get('namespace')}/{meta.get('name')} annotation {SPEC_ANNOTATION}"
    raw = (meta.get("annotations") or {}).get(SPEC_ANNOTATION)
    if not raw:
        raise ConfigError(f"{where}: missing; this graph was not created by `slipway experiment start`")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON ({exc})") from None
    return parse_spec(data, where)


def _variant_services(graph: dict[str, Any]) -> dict[Variant, str]:
    annotations = (graph.get("metadata") or {}).get("annotations") or {}
    services: dict[Variant, str] = {}
    for variant in VARIANTS:
        name = annotations.get(VARIANT_ANNOTATIONS[variant])
        if not name:
            raise ConfigError(
                f"InferenceGraph {graph['metadata'].get('name')}: annotation {VARIANT_ANNOTATIONS[variant]} "
                "is missing; it names the InferenceService of that variant"
            )
        services[variant] = name
    return services


def _split_objects(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    kinds = sorted(str(o.get("kind")) for o in objects)
    if kinds != ["InferenceGraph", "InferenceService"]:
        raise ConfigError(
            f"objects: expected one InferenceService and one InferenceGraph (from build_experiment_objects), "
            f"got {kinds}"
        )
    isvc = next(o for o in objects if o["kind"] == "InferenceService")
    graph = next(o for o in objects if o["kind"] == "InferenceGraph")
    if isvc["metadata"]["namespace"] != graph["metadata"]["namespace"]:
        raise ConfigError("objects: the InferenceService and the InferenceGraph must share a namespace")
    return isvc, graph


# --- per-variant health from Prometheus --------------------------------------------------------------------


class VariantQueries(BaseModel):
    """PromQL with `{namespace}`, `{isvc}` and `{window}` placeholders: requests and errors are counts over
    the window, p99 is in milliseconds. Errors are answers other than 200, as the guardrails define them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    requests: str
    errors: str
    p99_ms: str


# The rollout's Knative queue-proxy metrics (KNATIVE_QUERIES), summed over every revision of the predictor's
# Knative Service `<isvc>-predictor` rather than one revision: a variant is an InferenceService.
KNATIVE_VARIANT_QUERIES = VariantQueries(
    requests=(
        'sum(increase(revision_request_count{{namespace_name="{namespace}",service_name="{isvc}-predictor"}}'
        "[{window}]))"
    ),
    errors=(
        'sum(increase(revision_request_count{{namespace_name="{namespace}",service_name="{isvc}-predictor",'
        'response_code!="200"}}[{window}]))'
    ),
    p99_ms=(
        "histogram_quantile(0.99, sum by (le) (rate(revision_request_latencies_bucket"
        '{{namespace_name="{namespace}",service_name="{isvc}-predictor"}}[{window}])))'
    ),
)
# Triton's own metrics (the rollout's TRITON_QUERIES), given a scrape config that copies the pod label
# serving.kserve.io/inferenceservice to an `inferenceservice` label. Triton counts failed inferences, not HTTP
# answers, and its p99 is a summary over Triton's own max age, not the window.
TRITON_VARIANT_QUERIES = VariantQueries(
    requests=(
        'sum(increase(nv_inference_request_success{{namespace="{namespace}",inferenceservice="{isvc}"}}[{window}]))'
        ' + sum(increase(nv_inference_request_failure{{namespace="{namespace}",inferenceservice="{isvc}"}}'
        "[{window}]))"
    ),
    errors='sum(increase(nv_inference_request_failure{{namespace="{namespace}",inferenceservice="{isvc}"}}[{window}]))',
    p99_ms=(
        'max(nv_inference_request_summary_us{{namespace="{namespace}",inferenceservice="{isvc}",quantile="0.99"}})'
        " / 1000"
    ),
)


def _count(value: float) -> int:
    return 0 if math.isnan(value) else max(0, round(value))


# --- the API -----------------------------------------------------------------------------------------------


class ClusterExperiments:
    """Start, read, judge the health of, and stop experiments; inject the API (CustomObjectsApi) and Prometheus.

    Readiness waits, smoke tests and the promotion of a winning B go through a `Rollout` built on the same API,
    settings, sleep and clock, so they behave exactly as `slipway deploy` does.
    """

    def __init__(
        self,
        api: Any,
        prometheus: PrometheusClient | None = None,
        *,
        settings: RolloutSettings | None = None,
        queries: VariantQueries = KNATIVE_VARIANT_QUERIES,
        smoke_test: SmokeTest | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.prometheus = prometheus
        self.settings = settings or RolloutSettings()
        self.queries = queries
        self._smoke_test = smoke_test
        self._sleep = sleep
        self._clock = clock
        self._now = now

    def _rollout(self, triton_model: str) -> Rollout:
        settings = self.settings.model_copy(update={"triton_model": triton_model})
        return Rollout(self.api, settings, smoke_test=self._smoke_test, sleep=self._sleep, clock=self._clock)

    # API calls with a request timeout; errors become ClusterError / NotFoundError with the server's reason.
    def _call(
        self, kind: str, action: str, name: str, namespace: str, fn: Callable[..., Any], *args: Any
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        version, plural = (
            (GRAPH_VERSION, GRAPH_PLURAL) if kind == "InferenceGraph" else (KSERVE_VERSION, KSERVE_PLURAL)
        )
        try:
            return fn(
                KSERVE_GROUP,
                version,
                namespace,
                plural,
                *args,
                _request_timeout=self.settings.request_timeout_s,
            )
        except ApiException as exc:
            raise api_error(f"{action} {kind} {namespace}/{name}", exc) from None
        except HTTPError as exc:
            raise ClusterError(f"{action} {kind} {namespace}/{name}: API server unreachable: {exc}") from None

    def _get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            kind, "get", name, namespace, self.api.get_namespaced_custom_object, name
        )
        return result

    def _get_or_none(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._get(kind, name, namespace)
        except NotFoundError:
            return None

    def _create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        log.info("experiment.create kind=%s namespace=%s name=%s", kind, namespace, name)
        result: dict[str, Any] = self._call(
            kind, "create", name, namespace, self.api.create_namespaced_custom_object, body
        )
        return result

    def _delete(self, kind: str, name: str, namespace: str) -> bool:
        """Delete; False when it was already gone."""
        log.info("experiment.delete kind=%s namespace=%s name=%s", kind, namespace, name)
        try:
            self._call(kind, "delete", name, namespace, self.api.delete_namespaced_custom_object, name)
        except NotFoundError:
            return False
        return True

    def _graph(self, name: str, namespace: str) -> dict[str, Any]:
        try:
            return self._get("InferenceGraph", name, namespace)
        except NotFoundError:
            raise NotFoundError(
                f"no experiment {name!r} in namespace {namespace} (no InferenceGraph of that name)"
            ) from None

    # --- start ---
    def start(self, objects: list[dict[str, Any]], *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Create the challenger, wait until it is Ready and smoke-tested, then create the graph splitting traffic.

        With `dry_run`, calls nothing (like `kubectl --dry-run=client`) and returns the objects with each step's
        `serviceUrl` at the cluster-local address a Ready InferenceService reports; `start` itself reads the
        reported `status.address.url` (see the module docstring).
        A challenger that fails is deleted again; the champion serves as before.
        """
        challenger, graph = _split_objects(objects)
        validate_inference_service(challenger)
        validate_inference_graph(graph)
        spec = spec_of(graph)
        services = _variant_services(graph)
        namespace, name = graph["metadata"]["namespace"], graph["metadata"]["name"]
        triton_model = graph["metadata"]["annotations"].get(TRITON_MODEL_ANNOTATION) or spec.model
        if dry_run:  # steps call the cluster-local address KServe gives a Ready InferenceService
            log.info("experiment.dry_run namespace=%s name=%s", namespace, name)
            local = {s: f"http://{s}.{namespace}.svc.cluster.local" for s in services.values()}
            return [copy.deepcopy(challenger), resolve_step_urls(graph, local, triton_model)]
        if self._get_or_none("InferenceGraph", name, namespace) is not None:
            raise ClusterError(
                f"experiment {name!r} is already running in namespace {namespace} (its InferenceGraph exists); "
                f"stop it first: slipway experiment stop {name} -n {namespace} --keep a|b"
            )
        champion_name, b_name = services["a"], challenger["metadata"]["name"]
        if b_name != services["b"]:
            raise ConfigError(
                f"objects: the graph's variant B is {services['b']!r} but the InferenceService is {b_name!r}"
            )
        try:
            self._get("InferenceService", champion_name, namespace)
        except NotFoundError:
            raise NotFoundError(
                f"champion InferenceService {namespace}/{champion_name} not found: deploy it first "
                "(slipway deploy), the experiment splits its traffic with a challenger"
            ) from None
        if self._get_or_none("InferenceService", b_name, namespace) is not None:
            raise ClusterError(
                f"InferenceService {namespace}/{b_name} already exists: a challenger left from an earlier "
                f"experiment? Delete it (kubectl delete inferenceservice {b_name} -n {namespace}) and start again"
            )
        rollout = self._rollout(triton_model)
        try:
            rollout.deploy(challenger)  # create, wait until Ready, smoke-test
            addresses = {service: self._address(service, namespace) for service in (champion_name, b_name)}
            started = spec.model_copy(update={"started_at": spec.started_at or self._now()})
            body = resolve_step_urls(graph, addresses, triton_model)
            body["metadata"]["annotations"][SPEC_ANNOTATION] = started.model_dump_json()
            created_graph = self._create("InferenceGraph", body)
        except SlipwayError as exc:
            try:
                deleted = self._delete("InferenceService", b_name, namespace)
            except SlipwayError as cleanup:
                raise ClusterError(
                    f"experiment {name!r} not started: {exc}; deleting the challenger {namespace}/{b_name} "
                    f"failed too ({cleanup}): delete it by hand"
                ) from None
            raise ClusterError(
                f"experiment {name!r} not started: {exc}"
                + (f"; the challenger {namespace}/{b_name} was deleted again" if deleted else "")
                + f"; {namespace}/{champion_name} serves as before"
            ) from None
        log.info(
            "experiment.started namespace=%s name=%s champion=%s challenger=%s",
            namespace,
            name,
            champion_name,
            b_name,
        )
        return [self._get("InferenceService", b_name, namespace), created_graph]

    def _address(self, service: str, namespace: str) -> str:
        isvc = self._get("InferenceService", service, namespace)
        url = ((isvc.get("status") or {}).get("address") or {}).get("url")
        if not url:
            raise ClusterError(
                f"InferenceService {namespace}/{service} reports no status.address.url (not Ready?); "
                "the InferenceGraph routes to that address"
            )
        return str(url)

    # --- read ---
    def get(self, name: str, namespace: str) -> ExperimentSpec:
        """The spec of a running experiment, read from its InferenceGraph; NotFoundError when there is none."""
        return spec_of(self._graph(name, namespace))

    def url(self, name: str, namespace: str) -> str | None:
        """The URL callers send requests to (the graph's); None until KServe reports the graph Ready."""
        url = (self._graph(name, namespace).get("status") or {}).get("url")
        return str(url) if url else None

    def health(self, name: str, namespace: str, window_s: float) -> dict[Variant, Health]:
        """Requests, errors (answers other than 200) and p99 latency per variant over the last `window_s`."""
        if not window_s >= 1:
            raise ConfigError(f"window_s: expected at least 1 second, got {window_s!r}")
        if self.prometheus is None:
            raise ConfigError(
                "no Prometheus configured: per-variant health in the cluster comes from Prometheus"
            )
        services = _variant_services(self._graph(name, namespace))
        out: dict[Variant, Health] = {}
        for variant, service in services.items():
            params = {"namespace": namespace, "isvc": service, "window": f"{round(window_s)}s"}
            p99 = self.prometheus.query(self.queries.p99_ms.format(**params))
            out[variant] = Health(
                requests=_count(self.prometheus.query(self.queries.requests.format(**params))),
                errors=_count(self.prometheus.query(self.queries.errors.format(**params))),
                p99_ms=None if math.isnan(p99) else p99,
            )
            log.info(
                "experiment.health namespace=%s name=%s variant=%s isvc=%s requests=%d errors=%d p99_ms=%s",
                namespace,
                name,
                variant,
                service,
                out[variant].requests,
                out[variant].errors,
                out[variant].p99_ms,
            )
        return out

    # --- stop ---
    def stop(self, name: str, namespace: str, keep: Variant) -> dict[str, Any]:
        """End the experiment: delete the graph and the challenger. With keep='b', B's storageUri first replaces
        the champion's (patched and awaited as `slipway deploy` does, rolled back if it fails), so the winner
        serves under the champion's name; `slipway rollout rollback` can still return to A."""
        if keep not in VARIANTS:
            raise ConfigError(f"keep: expected 'a' or 'b', got {keep!r}")
        graph = self._graph(name, namespace)
        spec = spec_of(graph)
        services = _variant_services(graph)
        champion_name, b_name = services["a"], services["b"]
        promotion: dict[str, Any] | None = None
        if keep == "b":
            promotion = self._promote_b(graph, spec, champion_name, b_name, namespace)
        deleted = [f"InferenceGraph/{name}"] if self._delete("InferenceGraph", name, namespace) else []
        if self._delete("InferenceService", b_name, namespace):
            deleted.append(f"InferenceService/{b_name}")
        champion = self._get("InferenceService", champion_name, namespace)
        storage_uri = (((champion.get("spec") or {}).get("predictor") or {}).get("model") or {}).get(
            "storageUri"
        )
        log.info(
            "experiment.stopped namespace=%s name=%s kept=%s serving=%s storage_uri=%s",
            namespace,
            name,
            keep,
            champion_name,
            storage_uri,
        )
        return {
            "name": name,
            "namespace": namespace,
            "kept": keep,
            "version": spec.version_of(keep),
            "serving": champion_name,
            "storage_uri": storage_uri,
            "deleted": deleted,
            "promotion": promotion,
        }

    def _promote_b(
        self, graph: dict[str, Any], spec: ExperimentSpec, champion_name: str, b_name: str, namespace: str
    ) -> dict[str, Any] | None:
        champion = self._get("InferenceService", champion_name, namespace)
        try:
            challenger = self._get("InferenceService", b_name, namespace)
        except NotFoundError:
            raise ClusterError(
                f"cannot keep B: its InferenceService {namespace}/{b_name} is gone; stop with --keep a"
            ) from None
        b_uri = challenger["spec"]["predictor"]["model"]["storageUri"]
        predictor = copy.deepcopy(champion["spec"]["predictor"])
        if predictor.get("model", {}).get("storageUri") == b_uri:
            return None  # already serving B's model (an earlier stop got this far)
        predictor["model"]["storageUri"] = b_uri
        predictor.pop("canaryTrafficPercent", None)  # the winner takes all of the champion's traffic
        meta = champion["metadata"]
        annotations = dict(meta.get("annotations") or {})
        annotations.pop(PREVIOUS_STORAGE_URI_ANNOTATION, None)  # the rollout records A's storageUri here
        body = {
            "apiVersion": champion.get("apiVersion"),
            "kind": "InferenceService",
            "metadata": {
                "name": champion_name,
                "namespace": namespace,
                "labels": dict(meta.get("labels") or {}),
                "annotations": annotations,
            },
            "spec": {"predictor": predictor},
        }
        triton_model = graph["metadata"]["annotations"].get(TRITON_MODEL_ANNOTATION) or spec.model
        result = self._rollout(triton_model).deploy(body)
        if not result.ok:
            raise ClusterError(
                f"B's model ({b_uri}) did not take over {namespace}/{champion_name}: {result.message}; "
                f"the experiment {graph['metadata']['name']!r} keeps running"
            )
        return result.to_dict()
