"""The evidence readers: Prometheus' histogram_quantile, guardrail numbers from a real prometheus_client
registry's text, and the primary metric from the monitor's per-version counts (accuracy and scores)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from slipway.experiments.evidence import health_from_metrics, histogram_quantile, moments
from slipway.experiments.spec import parse_spec

SPEC = parse_spec({"name": "ab1", "model": "digits", "a": "1", "b": "2"})


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)  # rank 50: the first bucket's bound
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)  # rank 70: halfway through (0.1, 0.2]
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 0.9)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # in +Inf: the last bound


def test_health_reads_requests_errors_and_p99_per_variant_of_this_experiment_only() -> None:
    registry = CollectorRegistry()
    labels = ["model", "experiment", "variant", "code"]
    requests = Counter("slipway_experiment_requests", "", labels, registry=registry)
    duration = Histogram(
        "slipway_experiment_request_duration_seconds",
        "",
        labels[:3],
        buckets=(0.001, 0.01, 0.1, 1.0),
        registry=registry,
    )
    requests.labels("digits", "ab1", "a", "200").inc(90)
    requests.labels("digits", "ab1", "b", "200").inc(80)
    requests.labels("digits", "ab1", "b", "500").inc(20)
    requests.labels("digits", "older", "b", "500").inc(1000)  # another experiment: not counted
    for _ in range(99):
        duration.labels("digits", "ab1", "b").observe(0.005)
    duration.labels("digits", "ab1", "b").observe(0.5)
    health = health_from_metrics(generate_latest(registry).decode(), "digits", "ab1")
    assert (health["a"].requests, health["a"].errors, health["a"].p99_ms) == (90, 0, None)
    assert (health["b"].requests, health["b"].errors) == (100, 20) and health["b"].error_rate == 0.2
    assert health["b"].p99_ms == pytest.approx(10.0)  # rank 99 of 100 ends the (1 ms, 10 ms] bucket


def test_accuracy_and_score_moments_from_the_monitors_counts() -> None:
    variants = {
        "1": {"labelled": 200, "correct": 180, "scored": 3, "score_sum": 6.0, "score_sumsq": 14.0},
        "2": {"labelled": 100, "correct": 95},
    }
    accuracy = moments(variants, SPEC)
    assert (accuracy["a"].n, accuracy["a"].mean) == (200, 0.9)
    assert accuracy["a"].var == pytest.approx(np.var([1] * 180 + [0] * 20, ddof=1))
    scores = moments(variants, SPEC.model_copy(update={"metric": "score"}))
    assert (scores["a"].n, scores["a"].mean) == (3, 2.0)
    assert scores["a"].var == pytest.approx(1.0)  # scores 1, 2, 3 have sum 6 and sum of squares 14
    assert scores["b"].n == 0
    assert moments({}, SPEC)["b"].n == 0  # a version with no traffic yet
