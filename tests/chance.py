"""Thresholds for tests that count a model's mistakes, set so that a correct model fails them < 1 in 10,000.

A model with per-sample error rate q makes Binomial(n, q) errors on n samples; retraining on another machine
(another float order) or another seed moves fewer samples than that, so the binomial tail is conservative.
The Chernoff bound P(X >= k) <= exp(-n KL(k/n || q)) then gives the most errors a test may allow. Each caller
states q, measured over seeds and rounded up well above every run seen.
"""

from __future__ import annotations

import math

P_FAIL = 1e-4


def max_errors(n: int, error_rate: float, p_fail: float = P_FAIL) -> int:
    """Most errors of n that a model with this per-sample error rate exceeds with probability < p_fail."""

    def kl(a: float) -> float:
        return a * math.log(a / error_rate) + (1 - a) * math.log((1 - a) / (1 - error_rate))

    k = math.floor(n * error_rate) + 1
    while k < n and n * kl(k / n) < math.log(1 / p_fail):
        k += 1
    return k - 1


def min_share(n: int, error_rate: float, p_fail: float = P_FAIL) -> float:
    """The lowest accuracy (or top-1 agreement) on n samples that such a model reaches but with p < p_fail."""
    return 1 - max_errors(n, error_rate, p_fail) / n


def binomial_tail(n: int, error_rate: float, k: int) -> float:
    """Exact P(X >= k) for X ~ Binomial(n, error_rate): what the bound is checked against."""
    return sum(math.comb(n, i) * error_rate**i * (1 - error_rate) ** (n - i) for i in range(k, n + 1))


# Top-1 flips vs FP32 per sample of the suite's small digits students (~85% accurate), measured in
# test_quantize over seeds 0-2 on 576 samples: 0.4% (INT8 minmax), 0.75% (entropy, percentile), none (FP16).
QUANTIZE_FLIP_RATE = 0.02


def quantize_budgets(n_parity: int, n_test: int, flip_rate: float = QUANTIZE_FLIP_RATE) -> dict[str, float]:
    """QuantizeConfig budgets that a correct quantizer misses with p < 1e-4 (the defaults, 99% agreement on
    64-216 samples and a 1-point drop on 360, allow 0-2 and 3 flips: missed with p ~0.2 at 0.75%)."""
    return {
        "parity_min_agreement": min_share(n_parity, flip_rate),
        "accuracy_budget_points": 100 * max_errors(n_test, flip_rate) / n_test,
    }
