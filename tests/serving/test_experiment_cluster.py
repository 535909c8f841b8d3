"""A/B experiments in the cluster: the objects, checked against KServe's generated models and its webhook's
rules; start / get / health / stop through the REAL `kubernetes` client against the local API test double.

Not a real cluster: `k8s_double.KServeDouble` (127.0.0.1) stands in for the API server, a simplified KServe
controller (no InferenceGraph router runs), a Triton v2 endpoint per revision and Prometheus. Time is a
`FakeClock` shared by the double and the waits, as in test_rollout.py.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from slipway.cluster.experiment import (
    SPEC_ANNOTATION,
    TRITON_MODEL_ANNOTATION,
    ClusterExperiments,
    build_experiment_objects,
    spec_of,
    split_weights,
    validate_inference_graph,
)
from slipway.cluster.kserve import (
    PREVIOUS_STORAGE_URI_ANNOTATION,
    build_inference_service,
    validate_inference_service,
)
from slipway.cluster.prometheus import PrometheusClient
from slipway.cluster.rollout import Rollout, RolloutSettings
from slipway.core.errors import ClusterError, ConfigError, NotFoundError
from slipway.experiments.spec import ExperimentSpec, Health, parse_spec

try:
    from k8s_double import FakeClock, KServeDouble
except ImportError:  # tests/serving imported as a package
    from tests.serving.k8s_double import FakeClock, KServeDouble  # type: ignore[no-redef]

NS, CHAMPION, EXPERIMENT, CHALLENGER = "models", "mnist", "mnist-ab", "mnist-ab-b"
V1, V2 = "s3://models/mnist/v1", "s3://models/mnist/v2"
LOGGER = "http://drift-monitor.models.svc.cluster.local/events"
SERVICE_ACCOUNT = "slipway-serving"
STARTED_AT = 1_750_000_000.0
FAST = RolloutSettings(ready_timeout_s=5, poll_interval_s=0.02, request_timeout_s=5, analysis_s=0)
REPO_ROOT = Path(__file__).resolve().parents[2]

# stochastic: a threaded HTTP double, as test_rollout.py.
pytestmark = [pytest.mark.timeout(30), pytest.mark.stochastic]


def _spec(**overrides: Any) -> ExperimentSpec:
    data = {"name": EXPERIMENT, "model": "mnist", "a": "1", "b": "2", "b_share": 0.3, **overrides}
    return parse_spec(data)


def _objects(spec: ExperimentSpec | None = None, **overrides: Any) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"logger_url": LOGGER, "service_account": SERVICE_ACCOUNT, **overrides}
    return build_experiment_objects(spec or _spec(), NS, CHAMPION, V2, **kwargs)


@pytest.fixture
def champion(api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock) -> dict[str, Any]:
    """The champion, deployed by the rollout as `slipway deploy` would."""
    body = build_inference_service(
        CHAMPION, NS, V1, "onnx", logger_url=LOGGER, service_account=SERVICE_ACCOUNT
    )
    assert Rollout(api, FAST, sleep=clock.sleep, clock=clock).deploy(body).outcome == "created"
    return body


def _experiments(api: Any, double: KServeDouble, *, prometheus: bool = True) -> ClusterExperiments:
    clock = double.clock
    assert isinstance(clock, FakeClock)
    return ClusterExperiments(
        api,
        PrometheusClient(double.url, timeout_s=5) if prometheus else None,
        settings=FAST,
        sleep=clock.sleep,
        clock=clock,
        now=lambda: STARTED_AT,
    )


def _calls(double: KServeDouble) -> list[tuple[str, str]]:
    """(method, last path segments) of every API request, in order."""
    return [(method, "/".join(path.split("/")[-2:])) for method, path, _, _ in double.requests]


# --- the objects -------------------------------------------------------------------------------------------


def test_objects_render_validate_as_kserve_models_and_match_the_champion() -> None:
    challenger, graph = _objects()
    isvc_model = validate_inference_service(challenger)
    assert type(isvc_model).__name__ == "V1beta1InferenceService"
    assert isvc_model.spec.predictor.model.storage_uri == V2
    graph_model = validate_inference_graph(graph)
    assert type(graph_model).__name__ == "V1alpha1InferenceGraph"
    root = graph_model.spec.nodes["root"]
    assert type(root).__name__ == "V1alpha1InferenceRouter" and root.router_type == "Splitter"
    assert [(s.name, s.service_name, s.weight) for s in root.steps] == [
        ("a", CHAMPION, 70),
        ("b", CHALLENGER, 30),
    ]

    # B is the champion's InferenceService but for its name, labels and storageUri: same runtime, logger,
    # service account, resources and mode, because both come from the same builder with the same settings.
    champion = build_inference_service(
        CHAMPION, NS, V1, "onnx", logger_url=LOGGER, service_account=SERVICE_ACCOUNT
    )
    a_predictor, b_predictor = copy.deepcopy(champion["spec"]["predictor"]), challenger["spec"]["predictor"]
    a_predictor["model"]["storageUri"] = V2
    assert b_predictor == a_predictor
    assert challenger["metadata"]["annotations"] == champion["metadata"]["annotations"]

    assert challenger["metadata"]["name"] == CHALLENGER
    for obj in (challenger, graph):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "slipway"
        assert labels["slipway.dev/experiment"] == EXPERIMENT
        assert obj["metadata"]["namespace"] == NS
    assert challenger["metadata"]["labels"]["slipway.dev/variant"] == "b"
    assert graph["metadata"]["name"] == EXPERIMENT
    assert graph["metadata"]["annotations"]["slipway.dev/variant-a"] == CHAMPION
    assert graph["metadata"]["annotations"]["slipway.dev/variant-b"] == CHALLENGER
    assert spec_of(graph) == _spec()  # the annotation round-trips the whole spec
    assert json.loads(graph["metadata"]["annotations"][SPEC_ANNOTATION])["guardrails"]["min_requests"] == 100


@pytest.mark.parametrize(
    ("b_share", "weights"),
    [
        (0.5, (50, 50)),
        (0.3, (70, 30)),
        (0.333, (67, 33)),
        (0.125, (88, 12)),
        (0.01, (99, 1)),
        (0.99, (1, 99)),
    ],
)
def test_weights_are_whole_percents_summing_to_100(b_share: float, weights: tuple[int, int]) -> None:
    assert split_weights(b_share) == weights
    steps = _objects(_spec(b_share=b_share))[1]["spec"]["nodes"]["root"]["steps"]
    assert [s["weight"] for s in steps] == list(weights)
    assert all(type(s["weight"]) is int for s in steps)


@pytest.mark.parametrize("b_share", [0.004, 0.005, 0.996])
def test_a_share_that_rounds_to_0_or_100_is_refused_naming_b_share(b_share: float) -> None:
    with pytest.raises(ConfigError, match=r"experiment\.b_share: .* whole percent"):
        _objects(_spec(b_share=b_share))


def test_bad_spec_and_names_are_errors_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"experiment\.b_share: .*less than 1"):
        build_experiment_objects(
            {"name": EXPERIMENT, "model": "m", "a": "1", "b": "2", "b_share": 1.5}, NS, "m", V2
        )
    with pytest.raises(ConfigError, match=r"experiment\.bshare: Extra inputs"):
        build_experiment_objects(
            {"name": EXPERIMENT, "model": "m", "a": "1", "b": "2", "bshare": 0.2}, NS, "m", V2
        )
    with pytest.raises(ConfigError, match=r"experiment\.name: '9lives' must start with a letter"):
        _objects(_spec(name="9lives"))
    with pytest.raises(ConfigError, match=r"experiment\.name: 'mnist' clashes"):
        _objects(_spec(name=CHAMPION))
    with pytest.raises(ConfigError, match=r"champion_isvc: 'Mnist_v1'"):
        build_experiment_objects(_spec(), NS, "Mnist_v1", V2)
    with pytest.raises(ConfigError, match="local path"):
        build_experiment_objects(_spec(), NS, CHAMPION, "/tmp/model")


def _graph_with(mutate: Any) -> dict[str, Any]:
    graph = copy.deepcopy(_objects()[1])
    mutate(graph["spec"]["nodes"]["root"])
    return graph


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda n: n.update(routertype=n.pop("routerType")),
            r"spec\.nodes\.root: unknown field 'routertype'.*'routerType'",
        ),
        (lambda n: n["steps"][1].update(weight="30"), r"spec\.nodes\.root\.steps\[1\]\.weight: expected int"),
        (lambda n: n["steps"][1].update(weight=20), r"spec\.nodes\.root\.steps\[\]\.weight: .*sum to 100"),
        (lambda n: n["steps"][1].pop("weight"), r"spec\.nodes\.root\.steps\[\]\.weight"),
        (lambda n: n.update(routerType="Split"), r"spec\.nodes\.root\.routerType: 'Split' is not one of"),
        (lambda n: n["steps"][1].update(serviceUrl="http://x/v2"), r"steps\[1\]: needs exactly one of"),
        (lambda n: n["steps"][1].update(name="a"), r"steps\[1\]\.name: 'a' is used twice"),
    ],
)
def test_graph_validation_names_the_path(mutate: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_inference_graph(_graph_with(mutate))


def test_graph_without_root_node_and_spec_annotation_problems() -> None:
    graph = _objects()[1]
    graph["spec"]["nodes"] = {"start": graph["spec"]["nodes"]["root"]}
    with pytest.raises(ConfigError, match=r"spec\.nodes: needs a node named 'root'"):
        validate_inference_graph(graph)
    bare = _objects()[1]
    del bare["metadata"]["annotations"][SPEC_ANNOTATION]
    with pytest.raises(ConfigError, match=r"annotation slipway\.dev/experiment-spec: missing"):
        spec_of(bare)
    tampered = _objects()[1]
    tampered["metadata"]["annotations"][SPEC_ANNOTATION] = json.dumps({**_spec().model_dump(), "b_share": 2})
    with pytest.raises(ConfigError, match=r"experiment-spec\.b_share"):
        spec_of(tampered)


def test_kubectl_parses_the_rendered_objects(tmp_path: Path) -> None:
    """The real kubectl reads them back unchanged (`kubectl kustomize`, as tests/charts renders manifests).

    Not a server-side check: kubectl's client-side dry run needs API discovery from a server, which no machine
    here has, and KServe's own models are the schema check (above)."""
    kubectl = shutil.which("kubectl") or str(REPO_ROOT / ".tools" / "bin" / "kubectl")
    if not Path(kubectl).exists():
        pytest.skip("kubectl is not installed (`make tools` puts it in .tools/bin)")
    objects = _objects()
    names = []
    for i, obj in enumerate(objects):
        names.append(f"{i}.yaml")
        (tmp_path / names[-1]).write_text(yaml.safe_dump(obj))
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({"resources": names}))
    done = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    key = lambda o: o["kind"]  # noqa: E731
    assert sorted(rendered, key=key) == sorted(objects, key=key)


# --- start / get / stop against the API double -------------------------------------------------------------


def test_dry_run_returns_the_objects_and_calls_nothing(double: KServeDouble) -> None:
    class NoApi:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"dry run called the API: {name}")

    objects = _objects()
    challenger, graph = _experiments(NoApi(), double).start(objects, dry_run=True)
    assert challenger == objects[0] and graph["metadata"] == objects[1]["metadata"]
    steps = {step["name"]: step for step in graph["spec"]["nodes"]["root"]["steps"]}
    namespace, model = (
        graph["metadata"]["namespace"],
        objects[1]["metadata"]["annotations"][TRITON_MODEL_ANNOTATION],
    )
    for variant, service in (("a", objects[1]["spec"]["nodes"]["root"]["steps"][0]["serviceName"]),
                             ("b", challenger["metadata"]["name"])):  # fmt: skip
        url = f"http://{service}.{namespace}.svc.cluster.local/v2/models/{model}/infer"
        assert steps[variant] == {"name": variant, "serviceUrl": url, "weight": steps[variant]["weight"]}
    assert double.requests == []


def test_start_creates_a_smoke_tested_challenger_then_the_splitting_graph(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    exps = _experiments(api, double)
    double.requests.clear()
    created_isvc, created_graph = exps.start(_objects())

    assert (
        created_isvc["metadata"]["name"] == CHALLENGER
        and created_isvc["status"]["conditions"][-1]["status"] == "True"
    )
    assert f"{CHALLENGER}-predictor-00001" in double.infer_calls  # B was smoke-tested before taking traffic
    posts = [call for call in _calls(double) if call[0] == "POST"]
    assert posts == [("POST", f"{NS}/inferenceservices"), ("POST", f"{NS}/inferencegraphs")]  # B first

    stored = double.stored_graph(NS, EXPERIMENT)
    assert stored is not None and stored == created_graph
    steps = stored["spec"]["nodes"]["root"]["steps"]
    # Each step calls Triton's model (spec.model) at the InferenceService's cluster-local address; KServe's own
    # serviceName resolution would have asked B for a model named "mnist-ab-b".
    assert steps == [
        {
            "name": "a",
            "serviceUrl": "http://mnist.models.svc.cluster.local/v2/models/mnist/infer",
            "weight": 70,
        },
        {
            "name": "b",
            "serviceUrl": "http://mnist-ab-b.models.svc.cluster.local/v2/models/mnist/infer",
            "weight": 30,
        },
    ]
    assert exps.get(EXPERIMENT, NS) == _spec().model_copy(update={"started_at": STARTED_AT})
    assert exps.url(EXPERIMENT, NS) == f"{double.url}/graphs/{NS}/{EXPERIMENT}"
    assert double.stored(NS, CHAMPION)["spec"]["predictor"]["model"]["storageUri"] == V1  # A untouched


def test_start_refuses_a_running_experiment_a_missing_champion_and_a_leftover_challenger(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    exps = _experiments(api, double)
    exps.start(_objects())
    with pytest.raises(
        ClusterError, match=r"'mnist-ab' is already running in namespace models.*stop it first"
    ):
        exps.start(_objects())

    other = build_experiment_objects(_spec(name="other"), NS, "absent", V2)
    with pytest.raises(NotFoundError, match=r"champion InferenceService models/absent not found"):
        exps.start(other)

    exps.stop(EXPERIMENT, NS, "a")
    leftover = build_inference_service(CHALLENGER, NS, V2, "onnx")
    api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", leftover)
    with pytest.raises(ClusterError, match=r"models/mnist-ab-b already exists"):
        exps.start(_objects())
    assert double.stored_graph(NS, EXPERIMENT) is None


def test_a_challenger_that_fails_is_deleted_again_and_no_graph_is_created(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    double.failing_uris[V2] = "model load failed: missing config.pbtxt"
    with pytest.raises(ClusterError) as info:
        _experiments(api, double).start(_objects())
    message = str(info.value)
    assert "not started" in message and "missing config.pbtxt" in message
    assert "mnist-ab-b was deleted again" in message and "models/mnist serves as before" in message
    assert not double.exists(NS, CHALLENGER)
    assert double.stored_graph(NS, EXPERIMENT) is None


def test_stop_keep_a_deletes_the_graph_and_the_challenger_and_leaves_a_alone(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    exps = _experiments(api, double)
    exps.start(_objects())
    double.requests.clear()
    result = exps.stop(EXPERIMENT, NS, "a")
    assert result == {
        "name": EXPERIMENT,
        "namespace": NS,
        "kept": "a",
        "version": "1",
        "serving": CHAMPION,
        "storage_uri": V1,
        "deleted": [f"InferenceGraph/{EXPERIMENT}", f"InferenceService/{CHALLENGER}"],
        "promotion": None,
    }
    assert double.patches() == []
    assert ("DELETE", f"inferencegraphs/{EXPERIMENT}") in _calls(double)
    assert ("DELETE", f"inferenceservices/{CHALLENGER}") in _calls(double)
    assert double.stored_graph(NS, EXPERIMENT) is None and not double.exists(NS, CHALLENGER)
    with pytest.raises(NotFoundError, match=r"no experiment 'mnist-ab' in namespace models"):
        exps.get(EXPERIMENT, NS)
    with pytest.raises(NotFoundError, match="no experiment"):
        exps.stop(EXPERIMENT, NS, "a")


def test_stop_keep_b_points_the_champion_at_bs_storage_uri_then_cleans_up(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any], clock: FakeClock
) -> None:
    exps = _experiments(api, double)
    exps.start(_objects())
    double.requests.clear()
    result = exps.stop(EXPERIMENT, NS, "b")

    ctype, patch = double.patches()[0]  # patched the way the rollout patches: merge patch with a precondition
    assert ctype == "application/merge-patch+json"
    assert patch["spec"]["predictor"]["model"]["storageUri"] == V2
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] is None
    assert patch["spec"]["predictor"]["logger"] == {"mode": "all", "url": LOGGER}
    assert patch["metadata"]["annotations"][PREVIOUS_STORAGE_URI_ANNOTATION] == V1
    assert patch["metadata"]["resourceVersion"]
    calls = _calls(double)
    assert calls.index(("PATCH", f"inferenceservices/{CHAMPION}")) < calls.index(
        ("DELETE", f"inferencegraphs/{EXPERIMENT}")
    )  # the winner serves under A's name before the graph goes

    assert result["kept"] == "b" and result["version"] == "2" and result["storage_uri"] == V2
    assert result["promotion"]["outcome"] == "updated" and result["promotion"]["ok"]
    assert f"{CHAMPION}-predictor-00002" in double.infer_calls  # the champion's new revision was smoke-tested
    assert double.stored(NS, CHAMPION)["spec"]["predictor"]["model"]["storageUri"] == V2
    assert double.stored_graph(NS, EXPERIMENT) is None and not double.exists(NS, CHALLENGER)

    # A stays one command away: the rollout's rollback restores the storageUri recorded before the swap.
    rolled = Rollout(api, FAST, sleep=clock.sleep, clock=clock).rollback(CHAMPION, NS)
    assert rolled.status.storage_uri == V1


def test_stop_keep_b_that_fails_to_serve_rolls_back_and_keeps_the_experiment(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    exps = _experiments(api, double)
    exps.start(_objects())
    double.broken_model_uris.add(V2)  # B's model now fails inference: the champion's smoke test catches it
    with pytest.raises(
        ClusterError, match=r"did not take over models/mnist: smoke test failed.*keeps running"
    ):
        exps.stop(EXPERIMENT, NS, "b")
    assert double.stored(NS, CHAMPION)["spec"]["predictor"]["model"]["storageUri"] == V1
    assert double.stored_graph(NS, EXPERIMENT) is not None and double.exists(NS, CHALLENGER)
    with pytest.raises(ConfigError, match=r"keep: expected 'a' or 'b', got 'c'"):
        exps.stop(EXPERIMENT, NS, "c")  # type: ignore[arg-type]


def test_api_errors_are_mapped_like_the_rollout() -> None:
    config = k8s.Configuration()
    config.host = "http://127.0.0.1:9"
    exps = ClusterExperiments(k8s.CustomObjectsApi(k8s.ApiClient(config)), settings=FAST)
    with pytest.raises(ClusterError, match=r"get InferenceGraph models/mnist-ab: API server unreachable"):
        exps.get(EXPERIMENT, NS)


# --- health from Prometheus --------------------------------------------------------------------------------


def test_health_per_variant_from_prometheus(
    api: k8s.CustomObjectsApi, double: KServeDouble, champion: dict[str, Any]
) -> None:
    exps = _experiments(api, double)
    exps.start(_objects())
    for isvc, requests, errors, p99 in ((CHAMPION, 1000.4, 3.0, 42.5), (CHALLENGER, 430.0, 22.0, None)):
        where = f'service_name="{isvc}-predictor"'
        double.prom_rules.append(((where, 'response_code!="200"'), errors))
        if p99 is not None:
            double.prom_rules.append(((where, "histogram_quantile"), p99))
        double.prom_rules.append(((where, "revision_request_count"), requests))

    health = exps.health(EXPERIMENT, NS, 600)
    assert health == {"a": Health(1000, 3, 42.5), "b": Health(430, 22, None)}
    assert health["b"].error_rate == pytest.approx(22 / 430)
    queries = double.prom_queries
    assert len(queries) == 6 and all("[600s]" in q and 'namespace_name="models"' in q for q in queries)
    assert sum(f'service_name="{CHALLENGER}-predictor"' in q for q in queries) == 3

    with pytest.raises(ConfigError, match="window_s: expected at least 1 second"):
        exps.health(EXPERIMENT, NS, 0)
    with pytest.raises(ConfigError, match="no Prometheus configured"):
        _experiments(api, double, prometheus=False).health(EXPERIMENT, NS, 60)
    with pytest.raises(NotFoundError, match="no experiment 'absent'"):
        exps.health("absent", NS, 60)
