"""Canary analysis: error rate and p99 latency of the canary vs the stable revision, from Prometheus.

Queries go to the Prometheus HTTP API (`/api/v1/query`, instant vectors). The PromQL is templated by
namespace, revision and window so a cluster whose metric or label names differ can swap it in settings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from slipway.core.errors import ClusterError

log = logging.getLogger(__name__)

MetricSource = Literal["knative", "triton"]


class PromQLTemplates(BaseModel):
    """PromQL with `{namespace}`, `{revision}` and `{window}` placeholders; p99 is in milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    request_rate: str
    error_rate: str
    p99_ms: str


# Knative queue-proxy metrics: every request to a revision, labelled natively with revision_name
# (no relabelling needed); latencies are a histogram in milliseconds.
KNATIVE_QUERIES = PromQLTemplates(
    request_rate='sum(rate(revision_request_count{{namespace_name="{namespace}",revision_name="{revision}"}}[{window}]))',
    error_rate=(
        'sum(rate(revision_request_count{{namespace_name="{namespace}",revision_name="{revision}",'
        'response_code_class="5xx"}}[{window}]))'
        ' / sum(rate(revision_request_count{{namespace_name="{namespace}",revision_name="{revision}"}}[{window}]))'
    ),
    p99_ms=(
        "histogram_quantile(0.99, sum by (le) (rate(revision_request_latencies_bucket"
        '{{namespace_name="{namespace}",revision_name="{revision}"}}[{window}])))'
    ),
)

# Triton's own metrics. The `revision` label comes from the pod label serving.knative.dev/revision (the
# manifests' Triton PodMonitor relabels it); the p99 needs `--metrics-config summary_latencies=true` (a per-pod
# quantile: `max` across pods is the conservative aggregate; summaries cannot be merged exactly).
TRITON_QUERIES = PromQLTemplates(
    request_rate=(
        'sum(rate(nv_inference_request_success{{namespace="{namespace}",revision="{revision}"}}[{window}]))'
        ' + sum(rate(nv_inference_request_failure{{namespace="{namespace}",revision="{revision}"}}[{window}]))'
    ),
    error_rate=(
        'sum(rate(nv_inference_request_failure{{namespace="{namespace}",revision="{revision}"}}[{window}]))'
        ' / (sum(rate(nv_inference_request_success{{namespace="{namespace}",revision="{revision}"}}[{window}]))'
        ' + sum(rate(nv_inference_request_failure{{namespace="{namespace}",revision="{revision}"}}[{window}])))'
    ),
    p99_ms='max(nv_inference_request_summary_us{{namespace="{namespace}",revision="{revision}",quantile="0.99"}}) / 1000',
)

QUERIES: dict[MetricSource, PromQLTemplates] = {"knative": KNATIVE_QUERIES, "triton": TRITON_QUERIES}


class CanaryMargins(BaseModel):
    """How much worse than stable a canary may be before it is rolled back."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_error_rate_increase: float = Field(
        default=0.01, ge=0, le=1, description="absolute, e.g. 0.01 = +1 point"
    )
    max_p99_ratio: float = Field(
        default=1.25, ge=1, description="canary p99 may be up to this times stable p99 ..."
    )
    p99_tolerance_ms: float = Field(
        default=5.0, ge=0, description="... plus this, so tiny latencies are not noise"
    )
    min_request_rate: float = Field(
        default=0.05, ge=0, description="req/s the canary needs for a conclusive verdict"
    )


@dataclass(frozen=True)
class RevisionMetrics:
    """One revision's numbers over the analysis window; NaN means Prometheus had no samples."""

    revision: str
    request_rate: float
    error_rate: float
    p99_ms: float


@dataclass(frozen=True)
class CanaryVerdict:
    """`promote`, `rollback`, or `inconclusive` (too little canary traffic to judge), with the reasons."""

    decision: Literal["promote", "rollback", "inconclusive"]
    reasons: list[str] = field(default_factory=list)
    canary: RevisionMetrics | None = None
    stable: RevisionMetrics | None = None


def judge_canary(canary: RevisionMetrics, stable: RevisionMetrics, margins: CanaryMargins) -> CanaryVerdict:
    """Compare canary with stable; pure, so the thresholds are unit-tested without any server."""
    if math.isnan(canary.request_rate) or canary.request_rate < margins.min_request_rate:
        return CanaryVerdict(
            "inconclusive",
            [f"canary {canary.revision} served {canary.request_rate:.3g} req/s < {margins.min_request_rate}"],
            canary,
            stable,
        )
    reasons: list[str] = []
    stable_errors = 0.0 if math.isnan(stable.error_rate) else stable.error_rate
    canary_errors = 0.0 if math.isnan(canary.error_rate) else canary.error_rate
    if canary_errors > stable_errors + margins.max_error_rate_increase:
        reasons.append(
            f"error rate {canary_errors:.4f} (canary {canary.revision}) > {stable_errors:.4f} (stable "
            f"{stable.revision}) + margin {margins.max_error_rate_increase}"
        )
    if math.isnan(stable.p99_ms) or math.isnan(canary.p99_ms):
        log.warning(
            "canary.p99_unavailable canary=%s stable=%s canary_p99=%s stable_p99=%s",
            canary.revision,
            stable.revision,
            canary.p99_ms,
            stable.p99_ms,
        )
    else:
        limit = stable.p99_ms * margins.max_p99_ratio + margins.p99_tolerance_ms
        if canary.p99_ms > limit:
            reasons.append(
                f"p99 {canary.p99_ms:.1f} ms (canary {canary.revision}) > {limit:.1f} ms = stable "
                f"{stable.p99_ms:.1f} ms x {margins.max_p99_ratio} + {margins.p99_tolerance_ms} ms"
            )
    return CanaryVerdict("rollback" if reasons else "promote", reasons, canary, stable)


class PrometheusClient:
    """Minimal Prometheus HTTP API client: instant queries returning one scalar.

    `window` is the PromQL range of each canary check. About two analysis intervals (1m for 30 s, as Flagger's
    built-in metrics use): a much longer range lets one burst of errors fail check after check.
    """

    def __init__(
        self,
        url: str,
        *,
        queries: PromQLTemplates = KNATIVE_QUERIES,
        window: str = "1m",
        timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = queries
        self.window = window
        self._http = httpx.Client(timeout=timeout_s, headers=headers or {})

    def close(self) -> None:
        self._http.close()

    def query(self, promql: str) -> float:
        """Evaluate `promql`; the sum of the returned samples, NaN for an empty vector."""
        try:
            response = self._http.get(f"{self.url}/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise ClusterError(f"Prometheus at {self.url} unreachable: {exc}") from None
        try:
            payload: dict[str, Any] = response.json()
        except ValueError:
            raise ClusterError(
                f"Prometheus at {self.url} answered HTTP {response.status_code} with a non-JSON body"
            ) from None
        if response.status_code != 200 or payload.get("status") != "success":
            raise ClusterError(
                f"Prometheus query failed (HTTP {response.status_code}, {payload.get('errorType')}): "
                f"{payload.get('error')}; query: {promql}"
            )
        data = payload.get("data", {})
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            return float(result[1])
        values = [float(sample["value"][1]) for sample in result]
        return math.fsum(values) if values else math.nan

    def revision_metrics(self, namespace: str, revision: str) -> RevisionMetrics:
        """Request rate, error rate and p99 (ms) of one revision over the window."""
        params = {"namespace": namespace, "revision": revision, "window": self.window}
        metrics = RevisionMetrics(
            revision=revision,
            request_rate=self.query(self.queries.request_rate.format(**params)),
            error_rate=self.query(self.queries.error_rate.format(**params)),
            p99_ms=self.query(self.queries.p99_ms.format(**params)),
        )
        log.info(
            "canary.metrics revision=%s req_per_s=%.4g error_rate=%.4g p99_ms=%.4g",
            revision,
            metrics.request_rate,
            metrics.error_rate,
            metrics.p99_ms,
        )
        return metrics
