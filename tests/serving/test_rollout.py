"""Canary rollout through the REAL `kubernetes` client, tested against a local test double of the API server.

Not a real cluster: `k8s_double.KServeDouble` (127.0.0.1) stands in for the API server + a simplified KServe
controller (revisions, Ready conditions, traffic split), a Triton v2 endpoint per revision and Prometheus.
Time is a `FakeClock` shared by the double and the Rollout (its injected sleep and clock): a revision is
Ready after a fixed number of polls and timeouts count polls, so no machine is too slow or too fast for them.
The canary analysis sleeps on the same clock, so a 300 s window of checks takes no real time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client as k8s
from pydantic import ValidationError

from slipway.cli.deploy import deploy, rollout
from slipway.cluster.kserve import PREVIOUS_STORAGE_URI_ANNOTATION, build_inference_service
from slipway.cluster.prometheus import CanaryMargins, PrometheusClient, RevisionMetrics, judge_canary
from slipway.cluster.rollout import Rollout, RolloutResult, RolloutSettings, smoke_test_over_http
from slipway.core import images
from slipway.core.artifacts import ModelArtifact, TensorSpec
from slipway.core.config import DeployConfig
from slipway.core.errors import ClusterError, ConfigError, NotFoundError

try:
    from k8s_double import FakeClock, KServeDouble
except ImportError:  # tests/serving imported as a package
    from tests.serving.k8s_double import FakeClock, KServeDouble  # type: ignore[no-redef]

NS, NAME = "models", "mnist"
V1, V2 = "s3://models/mnist/v1", "s3://models/mnist/v2"
REV1, REV2 = f"{NAME}-predictor-00001", f"{NAME}-predictor-00002"
FAST = RolloutSettings(ready_timeout_s=5, poll_interval_s=0.02, request_timeout_s=5, analysis_s=0)

# stochastic: a threaded HTTP double; `make test-flaky` reruns these to show that they do not flake.
pytestmark = [pytest.mark.timeout(30), pytest.mark.stochastic]


def _body(uri: str, percent: int | None = 10, mode: str = "Knative") -> dict:
    return build_inference_service(
        NAME, NS, uri, "onnx", canary_traffic_percent=percent, deployment_mode=mode
    )  # type: ignore[arg-type]


def _rollout(api: k8s.CustomObjectsApi, double: KServeDouble, settings: RolloutSettings = FAST) -> Rollout:
    prometheus = PrometheusClient(double.url, window="1m", timeout_s=5)
    clock = double.clock
    assert isinstance(clock, FakeClock)
    return Rollout(
        api,
        settings,
        prometheus=prometheus,
        sleep=clock.sleep,
        clock=clock,
    )


def _metrics(double: KServeDouble, revision: str, *, rate: float, errors: float, p99: float) -> None:
    where = f'revision_name="{revision}"'
    double.prom_rules += [
        (("5xx", where), errors),
        (("histogram_quantile", where), p99),
        (("revision_request_count", where), rate),
    ]


def _traffic(double: KServeDouble) -> dict[str, int]:
    component = double.stored(NS, NAME)["status"]["components"]["predictor"]
    return {t["revisionName"]: t["percent"] for t in component["traffic"]}


def _deployed(api: k8s.CustomObjectsApi, double: KServeDouble) -> Rollout:
    ro = _rollout(api, double)
    assert ro.deploy(_body(V1)).outcome == "created"
    return ro


def test_create_first_revision_takes_all_traffic_and_is_smoke_tested(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    result = _rollout(api, double).deploy(_body(V1))
    assert result.outcome == "created" and result.ok
    assert result.status.ready and result.status.latest_ready_revision == REV1
    assert _traffic(double) == {REV1: 100}
    assert double.infer_calls == [REV1]
    assert (
        result.smoke is not None and result.smoke["output_shape"] == [1, 3] and result.smoke["model"] == NAME
    )
    method, _, ctype, sent = double.requests[1]
    assert (method, ctype) == ("POST", "application/json")
    assert "canaryTrafficPercent" not in sent["spec"]["predictor"]  # no stable revision to split with


def test_canary_update_splits_traffic_then_manual_promote(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock
) -> None:
    ro = _deployed(api, double)
    result = ro.deploy(_body(V2, percent=20), wait=False)
    assert result.outcome == "canary"
    ctype, patch = double.patches()[-1]
    assert ctype == "application/merge-patch+json"
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert patch["spec"]["predictor"]["model"]["storageUri"] == V2
    assert patch["metadata"]["annotations"][PREVIOUS_STORAGE_URI_ANNOTATION] == V1
    assert patch["metadata"]["resourceVersion"]
    clock.sleep(0.1)  # the canary revision's readiness delay passes
    status = ro.status(NAME, NS)
    assert status.canary_in_progress
    assert _traffic(double) == {REV2: 20, REV1: 80}
    assert status.revision_url(REV2) == f"{double.url}/revisions/{REV2}"
    with pytest.raises(ClusterError, match="already in progress"):
        ro.deploy(_body("s3://models/mnist/v3"))

    promoted = ro.promote(NAME, NS)
    assert promoted.outcome == "promoted"
    assert _traffic(double) == {REV2: 100}
    assert promoted.status.latest_rolledout_revision == REV2
    assert "canaryTrafficPercent" not in double.stored(NS, NAME)["spec"]["predictor"]
    with pytest.raises(ClusterError, match="nothing to promote"):
        ro.promote(NAME, NS)


def test_canary_within_margins_is_promoted_automatically(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro = _deployed(api, double)
    _metrics(double, REV2, rate=3.0, errors=0.004, p99=110.0)
    _metrics(double, REV1, rate=27.0, errors=0.002, p99=100.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "promoted", result.message
    assert result.verdict is not None and result.verdict.decision == "promote"
    assert _traffic(double) == {REV2: 100}
    assert REV2 in double.infer_calls  # the smoke test hit the canary's own tagged URL
    assert any(f'revision_name="{REV2}"' in q and 'namespace_name="models"' in q for q in double.prom_queries)
    assert any(f'revision_name="{REV1}"' in q for q in double.prom_queries)


def test_canary_with_worse_error_rate_is_rolled_back(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    ro = _deployed(api, double)
    _metrics(double, REV2, rate=3.0, errors=0.08, p99=100.0)
    _metrics(double, REV1, rate=27.0, errors=0.001, p99=100.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back" and not result.ok
    assert result.verdict is not None and "error rate 0.0800" in result.verdict.reasons[0]
    stored = double.stored(NS, NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == V1
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert PREVIOUS_STORAGE_URI_ANNOTATION not in stored["metadata"]["annotations"]
    assert _traffic(double)[REV1] == 100


def test_canary_with_worse_p99_is_rolled_back(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    ro = _deployed(api, double)
    _metrics(double, REV2, rate=3.0, errors=0.0, p99=180.0)
    _metrics(double, REV1, rate=27.0, errors=0.0, p99=100.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back"
    assert result.verdict is not None and len(result.verdict.reasons) == 1
    assert "p99 180.0 ms" in result.verdict.reasons[0]
    assert double.stored(NS, NAME)["spec"]["predictor"]["model"]["storageUri"] == V1
    assert _traffic(double)[REV1] == 100


def test_too_little_canary_traffic_holds_the_split(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    ro = _deployed(api, double)
    _metrics(double, REV2, rate=0.0, errors=0.0, p99=100.0)
    _metrics(double, REV1, rate=5.0, errors=0.0, p99=100.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "held"
    assert _traffic(double) == {REV2: 10, REV1: 90}


def test_timeout_waiting_for_ready_reports_conditions_and_rolls_back(
    api: k8s.CustomObjectsApi, double: KServeDouble, clock: FakeClock
) -> None:
    ro = _deployed(api, double)
    double.stuck_uris.add(V2)
    ro.settings = FAST.model_copy(update={"ready_timeout_s": 0.3})
    started = clock()
    with pytest.raises(ClusterError) as info:
        ro.deploy(_body(V2))
    assert clock() - started == pytest.approx(0.3)  # gave up at the timeout, neither before nor long after
    message = str(info.value)
    assert "timed out after 0.3s" in message and "Ready=Unknown (RevisionMissing" in message
    assert f"rolled back {NS}/{NAME} from {V2} to {V1}" in message
    assert double.stored(NS, NAME)["spec"]["predictor"]["model"]["storageUri"] == V1
    assert _traffic(double) == {REV1: 100}


def test_failed_revision_fails_fast_with_the_controller_reason(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro = _deployed(api, double)
    double.failing_uris[V2] = "Back-off pulling image"
    with pytest.raises(ClusterError, match=r"RevisionFailed.*Back-off pulling image"):
        ro.deploy(_body(V2))


def test_failed_smoke_test_rolls_back(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    ro = _deployed(api, double)
    double.broken_model_uris.add(V2)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back"
    assert "smoke test" in result.message and "unexpected shape" in result.message
    assert _traffic(double)[REV1] == 100


def test_standard_mode_refuses_canary_instead_of_pretending(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro = _rollout(api, double)
    ro.deploy(_body(V1, percent=None, mode="Standard"))
    unannotated = _body(V2, percent=10)
    del unannotated["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    with pytest.raises(ClusterError, match=r"deployment mode is Standard.*ignores it"):
        ro.deploy(unannotated)
    with pytest.raises(ConfigError, match="runs in Standard mode but Knative was requested"):
        ro.deploy(_body(V2, percent=10))
    assert double.patches() == []
    with pytest.raises(ClusterError, match="refusing promote"):
        ro.promote(NAME, NS)
    # a plain update (no canary) is allowed in Standard mode
    assert ro.deploy(_body(V2, percent=None, mode="Standard")).outcome == "updated"


def test_rollback_needs_a_recorded_previous_uri_and_missing_isvc_is_not_found(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro = _deployed(api, double)
    with pytest.raises(ClusterError, match="no previous storageUri recorded"):
        ro.rollback(NAME, NS)
    with pytest.raises(NotFoundError, match=r"HTTP 404.*not found"):
        ro.status("absent", NS)


def test_cli_deploy_status_and_errors(double: KServeDouble, clock: FakeClock, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": double.url}}],
                "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "double", "context": {"cluster": "double", "user": "tester"}}],
                "current-context": "double",
            }
        )
    )
    common = ["--name", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig), "--poll-s", "0.02"]
    runner = CliRunner()
    out = runner.invoke(deploy, [*common, "--storage-uri", V1, "--format", "onnx", "--no-wait"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["outcome"] == "created"
    clock.sleep(0.1)  # the revision's readiness delay passes
    out = runner.invoke(rollout, ["status", *common])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["latest_ready_revision"] == REV1

    out = runner.invoke(rollout, ["rollback", *common])
    assert out.exit_code == 1 and "no previous storageUri recorded" in out.output

    meta = tmp_path / "model.plan.meta.json"
    meta.write_text(
        ModelArtifact(
            file="model.plan",
            sha256="0" * 64,
            size_bytes=1,
            framework="tensorrt",
            precision="fp16",
            inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
            outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, 3])],
            tensorrt_version="8.6.1",
        ).model_dump_json()
    )
    args = [*common, "--storage-uri", V2, "--format", "tensorrt", "--artifact-metadata", str(meta)]
    out = runner.invoke(deploy, args)
    assert out.exit_code == 2
    assert "8.6.1" in out.output and images.TENSORRT_VERSION in out.output


def test_judge_canary_margins_and_missing_data() -> None:
    margins = CanaryMargins(
        max_error_rate_increase=0.01, max_p99_ratio=1.2, p99_tolerance_ms=5, min_request_rate=0.1
    )
    stable = RevisionMetrics("r1", 10.0, 0.01, 100.0)
    assert judge_canary(RevisionMetrics("r2", 1.0, 0.019, 124.9), stable, margins).decision == "promote"
    assert judge_canary(RevisionMetrics("r2", 1.0, 0.021, 100.0), stable, margins).decision == "rollback"
    assert judge_canary(RevisionMetrics("r2", 1.0, 0.0, 125.1), stable, margins).decision == "rollback"
    assert judge_canary(RevisionMetrics("r2", 0.05, 0.5, 999.0), stable, margins).decision == "inconclusive"
    no_latency = RevisionMetrics("r1", 10.0, math.nan, math.nan)
    assert judge_canary(RevisionMetrics("r2", 1.0, 0.0, 500.0), no_latency, margins).decision == "promote"


def test_prometheus_unreachable_is_a_clear_error() -> None:
    prometheus = PrometheusClient("http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(ClusterError, match=r"Prometheus at http://127\.0\.0\.1:9 unreachable"):
        prometheus.query("up")


# --- the analysis loop: a check every interval, rollback at the failure threshold -------------------------

INTERVAL = 30.0
FAILING, HEALTHY, NO_TRAFFIC = (3.0, 1.0), (3.0, 0.002), (0.0, 0.0)  # canary (req/s, error rate)


@dataclass
class Timeline:
    """When the smoke test passed, when each check queried Prometheus, when promote/rollback was called."""

    smoke_done_at: float = math.nan
    checks_at: list[float] = field(default_factory=list)
    decided_at: float = math.nan

    def check_offsets(self) -> list[float]:
        return [round(t - self.smoke_done_at, 6) for t in self.checks_at]

    def decided_after(self) -> float:
        return round(self.decided_at - self.smoke_done_at, 6)


def _analysing(
    api: k8s.CustomObjectsApi,
    double: KServeDouble,
    script: list[tuple[float, float]],
    prometheus: PrometheusClient | None = None,
    **settings: Any,
) -> tuple[Rollout, Timeline]:
    """A Rollout on the fake clock whose canary metrics follow `script`, one (req/s, error rate) per check
    (the last repeats): each sleep of one analysis interval sets what Prometheus answers at the next check."""
    clock = double.clock
    assert isinstance(clock, FakeClock)
    timeline = Timeline()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if seconds == INTERVAL:
            rate, errors = script[min(len(timeline.checks_at), len(script) - 1)]
            double.prom_rules = []
            _metrics(double, REV2, rate=rate, errors=errors, p99=100.0)
            _metrics(double, REV1, rate=27.0, errors=0.001, p99=100.0)
            timeline.checks_at.append(clock())

    def smoke(url: str, model: str) -> dict[str, Any]:
        result = smoke_test_over_http(url, model)
        timeline.smoke_done_at = clock()
        return result

    ro = Rollout(
        api,
        FAST.model_copy(update={"analysis_interval_s": INTERVAL, **settings}),
        prometheus=prometheus or PrometheusClient(double.url, window="1m", timeout_s=5),
        smoke_test=smoke,
        sleep=sleep,
        clock=clock,
    )
    for decision in ("promote", "rollback"):
        act = getattr(ro, decision)

        def timed(*args: Any, _act: Any = act, **kwargs: Any) -> RolloutResult:
            timeline.decided_at = clock()
            return _act(*args, **kwargs)

        setattr(ro, decision, timed)
    assert ro.deploy(_body(V1)).outcome == "created"
    return ro, timeline


def _canary_error_queries(double: KServeDouble) -> int:
    return sum(1 for q in double.prom_queries if f'revision_name="{REV2}"' in q and "5xx" in q)


def test_canary_failing_every_request_is_rolled_back_at_the_second_check(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [FAILING], analysis_s=300.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back" and not result.ok
    assert timeline.check_offsets() == [INTERVAL, 2 * INTERVAL]  # not the 300 s window
    assert timeline.decided_after() == 2 * INTERVAL
    assert _canary_error_queries(double) == 2
    assert _traffic(double)[REV1] == 100 and _traffic(double).get(REV2, 0) == 0
    stored = double.stored(NS, NAME)["spec"]["predictor"]
    assert stored["model"]["storageUri"] == V1 and stored["canaryTrafficPercent"] == 0
    analysis = result.analysis
    assert analysis is not None
    assert (analysis.checks, analysis.passed, analysis.failed) == (2, 0, 2)
    assert analysis.elapsed_s == pytest.approx(2 * INTERVAL)
    assert analysis.failures[1].startswith("check 2 at 60s: error rate 1.0000")
    assert "2 failed checks reached the threshold of 2 after 2 checks in 60s" in result.message
    assert result.verdict is not None and result.verdict.decision == "rollback"
    assert json.loads(json.dumps(result.to_dict()))["analysis"]["failed"] == 2


def test_healthy_canary_is_promoted_after_window_over_interval_checks(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [HEALTHY], analysis_s=300.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "promoted", result.message
    assert timeline.check_offsets() == [INTERVAL * k for k in range(1, 11)]
    assert timeline.decided_after() == 300.0
    assert _canary_error_queries(double) == 10
    assert _traffic(double) == {REV2: 100}
    assert result.analysis is not None
    assert (result.analysis.checks, result.analysis.passed, result.analysis.failed) == (10, 10, 0)
    assert result.message.startswith("canary analysis passed: 10 checks in 300s")


def test_one_transient_failure_below_the_threshold_is_still_promoted(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [HEALTHY, FAILING, HEALTHY], analysis_s=90.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "promoted", result.message
    # 3 passing checks fill the 90 s window; the failed one does not count towards it (Flagger's rule)
    assert timeline.check_offsets() == [30.0, 60.0, 90.0, 120.0]
    assert _traffic(double) == {REV2: 100}
    analysis = result.analysis
    assert analysis is not None and (analysis.checks, analysis.passed, analysis.failed) == (4, 3, 1)
    assert len(analysis.failures) == 1 and analysis.failures[0].startswith("check 2 at 60s: error rate")


def test_failed_checks_count_in_total_not_in_a_row(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    ro, timeline = _analysing(api, double, [FAILING, HEALTHY, FAILING, HEALTHY], analysis_s=150.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back"
    assert timeline.decided_after() == 90.0
    assert result.analysis is not None and (result.analysis.passed, result.analysis.failed) == (1, 2)
    assert _traffic(double)[REV1] == 100 and _traffic(double).get(REV2, 0) == 0


def test_checks_without_canary_traffic_neither_pass_nor_fail_and_hold_the_split(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [NO_TRAFFIC], analysis_s=90.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "held"
    assert timeline.check_offsets() == [30.0, 60.0, 90.0]
    assert _traffic(double) == {REV2: 10, REV1: 90}
    assert result.analysis is not None
    assert (result.analysis.no_data, result.analysis.failed, result.analysis.passed) == (3, 0, 0)
    assert "no check could judge the canary in 90s" in result.message and "req/s" in result.message


def test_a_window_with_some_traffic_is_judged_on_the_checks_that_had_it(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [NO_TRAFFIC, HEALTHY], analysis_s=90.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "promoted", result.message
    assert timeline.decided_after() == 90.0  # a check without traffic spends the window
    assert result.analysis is not None and (result.analysis.no_data, result.analysis.passed) == (1, 2)


def test_on_inconclusive_rollback_counts_no_traffic_as_a_failed_check(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    ro, timeline = _analysing(api, double, [NO_TRAFFIC], analysis_s=300.0, on_inconclusive="rollback")
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back"
    assert timeline.decided_after() == 2 * INTERVAL
    assert result.analysis is not None and (result.analysis.no_data, result.analysis.failed) == (2, 2)
    assert "req/s" in result.analysis.failures[0]
    assert _traffic(double)[REV1] == 100 and _traffic(double).get(REV2, 0) == 0


def test_prometheus_not_answering_fails_the_checks(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    down = PrometheusClient("http://127.0.0.1:9", timeout_s=1)
    ro, timeline = _analysing(api, double, [HEALTHY], prometheus=down, analysis_s=300.0)
    result = ro.deploy(_body(V2))
    assert result.outcome == "rolled_back"
    assert timeline.decided_after() == 2 * INTERVAL
    assert result.analysis is not None and "Prometheus at http://127.0.0.1:9 unreachable" in result.message
    assert _traffic(double)[REV1] == 100 and _traffic(double).get(REV2, 0) == 0


def test_analysis_settings_are_validated_and_default_from_deploy_config() -> None:
    with pytest.raises(ValidationError, match="analysis_interval_s"):
        RolloutSettings(analysis_interval_s=0)
    with pytest.raises(ValidationError, match="failure_threshold"):
        RolloutSettings(failure_threshold=0)
    with pytest.raises(ValidationError, match="failure_threshold"):
        DeployConfig(failure_threshold=0)
    deploy_cfg, settings = DeployConfig(), RolloutSettings()
    for key in ("analysis_s", "analysis_interval_s", "failure_threshold"):
        assert getattr(deploy_cfg, key) == getattr(settings, key), key
    assert (settings.analysis_interval_s, settings.failure_threshold) == (30.0, 2)


def test_explainer_follows_the_predictor_on_deploy_and_on_rollback(
    api: k8s.CustomObjectsApi, double: KServeDouble
) -> None:
    from slipway.cluster.kserve import STORAGE_URI_ENV, ExplainerSettings

    def body(uri: str) -> dict:
        return build_inference_service(
            NAME, NS, uri, "onnx", canary_traffic_percent=10, explainer=ExplainerSettings()
        )

    def explainer_uri() -> str:
        env = double.stored(NS, NAME)["spec"]["explainer"]["containers"][0]["env"]
        return next(e["value"] for e in env if e["name"] == STORAGE_URI_ENV)

    ro = _rollout(api, double)
    assert ro.deploy(body(V1)).outcome == "created"
    assert explainer_uri() == V1
    assert ro.deploy(body(V2), wait=False).outcome == "canary"
    assert explainer_uri() == V2  # the explainer reads the new version's checkpoint with the canary
    assert ro.rollback(NAME, NS, wait=False).outcome == "rolled_back"
    assert explainer_uri() == V1  # and goes back with the predictor
    assert double.stored(NS, NAME)["spec"]["predictor"]["model"]["storageUri"] == V1


def test_a_body_without_an_explainer_removes_it(api: k8s.CustomObjectsApi, double: KServeDouble) -> None:
    from slipway.cluster.kserve import ExplainerSettings

    ro = _rollout(api, double)
    with_explainer = build_inference_service(NAME, NS, V1, "onnx", explainer=ExplainerSettings())
    assert ro.deploy(with_explainer).outcome == "created"
    assert ro.deploy(_body(V2, percent=None), wait=False).outcome == "updated"
    assert "explainer" not in double.stored(NS, NAME)["spec"]
