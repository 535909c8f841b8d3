"""The evidence an experiment is judged on, read where it is recorded: the primary metric per variant from the
monitor's `/v1/variants` (feedback joined to the version that answered), and guardrail numbers per variant
from the server's Prometheus series (`slipway_experiment_*` locally)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import httpx

from slipway.core.errors import SlipwayError
from slipway.experiments.sequential import bernoulli_moments, score_moments
from slipway.experiments.spec import VARIANTS, ExperimentSpec, Health, Moments, Variant

REQUESTS = "slipway_experiment_requests"
DURATION = "slipway_experiment_request_duration_seconds"


def moments(variants: dict[str, Any], spec: ExperimentSpec) -> dict[Variant, Moments]:
    """Per variant, the primary metric from the monitor's per-version counts (a version with none: n = 0)."""
    out: dict[Variant, Moments] = {}
    for variant in VARIANTS:
        counts = variants.get(spec.version_of(variant), {})
        if spec.metric == "accuracy":
            out[variant] = bernoulli_moments(int(counts.get("labelled", 0)), int(counts.get("correct", 0)))
        else:
            out[variant] = score_moments(
                int(counts.get("scored", 0)),
                float(counts.get("score_sum", 0.0)),
                float(counts.get("score_sumsq", 0.0)),
            )
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets: linear within the bucket
    that holds the q-th observation; in the +Inf bucket, the largest finite bound. None without observations."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def health_from_metrics(text: str, model: str, experiment: str) -> dict[Variant, Health]:
    """Requests, errors (any code but 200) and p99 latency per variant, from a server's /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    requests: dict[str, float] = defaultdict(float)
    errors: dict[str, float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        if family.name not in (REQUESTS, DURATION):
            continue
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("experiment") != experiment:
                continue
            variant = labels.get("variant", "")
            if sample.name == f"{REQUESTS}_total":
                requests[variant] += sample.value
                if labels.get("code") != "200":
                    errors[variant] += sample.value
            elif sample.name == f"{DURATION}_bucket":
                buckets[variant].append((float(labels["le"]), sample.value))
    out: dict[Variant, Health] = {}
    for variant in VARIANTS:
        p99_s = histogram_quantile(0.99, buckets[variant])
        out[variant] = Health(
            requests=int(requests[variant]),
            errors=int(errors[variant]),
            p99_ms=None if p99_s is None else p99_s * 1000,
        )
    return out


def _get(url: str, what: str, **params: Any) -> httpx.Response:
    try:
        response = httpx.get(url, params=params, timeout=30)
    except httpx.HTTPError as err:
        raise SlipwayError(f"{what} at {url} cannot be reached: {err}") from None
    if response.status_code != 200:
        raise SlipwayError(f"{what} at {url} answered {response.status_code}: {response.text[:300]}")
    return response


def monitor_variants(monitor_url: str, spec: ExperimentSpec) -> dict[str, Any]:
    """The monitor's per-version counts for the experiment's model since it started."""
    url = f"{monitor_url.rstrip('/')}/v1/variants"
    body: dict[str, Any] = _get(url, "the monitor", model=spec.model, since=spec.started_at).json()
    return body


def server_health(server_url: str, spec: ExperimentSpec) -> dict[Variant, Health]:
    """Guardrail numbers of a local `slipway serve`, from its Prometheus endpoint."""
    text = _get(f"{server_url.rstrip('/')}/metrics", "the server's metrics").text
    return health_from_metrics(text, spec.model, spec.name)
