"""The sequential test behind an experiment's verdict: a two-sample mixture SPRT (mSPRT) on theta = mean_B - mean_A.

Johari, Pekelis, Walsh (2017), "Peeking at A/B Tests": with a normal mixture N(0, tau^2) over the effect, the
likelihood ratio of "an effect" against "none" is, for an estimate theta_hat of variance v,

    Lambda = sqrt(v / (v + tau^2)) * exp(tau^2 theta_hat^2 / (2 v (v + tau^2)))

and under no effect it is a martingale, so P(Lambda ever reaches 1/alpha) <= alpha however often one looks.
The always-valid p-value is min(1, 1/Lambda); the always-valid interval is every theta0 the test with theta_hat
shifted by theta0 would not reject. A watcher may keep the running minimum of the p-value over its looks (still
valid); a stateless `status` reports the current one, and the decision stops at the first look that crosses.
The variance is plugged in from the data (v = var_A / n_A + var_B / n_B), the usual large-sample approximation;
the simulations in tests/unit/test_experiment_statistics.py check that the guarantee survives it.

The formulas accept floats or numpy arrays alike, so a simulation evaluates thousands of looks at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq
from scipy.stats import norm

from slipway.experiments.spec import Metric, Moments

FloatOrArray = TypeVar("FloatOrArray", float, npt.NDArray[np.float64])

TAU_PER_MDE = 1.0
"""The mixing scale tau in units of the minimum detectable effect (see `mixing_scale`)."""

NUMERIC_VAR_FLOOR = 1e-12
"""Smallest v, in units of tau^2: only keeps a metric with no spread at all (constant scores) from dividing by 0."""


def mixing_scale(mde: float) -> float:
    """tau, the spread of the mixture over effects: the minimum detectable effect itself.

    Why: at the sample size where an effect of size mde is found with 80% power, the interval's half-width is
    smallest for tau^2 / v ~ 8 at alpha 0.05 (tau ~ 0.73 mde) and grows slowly away from it: tau = mde needs
    about 1% more rows there (`planned_samples` is computed with this tau; 1.5 mde would need 4% more), and "the
    mixture spreads its weight over effects the size the user said matter" reads plainly. The choice only moves
    power; the false-winner guarantee holds for every tau.
    """
    return TAU_PER_MDE * mde


def log_likelihood_ratio(effect: FloatOrArray, v: FloatOrArray, tau: float) -> FloatOrArray:
    """log Lambda of the normal-mixture SPRT for an estimate `effect` of variance `v` (logs: no overflow)."""
    t2 = tau * tau
    v = np.maximum(v, NUMERIC_VAR_FLOOR * t2)
    return 0.5 * np.log(v / (v + t2)) + t2 * effect * effect / (2.0 * v * (v + t2))


def half_width(v: FloatOrArray, tau: float, alpha: float) -> FloatOrArray:
    """Half-width of the always-valid (1 - alpha) interval around the estimate: where Lambda equals 1/alpha."""
    t2 = tau * tau
    v = np.maximum(v, NUMERIC_VAR_FLOOR * t2)
    bound = math.log(1.0 / alpha) + 0.5 * np.log((v + t2) / v)
    return np.sqrt(2.0 * v * (v + t2) / t2 * bound)


@dataclass(frozen=True)
class Comparison:
    """B against A at one look: the effect B - A with its variance, evidence and always-valid interval."""

    effect: float
    variance: float  # v = var_A / n_A + var_B / n_B, after the floors of `plug_in_variance`
    log_lambda: float
    p_value: float  # always-valid, min(1, 1 / Lambda)
    ci_low: float
    ci_high: float

    def crossed(self, alpha: float) -> bool:
        """Lambda >= 1/alpha: the test rejects "no effect" (equivalently, the interval excludes 0)."""
        return self.log_lambda >= math.log(1.0 / alpha)


def plug_in_variance(m: Moments, metric: Metric) -> float:
    """The variance the test plugs in for one variant: its sample variance, for accuracy floored at the Bernoulli
    variance with one success and one failure added ((k + 1) / (n + 2)), so a variant that has not erred yet
    (100% accurate, variance 0) still carries the uncertainty of its n rows instead of none."""
    if metric == "accuracy":
        smoothed = (m.n * m.mean + 1.0) / (m.n + 2.0)
        return max(m.var, smoothed * (1.0 - smoothed))
    return max(m.var, 0.0)


def compare(a: Moments, b: Moments, *, mde: float, alpha: float, metric: Metric) -> Comparison:
    """The mSPRT of B - A at this look. Needs at least 2 rows per variant (a sample variance); with fewer, the
    interval is unbounded (for accuracy: [-1, 1]) and p = 1. Accuracy intervals are clipped to [-1, 1]."""
    effect = b.mean - a.mean
    lo_limit, hi_limit = (-1.0, 1.0) if metric == "accuracy" else (-math.inf, math.inf)
    if min(a.n, b.n) < 2:
        return Comparison(effect, math.inf, -math.inf, 1.0, lo_limit, hi_limit)
    tau = mixing_scale(mde)
    v = plug_in_variance(a, metric) / a.n + plug_in_variance(b, metric) / b.n
    log_lambda = float(log_likelihood_ratio(effect, v, tau))
    width = float(half_width(v, tau, alpha))
    return Comparison(
        effect=effect,
        variance=v,
        log_lambda=log_lambda,
        p_value=math.exp(-max(log_lambda, 0.0)),
        ci_low=max(effect - width, lo_limit),
        ci_high=min(effect + width, hi_limit),
    )


@lru_cache(maxsize=1024)
def planned_samples(
    baseline: float,
    mde: float,
    alpha: float,
    power: float = 0.8,
    b_share: float = 0.5,
    variance: float | None = None,
) -> int:
    """Labelled rows per variant (counted on the smaller variant, the one that limits) by which a true effect of
    `mde`, either way, is declared in its direction with probability >= `power`.

    Computed at one fixed look with the normal approximation, P(theta_hat > half-width at n) with theta_hat ~
    N(mde, v_n); the test looks all along and may cross earlier, which only adds power. `variance` is each
    variant's metric variance (scores). For accuracy, A has baseline (1 - baseline) and B the larger Bernoulli
    variance of baseline + mde and baseline - mde, so the plan holds in the costlier direction (near 100%, a
    worse B varies more than a better one). With an unequal split the larger variant has share / (1 - share)
    times as many rows: the experiment's total is this number / min(b_share, 1 - b_share).
    """
    if not (mde > 0 and 0 < alpha < 1 and 0 < power < 1 and 0 < b_share < 1):
        raise ValueError(
            f"need mde > 0 and alpha, power, b_share in (0, 1); got {mde}, {alpha}, {power}, {b_share}"
        )
    if variance is not None:
        var_a = var_b = max(variance, 0.0)
    elif 0 <= baseline <= 1:
        var_a = baseline * (1.0 - baseline)
        var_b = max(p * (1.0 - p) for p in (min(baseline + mde, 1.0), max(baseline - mde, 0.0)))
    else:
        raise ValueError(f"baseline: an accuracy in [0, 1] unless a variance is given; got {baseline}")
    unit_var = max(var_a / (1.0 - b_share) + var_b / b_share, 1e-12)  # v times the total rows
    tau = mixing_scale(mde)
    z_power = float(norm.ppf(power))

    def margin(log_total: float) -> float:  # > 0 once the total rows reach the planned power
        v = unit_var / math.exp(log_total)
        return (mde - float(half_width(v, tau, alpha))) / math.sqrt(v) - z_power

    log_total = brentq(margin, math.log(2.0), math.log(1e15))
    return math.ceil(math.exp(log_total) * min(b_share, 1.0 - b_share) - 1e-9)


def bernoulli_moments(n: int, successes: int) -> Moments:
    """Moments of n 0/1 outcomes (correct answers): the accuracy and its sample variance (0 below 2 rows)."""
    if n <= 0:
        return Moments(0, 0.0, 0.0)
    mean = successes / n
    var = successes * (n - successes) / (n * (n - 1)) if n > 1 else 0.0
    return Moments(n, mean, var)


def score_moments(n: int, total: float, total_sq: float) -> Moments:
    """Moments of n scores from their sum and sum of squares: the mean and sample variance (0 below 2 rows;
    never negative after float cancellation)."""
    if n <= 0:
        return Moments(0, 0.0, 0.0)
    mean = total / n
    var = max((total_sq - total * mean) / (n - 1), 0.0) if n > 1 else 0.0
    return Moments(n, mean, var)
