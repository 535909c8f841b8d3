# Over 500 lines: one state machine (deploy, wait, smoke-test, analyse, promote or roll back) over one status
# model.
"""Canary rollout of a Triton InferenceService: deploy, wait, smoke-test, judge, then promote or roll back.

Talks to the API server through the `kubernetes` client's CustomObjectsApi (serving.kserve.io/v1beta1
inferenceservices). Canary traffic splitting uses `spec.predictor.canaryTrafficPercent`, which KServe
implements with Knative revisions only: in Standard (RawDeployment) mode KServe ignores it, so a canary is
refused there instead of silently sending 100% of traffic to the new model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from slipway.cluster.kserve import (
    DEPLOYMENT_MODE_ANNOTATION,
    KNATIVE_MODES,
    KSERVE_GROUP,
    KSERVE_PLURAL,
    KSERVE_VERSION,
    PREVIOUS_STORAGE_URI_ANNOTATION,
    STORAGE_URI_ENV,
    deployment_mode_of,
)
from slipway.cluster.kube import api_error
from slipway.cluster.prometheus import CanaryMargins, CanaryVerdict, PrometheusClient, judge_canary
from slipway.cluster.retry import call_with_retries
from slipway.core.errors import ClusterError, ConfigError, NotFoundError, SlipwayError

log = logging.getLogger(__name__)

SmokeTest = Callable[[str, str], dict[str, Any]]
Outcome = Literal["created", "updated", "canary", "promoted", "rolled_back", "held"]
CheckResult = Literal["passed", "failed", "no_data"]


class RolloutSettings(BaseModel):
    """Timeouts and gates of one rollout; every wait is bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ready_timeout_s: float = Field(default=600.0, gt=0, description="new revision must be Ready within this")
    poll_interval_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0, description="per API-server request")
    analysis_s: float = Field(
        default=300.0,
        ge=0,
        description="analysis window: passing checks needed = this / interval, rounded up, at least one",
    )
    analysis_interval_s: float = Field(default=30.0, gt=0, description="seconds between canary checks")
    failure_threshold: int = Field(
        default=2, ge=1, description="failed checks, in total (not in a row), that roll the canary back"
    )
    margins: CanaryMargins = Field(default_factory=CanaryMargins)
    on_inconclusive: Literal["hold", "rollback", "promote"] = Field(
        default="hold",
        description="a check with too little canary traffic: 'rollback' counts it as failed (Flagger); "
        "'hold'/'promote' count it as neither, and decide a window in which no check could judge",
    )
    triton_model: str | None = Field(default=None, description="model name inside the Triton repository")
    smoke_url: str | None = Field(default=None, description="override the canary URL (e.g. a port-forward)")


@dataclass(frozen=True)
class RolloutStatus:
    """What the InferenceService says about its revisions and traffic, flattened for people and code."""

    name: str
    namespace: str
    deployment_mode: str | None
    ready: bool
    reason: str | None
    message: str | None
    storage_uri: str | None
    previous_storage_uri: str | None
    canary_traffic_percent: int | None
    generation: int
    observed_generation: int
    url: str | None
    latest_created_revision: str | None
    latest_ready_revision: str | None
    latest_rolledout_revision: str | None
    traffic: list[dict[str, Any]] = field(default_factory=list)

    @property
    def canary_in_progress(self) -> bool:
        """A split between a canary and the rolled-out revision is active (0 < percent < 100)."""
        pct = self.canary_traffic_percent
        return pct is not None and 0 < pct < 100

    def revision_url(self, revision: str | None) -> str | None:
        for entry in self.traffic:
            if entry.get("revisionName") == revision and entry.get("url"):
                return str(entry["url"])
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["canary_in_progress"] = self.canary_in_progress
        return data

    @classmethod
    def from_isvc(cls, isvc: dict[str, Any]) -> RolloutStatus:
        meta = isvc.get("metadata") or {}
        predictor = ((isvc.get("spec") or {}).get("predictor")) or {}
        status = isvc.get("status") or {}
        component = ((status.get("components") or {}).get("predictor")) or {}
        ready = _condition(status, "Ready")
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            deployment_mode=deployment_mode_of(isvc),
            ready=(ready or {}).get("status") == "True",
            reason=(ready or {}).get("reason"),
            message=(ready or {}).get("message"),
            storage_uri=(predictor.get("model") or {}).get("storageUri"),
            previous_storage_uri=(meta.get("annotations") or {}).get(PREVIOUS_STORAGE_URI_ANNOTATION),
            canary_traffic_percent=predictor.get("canaryTrafficPercent"),
            generation=int(meta.get("generation", 0)),
            observed_generation=int(status.get("observedGeneration", 0)),
            url=status.get("url") or component.get("url"),
            latest_created_revision=component.get("latestCreatedRevision"),
            latest_ready_revision=component.get("latestReadyRevision"),
            latest_rolledout_revision=component.get("latestRolledoutRevision"),
            traffic=list(component.get("traffic") or []),
        )


@dataclass(frozen=True)
class WaitProgress:
    """One poll of a bounded wait (readiness, traffic, the canary analysis), for a progress display."""

    name: str
    namespace: str
    what: str  # what the rollout waits for
    elapsed_s: float
    limit_s: float  # the wait's timeout; for the analysis, its longest possible run
    condition: str  # what it sees now: the InferenceService's conditions and traffic, or the checks' tally

    def line(self) -> str:
        return (
            f"{self.namespace}/{self.name}: waiting for {self.what}, {self.elapsed_s:.0f}s of at most "
            f"{self.limit_s:.0f}s: {self.condition}"
        )


ProgressCallback = Callable[[WaitProgress], None]


@dataclass
class CanaryAnalysis:
    """Tally of the checks run on one canary, so the step and the CLI report how the decision came about."""

    interval_s: float
    required_passes: int
    failure_threshold: int
    checks: int = 0
    passed: int = 0
    failed: int = 0
    no_data: int = 0
    elapsed_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def window_done(self) -> bool:
        """Checks that did not fail spend the window; failed ones do not (in Flagger they do not advance)."""
        return self.checks - self.failed >= self.required_passes


@dataclass
class RolloutResult:
    """What a rollout step did and why; `ok` is False when the new model is not serving as asked."""

    outcome: Outcome
    status: RolloutStatus
    message: str
    verdict: CanaryVerdict | None = None
    smoke: dict[str, Any] | None = None
    analysis: CanaryAnalysis | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("created", "updated", "canary", "promoted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "ok": self.ok,
            "message": self.message,
            "status": self.status.to_dict(),
            "verdict": _jsonable(asdict(self.verdict)) if self.verdict else None,
            "smoke": self.smoke,
            "analysis": asdict(self.analysis) if self.analysis else None,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _conditions_summary(isvc: dict[str, Any]) -> str:
    conds = (isvc.get("status") or {}).get("conditions") or []
    parts = []
    for c in conds:
        text = f"{c.get('type')}={c.get('status')}"
        if c.get("reason") or c.get("message"):
            text += f" ({c.get('reason') or ''}: {c.get('message') or ''})"
        parts.append(text)
    return "; ".join(parts) or "no conditions reported yet"


def _progress_condition(isvc: dict[str, Any], st: RolloutStatus, generation: int) -> str:
    """What a waiting poll sees, in one line: the generation, the conditions, the traffic split."""
    if st.observed_generation < generation:
        seen = f"generation {generation} not observed yet (at {st.observed_generation})"
    else:
        seen = _conditions_summary(isvc)
    traffic = ", ".join(
        f"{t.get('revisionName')} {t.get('percent')}%" for t in st.traffic if t.get("percent")
    )
    return seen + (f"; traffic {traffic}" if traffic else "")


def _analysis_reason(analysis: CanaryAnalysis, last_reasons: list[str]) -> str:
    """One sentence on how the analysis ended, for the result message and the rollback annotation."""
    a = analysis
    tally = f"{a.passed} passed, {a.failed} failed, {a.no_data} without enough canary traffic"
    if a.failed >= a.failure_threshold:
        return (
            f"{a.failed} failed checks reached the threshold of {a.failure_threshold} after {a.checks} "
            f"checks in {a.elapsed_s:g}s ({tally}); last: {'; '.join(last_reasons)}"
        )
    if not a.passed:
        return (
            f"no check could judge the canary in {a.elapsed_s:g}s ({tally}); last: {'; '.join(last_reasons)}"
        )
    return f"canary analysis passed: {a.checks} checks in {a.elapsed_s:g}s ({tally})"


# --- API access --------------------------------------------------------------------------------------------


def _api_error(action: str, name: str, namespace: str, exc: Exception) -> ClusterError | NotFoundError:
    return api_error(f"{action} InferenceService {namespace}/{name}", exc)


# --- smoke test ---------------------------------------------------------------------------------------------


def smoke_test_over_http(url: str, model: str) -> dict[str, Any]:
    """slipway.serving.client.smoke_test over HTTP (tritonclient.grpc cannot share a process with kserve);
    any failure of it is the canary failing its smoke test."""
    from slipway.serving.client import smoke_test

    try:
        return dict(smoke_test(url, model, protocol="http"))
    except SlipwayError as exc:
        raise ClusterError(f"smoke test on {url} (model {model!r}) failed: {exc}") from None


# --- the rollout -------------------------------------------------------------------------------------------


class Rollout:
    """Deploy / promote / roll back one InferenceService; inject the API, Prometheus and smoke test."""

    def __init__(
        self,
        api: Any,
        settings: RolloutSettings | None = None,
        *,
        prometheus: PrometheusClient | None = None,
        smoke_test: SmokeTest | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.api = api
        self.settings = settings or RolloutSettings()
        self.prometheus = prometheus
        self.smoke_test = smoke_test
        self._sleep = sleep
        self._clock = clock
        self._on_progress = on_progress

    def _progress(self, event: WaitProgress) -> None:
        if self._on_progress is not None:
            self._on_progress(event)

    # API calls, each with a request timeout and errors turned into ClusterError with the server's reason.
    # A read with `retry_until` (a deadline on the injected clock) is retried through transient errors.
    def _call(
        self,
        action: str,
        name: str,
        namespace: str,
        fn: Callable[..., Any],
        *args: Any,
        retry_until: float | None = None,
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        def call() -> Any:
            return fn(
                KSERVE_GROUP,
                KSERVE_VERSION,
                namespace,
                KSERVE_PLURAL,
                *args,
                _request_timeout=self.settings.request_timeout_s,
            )

        try:
            return call_with_retries(
                call,
                what=f"{action} InferenceService {namespace}/{name}",
                deadline=retry_until,
                clock=self._clock,
                sleep=self._sleep,
            )
        except ApiException as exc:
            raise _api_error(action, name, namespace, exc) from None
        except HTTPError as exc:
            raise ClusterError(
                f"{action} InferenceService {namespace}/{name}: API server unreachable: {exc}"
            ) from None

    def get(self, name: str, namespace: str, *, retry_until: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "get", name, namespace, self.api.get_namespaced_custom_object, name, retry_until=retry_until
        )
        return result

    def _get_or_none(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.get(name, namespace)
        except NotFoundError:
            return None

    def _patch(self, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any]:
        log.info(
            "isvc.patch namespace=%s name=%s patch=%s", namespace, name, json.dumps(patch, sort_keys=True)
        )
        result: dict[str, Any] = self._call(
            "patch", name, namespace, self.api.patch_namespaced_custom_object, name, patch
        )
        return result

    def status(self, name: str, namespace: str) -> RolloutStatus:
        """Current revisions, traffic and readiness of the InferenceService."""
        return RolloutStatus.from_isvc(self.get(name, namespace))

    # --- waiting ---
    def _wait(
        self,
        name: str,
        namespace: str,
        *,
        generation: int,
        what: str,
        done: Callable[[RolloutStatus], bool],
        fail_on_not_ready: bool = True,
    ) -> RolloutStatus:
        """Poll until `generation` is observed and `done` holds; ClusterError on timeout or failure. Each poll
        that has to wait on is reported to the progress callback."""
        timeout = self.settings.ready_timeout_s
        started = self._clock()
        deadline = started + timeout
        while True:
            isvc = self.get(name, namespace, retry_until=deadline)
            st = RolloutStatus.from_isvc(isvc)
            if st.observed_generation >= generation:
                if done(st):
                    log.info("isvc.ready namespace=%s name=%s what=%s", namespace, name, what)
                    return st
                ready = _condition(isvc.get("status") or {}, "Ready")
                if fail_on_not_ready and ready and ready.get("status") == "False":
                    raise ClusterError(
                        f"InferenceService {namespace}/{name} failed while waiting for {what}: "
                        f"{_conditions_summary(isvc)}"
                    )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ClusterError(
                    f"timed out after {timeout:g}s waiting for {what} of InferenceService {namespace}/{name} "
                    f"(generation {generation}, observed {st.observed_generation}); "
                    f"conditions: {_conditions_summary(isvc)}"
                )
            self._progress(
                WaitProgress(
                    name,
                    namespace,
                    what,
                    self._clock() - started,
                    timeout,
                    _progress_condition(isvc, st, generation),
                )
            )
            self._sleep(min(self.settings.poll_interval_s, remaining))

    # --- deploy ---
    def deploy(self, body: dict[str, Any], *, wait: bool = True) -> RolloutResult:
        """Create, or patch in a canary of, the InferenceService in `body` (from build_inference_service).

        With `wait`, blocks until the new revision is Ready, smoke-tests it, judges it against the stable
        revision (when Prometheus is configured) and promotes it or rolls it back.
        """
        meta = body["metadata"]
        name, namespace = meta["name"], meta["namespace"]
        predictor = body["spec"]["predictor"]
        new_uri = predictor["model"]["storageUri"]
        percent = predictor.get("canaryTrafficPercent")
        current = self._get_or_none(name, namespace)
        if current is None:
            return self._create(body, wait=wait)

        before = RolloutStatus.from_isvc(current)
        wanted_mode = (meta.get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
        wanted_mode = deployment_mode_of(
            {"metadata": {"annotations": {DEPLOYMENT_MODE_ANNOTATION: wanted_mode}}}
        )
        if wanted_mode and before.deployment_mode and wanted_mode != before.deployment_mode:
            raise ConfigError(
                f"InferenceService {namespace}/{name} runs in {before.deployment_mode} mode but "
                f"{wanted_mode} was requested; KServe cannot switch modes in place: delete and recreate it"
            )
        canary = percent is not None and percent < 100
        if canary:
            self._require_knative(before, f"a {percent}% canary")
        if before.canary_in_progress:
            raise ClusterError(
                f"a canary is already in progress on {namespace}/{name} ({before.canary_traffic_percent}% to "
                f"{before.latest_ready_revision}, storageUri {before.storage_uri}); run "
                "`slipway rollout promote` or `slipway rollout rollback` first"
            )
        stable_revision = before.latest_rolledout_revision or before.latest_ready_revision
        patch = copy.deepcopy({"metadata": {k: v for k, v in meta.items() if k in ("labels", "annotations")}})
        patch["metadata"].setdefault("annotations", {})[PREVIOUS_STORAGE_URI_ANNOTATION] = before.storage_uri
        patch["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        new_predictor = copy.deepcopy(predictor)
        new_predictor["canaryTrafficPercent"] = percent if canary else None  # None deletes (merge patch)
        # The explainer (if any) follows the body: its model repository moves with the predictor's, and a body
        # without one removes it (None deletes in a merge patch).
        patch["spec"] = {
            "predictor": new_predictor,
            "explainer": copy.deepcopy(body["spec"].get("explainer")),
        }
        patched = self._patch(name, namespace, patch)
        generation = int(patched["metadata"].get("generation", 0))
        log.info(
            "rollout.patched namespace=%s name=%s storage_uri=%s previous=%s canary_percent=%s stable=%s",
            namespace,
            name,
            new_uri,
            before.storage_uri,
            percent if canary else None,
            stable_revision,
        )
        if not wait:
            outcome: Outcome = "canary" if canary else "updated"
            return RolloutResult(outcome, RolloutStatus.from_isvc(patched), "patched; not waiting for Ready")

        try:
            after = self._wait_new_revision(name, namespace, generation, before, percent if canary else None)
        except ClusterError as exc:
            rolled = self.rollback(name, namespace, wait=False, reason=f"new revision not Ready: {exc}")
            raise ClusterError(f"{exc}. {rolled.message}") from None

        smoke_url = self._smoke_url(after, after.latest_ready_revision)
        try:
            smoke = self._smoke(smoke_url, name)
        except ClusterError as exc:
            rolled = self.rollback(name, namespace, wait=True, reason=f"smoke test failed: {exc}")
            return RolloutResult("rolled_back", rolled.status, f"smoke test failed: {exc}. {rolled.message}")

        if not canary:
            return RolloutResult(
                "updated", after, f"{new_uri} serves 100% and passed the smoke test", smoke=smoke
            )
        return self._analyse(name, namespace, after, stable_revision, smoke)

    def _create(self, body: dict[str, Any], *, wait: bool) -> RolloutResult:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        body = copy.deepcopy(body)
        if body["spec"]["predictor"].pop("canaryTrafficPercent", None) is not None:
            log.info(
                "rollout.first_revision namespace=%s name=%s note=no stable revision: 100%% traffic",
                namespace,
                name,
            )
        created: dict[str, Any] = self._call(
            "create", name, namespace, self.api.create_namespaced_custom_object, body
        )
        if not wait:
            return RolloutResult(
                "created", RolloutStatus.from_isvc(created), "created; not waiting for Ready"
            )
        generation = int(created["metadata"].get("generation", 1))
        after = self._wait(
            name, namespace, generation=generation, what="first revision Ready", done=lambda s: s.ready
        )
        url = self._smoke_url(after, after.latest_ready_revision)
        try:
            smoke = self._smoke(url, name)
        except ClusterError as exc:
            raise ClusterError(
                f"{exc}; {namespace}/{name} is new, so there is no earlier revision to roll back to: "
                "fix the model and deploy again, or delete the InferenceService"
            ) from None
        return RolloutResult("created", after, f"created {namespace}/{name}; smoke test passed", smoke=smoke)

    def _require_knative(self, st: RolloutStatus, what: str) -> None:
        if st.deployment_mode in KNATIVE_MODES:
            return
        mode = st.deployment_mode or "unknown (no status.deploymentMode, no annotation)"
        raise ClusterError(
            f"refusing {what} on {st.namespace}/{st.name}: its deployment mode is {mode}. KServe implements "
            "canaryTrafficPercent with Knative revisions only and ignores it in Standard/RawDeployment mode, "
            "so the new model would take 100% of traffic at once. Use --canary-percent 100 for a plain "
            "rolling update, or run the InferenceService in Knative (Serverless) mode."
        )

    def _wait_new_revision(
        self, name: str, namespace: str, generation: int, before: RolloutStatus, percent: int | None
    ) -> RolloutStatus:
        def done(st: RolloutStatus) -> bool:
            if not st.ready:
                return False
            if st.deployment_mode not in KNATIVE_MODES:
                return True  # Standard mode reports no revisions: Ready at the new generation is all we get
            new_revision = st.latest_ready_revision
            if new_revision is None or new_revision == before.latest_ready_revision:
                return False
            if new_revision != st.latest_created_revision:
                return False
            if percent is None:
                return any(
                    t.get("revisionName") == new_revision and t.get("percent") == 100 for t in st.traffic
                )
            return any(
                t.get("revisionName") == new_revision and t.get("percent") == percent for t in st.traffic
            )

        return self._wait(
            name, namespace, generation=generation, what="new revision Ready with traffic", done=done
        )

    def _smoke_url(self, st: RolloutStatus, revision: str | None) -> str:
        if self.settings.smoke_url:
            return self.settings.smoke_url
        url = st.revision_url(revision)
        if url:
            return url
        if st.url is None:
            raise ClusterError(f"{st.namespace}/{st.name} reports no URL to smoke-test; pass a smoke URL")
        log.warning(
            "smoke.untargeted namespace=%s name=%s revision=%s url=%s note=no tagged revision URL "
            "(enable-tag-routing off?): the smoke test goes through the traffic split",
            st.namespace,
            st.name,
            revision,
            st.url,
        )
        return st.url

    def _smoke(self, url: str, isvc_name: str) -> dict[str, Any]:
        test = self.smoke_test or smoke_test_over_http
        model = self.settings.triton_model or isvc_name
        log.info("smoke.start url=%s model=%s", url, model)
        result = test(url, model)
        log.info("smoke.passed url=%s model=%s", url, model)
        return result

    def _analyse(
        self,
        name: str,
        namespace: str,
        after: RolloutStatus,
        stable_revision: str | None,
        smoke: dict[str, Any],
    ) -> RolloutResult:
        canary_revision = after.latest_ready_revision
        if self.prometheus is None or stable_revision is None or canary_revision is None:
            log.warning(
                "canary.unjudged namespace=%s name=%s note=no Prometheus or no stable revision: "
                "promoting on the smoke test alone",
                namespace,
                name,
            )
            promoted = self.promote(name, namespace)
            promoted.smoke = smoke
            promoted.message = "promoted on the smoke test alone (no metrics analysis); " + promoted.message
            return promoted
        analysis, verdict = self._run_checks(
            self.prometheus, name, namespace, canary_revision, stable_revision
        )
        if analysis.failed >= analysis.failure_threshold:
            decision: str = "rollback"
        elif analysis.passed:
            decision = "promote"
        else:  # no check could judge; with on_inconclusive=rollback those checks failed above
            decision = self.settings.on_inconclusive
        log.info(
            "canary.decision namespace=%s name=%s decision=%s reason=%s",
            namespace,
            name,
            decision,
            analysis.reason,
        )
        if decision == "hold":
            st = self.status(name, namespace)
            return RolloutResult(
                "held",
                st,
                f"canary left at {st.canary_traffic_percent}%: {analysis.reason}; "
                "decide with `slipway rollout promote` or `slipway rollout rollback`",
                verdict,
                smoke,
                analysis,
            )
        if decision == "rollback":
            result = self.rollback(name, namespace, reason=analysis.reason)
        else:
            result = self.promote(name, namespace)
            result.message = f"{analysis.reason}; {result.message}"
        result.verdict, result.smoke, result.analysis = verdict, smoke, analysis
        return result

    def _run_checks(
        self,
        prometheus: PrometheusClient,
        name: str,
        namespace: str,
        canary_revision: str,
        stable_revision: str,
    ) -> tuple[CanaryAnalysis, CanaryVerdict | None]:
        """Flagger-style analysis: a check every interval until the window is passed or the threshold is hit.

        Returns the tally and the last verdict Prometheus gave. A failed check does not advance the window
        (as in Flagger), so the analysis ends after at most required_passes + threshold - 1 checks.
        """
        s = self.settings
        analysis = CanaryAnalysis(
            interval_s=s.analysis_interval_s,
            # 1e-9: 0.3 / 0.1 is 3.0000000000000004 in floats, and must not ask for a fourth check
            required_passes=max(1, math.ceil(s.analysis_s / s.analysis_interval_s - 1e-9)),
            failure_threshold=s.failure_threshold,
        )
        log.info(
            "canary.analysis namespace=%s name=%s canary=%s stable=%s interval_s=%g passes=%d threshold=%d",
            namespace,
            name,
            canary_revision,
            stable_revision,
            analysis.interval_s,
            analysis.required_passes,
            analysis.failure_threshold,
        )
        started = self._clock()
        longest = (analysis.required_passes + analysis.failure_threshold - 1) * analysis.interval_s
        what = f"canary analysis of {canary_revision} against {stable_revision}"

        def report(condition: str) -> None:
            self._progress(WaitProgress(name, namespace, what, analysis.elapsed_s, longest, condition))

        report(
            f"{analysis.required_passes} passing checks needed, one every {analysis.interval_s:g}s; "
            f"{analysis.failure_threshold} failed checks roll it back"
        )
        last_verdict: CanaryVerdict | None = None
        reasons: list[str] = []
        while not analysis.window_done and analysis.failed < analysis.failure_threshold:
            self._sleep(s.analysis_interval_s)
            analysis.checks += 1
            analysis.elapsed_s = self._clock() - started
            result, reasons, verdict = self._check(prometheus, namespace, canary_revision, stable_revision)
            last_verdict = verdict or last_verdict
            if result == "no_data":
                analysis.no_data += 1
                if s.on_inconclusive == "rollback":
                    result = "failed"
            if result == "passed":
                analysis.passed += 1
            elif result == "failed":
                analysis.failed += 1
                analysis.failures.append(
                    f"check {analysis.checks} at {analysis.elapsed_s:g}s: {'; '.join(reasons)}"
                )
            log.info(
                "canary.check namespace=%s name=%s check=%d elapsed_s=%g result=%s passed=%d/%d "
                "failed=%d/%d reasons=%s",
                namespace,
                name,
                analysis.checks,
                analysis.elapsed_s,
                result,
                analysis.passed,
                analysis.required_passes,
                analysis.failed,
                analysis.failure_threshold,
                reasons,
            )
            report(
                f"check {analysis.checks} {result}"
                + (f" ({'; '.join(reasons)})" if result != "passed" and reasons else "")
                + f"; passed {analysis.passed}/{analysis.required_passes}, "
                f"failed {analysis.failed}/{analysis.failure_threshold}, without traffic {analysis.no_data}"
            )
        analysis.reason = _analysis_reason(analysis, reasons)
        return analysis, last_verdict

    def _check(
        self, prometheus: PrometheusClient, namespace: str, canary_revision: str, stable_revision: str
    ) -> tuple[CheckResult, list[str], CanaryVerdict | None]:
        """One check: canary vs stable error rate and p99 now. Prometheus failing to answer fails the check
        (as in Flagger): a long analysis outlives a blip, and a canary nobody can judge is not promoted."""
        try:
            verdict = judge_canary(
                prometheus.revision_metrics(namespace, canary_revision),
                prometheus.revision_metrics(namespace, stable_revision),
                self.settings.margins,
            )
        except ClusterError as exc:
            return "failed", [str(exc)], None
        if verdict.decision == "inconclusive":
            return "no_data", verdict.reasons, verdict
        return ("failed" if verdict.decision == "rollback" else "passed"), verdict.reasons, verdict

    # --- promote / rollback ---
    def promote(self, name: str, namespace: str, *, wait: bool = True) -> RolloutResult:
        """Send 100% of traffic to the canary (removes canaryTrafficPercent; KServe rolls it out)."""
        current = self.get(name, namespace)
        st = RolloutStatus.from_isvc(current)
        self._require_knative(st, "promote")
        if not st.canary_in_progress:
            raise ClusterError(
                f"no canary in progress on {namespace}/{name} "
                f"(canaryTrafficPercent={st.canary_traffic_percent}); nothing to promote"
            )
        canary_revision = st.latest_ready_revision
        patch = {
            "metadata": {"resourceVersion": (current.get("metadata") or {}).get("resourceVersion")},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        }
        patched = self._patch(name, namespace, patch)
        if not wait:
            return RolloutResult("promoted", RolloutStatus.from_isvc(patched), "promotion requested")
        after = self._wait(
            name,
            namespace,
            generation=int(patched["metadata"].get("generation", 0)),
            what="promotion (100% to the canary)",
            done=lambda s: (
                s.ready
                and any(
                    t.get("revisionName") == canary_revision and t.get("percent") == 100 for t in s.traffic
                )
            ),
        )
        log.info("rollout.promoted namespace=%s name=%s revision=%s", namespace, name, canary_revision)
        return RolloutResult("promoted", after, f"{canary_revision} ({after.storage_uri}) now serves 100%")

    def rollback(
        self, name: str, namespace: str, *, wait: bool = True, reason: str = "manual"
    ) -> RolloutResult:
        """Point traffic back at the last good revision and restore its storageUri in the spec.

        During a canary (Knative) `canaryTrafficPercent: 0` pins 100% to the last rolled-out revision at once;
        the spec's storageUri is restored in the same patch so that the next reconcile serves the old model.
        """
        current = self.get(name, namespace)
        st = RolloutStatus.from_isvc(current)
        previous = st.previous_storage_uri
        if not previous:
            raise ClusterError(
                f"cannot roll back {namespace}/{name}: no previous storageUri recorded in annotation "
                f"{PREVIOUS_STORAGE_URI_ANNOTATION} (it was not deployed by `slipway deploy`, or was already "
                "rolled back); deploy the storageUri you want instead"
            )
        pinned = st.canary_in_progress and st.deployment_mode in KNATIVE_MODES
        stable_revision = st.latest_rolledout_revision
        patch: dict[str, Any] = {
            "metadata": {
                "resourceVersion": (current.get("metadata") or {}).get("resourceVersion"),
                "annotations": {PREVIOUS_STORAGE_URI_ANNOTATION: None},
            },
            "spec": {
                "predictor": {
                    "canaryTrafficPercent": 0 if pinned else None,
                    "model": {"storageUri": previous},
                }
            },
        }
        explainer = (current.get("spec") or {}).get("explainer")
        if explainer:  # it explains what the predictor serves: the same previous model repository
            patch["spec"]["explainer"] = with_storage_uri(explainer, previous)
        log.warning(
            "rollout.rollback namespace=%s name=%s from=%s to=%s reason=%s",
            namespace,
            name,
            st.storage_uri,
            previous,
            reason,
        )
        patched = self._patch(name, namespace, patch)
        message = f"rolled back {namespace}/{name} from {st.storage_uri} to {previous} (reason: {reason})"
        if not wait:
            return RolloutResult("rolled_back", RolloutStatus.from_isvc(patched), message)
        generation = int(patched["metadata"].get("generation", 0))
        if pinned:
            after = self._wait(
                name,
                namespace,
                generation=generation,
                what=f"traffic pinned to {stable_revision}",
                done=lambda s: any(
                    t.get("revisionName") == stable_revision and t.get("percent") == 100 for t in s.traffic
                ),
                fail_on_not_ready=False,
            )
        else:
            after = self._wait(
                name, namespace, generation=generation, what="restored revision Ready", done=lambda s: s.ready
            )
        return RolloutResult("rolled_back", after, message)


def with_storage_uri(explainer: dict[str, Any], storage_uri: str) -> dict[str, Any]:
    """A copy of an explainer spec whose containers download `storage_uri` (KServe's STORAGE_URI env var)."""
    out = copy.deepcopy(explainer)
    for container in out.get("containers") or []:
        for env in container.get("env") or []:
            if env.get("name") == STORAGE_URI_ENV:
                env["value"] = storage_uri
    return out
