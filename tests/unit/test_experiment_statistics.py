"""The experiment's statistics: the mixture SPRT, its always-valid interval, the planned sample size and the
verdict rules, checked by hand on small cases and by simulating experiments that are looked at after every batch.

The simulations are seeded; each one's margin is stated with `chance.max_errors`: over 100,000 simulated
experiments (5 streams of 20,000), the rates were: B (0.93 vs 0.90, mde 0.03) not declared better within
`planned_samples` 0.053-0.057; a winner between equal variants within 3x the plan 0.021-0.024 (decision rule),
0.024-0.026 (the test alone, never stopping for "no difference"); the interval missing the true effect at any
look 0.023-0.027. Each rate is rounded up below, and a correct implementation fails a check with p < 1e-4.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from chance import max_errors

from slipway.experiments.decision import VERDICTS, decide
from slipway.experiments.sequential import (
    bernoulli_moments,
    compare,
    half_width,
    log_likelihood_ratio,
    mixing_scale,
    planned_samples,
    score_moments,
)
from slipway.experiments.spec import ExperimentSpec, Guardrails, Health, Moments

BATCH = 50  # labelled rows per variant between two looks (b_share 0.5)
MDE = 0.03  # the simulated effect itself: the plan is checked where it is tightest
ALPHA = 0.05
NOT_WON_RATE = 0.07  # measured 0.053-0.057
FALSE_WINNER_RATE = 0.03  # measured 0.021-0.026
CI_MISS_RATE = 0.03  # measured 0.023-0.027


def _spec(**overrides: object) -> ExperimentSpec:
    fields: dict[str, object] = {
        "name": "ab",
        "model": "digits",
        "a": "1",
        "b": "2",
        "mde": MDE,
        "alpha": ALPHA,
    }
    return ExperimentSpec.model_validate({**fields, **overrides})


def _paths(p_a: float, p_b: float, rows: int, experiments: int, seed: int) -> tuple[np.ndarray, ...]:
    """Cumulative correct answers of each variant after each batch: (experiments, looks) arrays, and rows."""
    rng = np.random.default_rng(seed)
    looks = rows // BATCH
    correct_a = rng.binomial(BATCH, p_a, size=(experiments, looks)).cumsum(axis=1)
    correct_b = rng.binomial(BATCH, p_b, size=(experiments, looks)).cumsum(axis=1)
    return correct_a, correct_b, BATCH * np.arange(1, looks + 1)


def _run(spec: ExperimentSpec, correct_a: np.ndarray, correct_b: np.ndarray, n: np.ndarray) -> list[str]:
    """Each experiment's verdict: `decide` after every batch, stopping at the first final one ("running" if none)."""
    verdicts = []
    for path_a, path_b in zip(correct_a.tolist(), correct_b.tolist(), strict=True):
        verdict = "running"
        for rows, k_a, k_b in zip(n.tolist(), path_a, path_b, strict=True):
            decision = decide(
                spec, bernoulli_moments(rows, k_a), bernoulli_moments(rows, k_b), None, None, 0.0
            )
            if decision.final:
                verdict = decision.verdict
                break
        verdicts.append(verdict)
    return verdicts


def _vectorised_test(correct_a: np.ndarray, correct_b: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, ...]:
    """Effect, log Lambda and interval half-width at every look of every path (the accuracy plug-in of
    `sequential.plug_in_variance`, vectorised; `test_vectorised_test_matches_compare` holds them equal)."""

    def plug_in(correct: np.ndarray) -> np.ndarray:
        mean, smoothed = correct / n, (correct + 1) / (n + 2)
        return np.maximum(mean * (1 - mean) * n / (n - 1), smoothed * (1 - smoothed))

    effect = (correct_b - correct_a) / n
    v = plug_in(correct_a) / n + plug_in(correct_b) / n
    tau = mixing_scale(MDE)
    return effect, log_likelihood_ratio(effect, v, tau), half_width(v, tau, ALPHA)


# --- simulations: the acceptance checks -------------------------------------------------------------


def test_the_better_variant_wins_within_the_planned_samples() -> None:
    """0.90 vs 0.93, 200 experiments looked at every 50 rows: B is declared better in >= 80% of them within
    `planned_samples` per variant (the number the docs' table gives), and A never."""
    plan = planned_samples(0.90, MDE, ALPHA)
    verdicts = _run(_spec(), *_paths(0.90, 0.93, plan, experiments=200, seed=20170101))
    assert max_errors(200, NOT_WON_RATE) <= 200 * 0.2  # the margin: a correct test fails this with p < 1e-4
    assert verdicts.count("b_better") >= 200 * 0.8, {v: verdicts.count(v) for v in set(verdicts)}
    assert verdicts.count("a_better") == 0


def test_equal_variants_rarely_declare_a_winner_despite_peeking() -> None:
    """0.90 vs 0.90 looked at every 50 rows up to 3x the plan: a winner in at most alpha (5%) of experiments.
    2,000 experiments rather than the issue's 200: at a true rate near 2.3%, 200 would exceed 5% by chance
    about once in 150 streams; 2,000 keep it under 1 in 10,000."""
    horizon = 3 * planned_samples(0.90, MDE, ALPHA)
    verdicts = _run(_spec(), *_paths(0.90, 0.90, horizon, experiments=2000, seed=20170102))
    winners = verdicts.count("b_better") + verdicts.count("a_better")
    assert max_errors(2000, FALSE_WINNER_RATE) <= 2000 * ALPHA
    assert winners <= 2000 * ALPHA, {v: verdicts.count(v) for v in set(verdicts)}
    assert verdicts.count("no_difference") >= 2000 * 0.9  # the rest end as "no difference within the mde"


def test_the_test_alone_stays_valid_under_continuous_peeking() -> None:
    """Without the "no difference" stop: P(Lambda ever reaches 1/alpha) <= alpha, looking every 50 rows from
    min_samples to 3x the plan (180 looks), for equal variants."""
    horizon = 3 * planned_samples(0.90, MDE, ALPHA)
    correct_a, correct_b, n = _paths(0.90, 0.90, horizon, experiments=2000, seed=20170103)
    _, log_lambda, _ = _vectorised_test(correct_a, correct_b, n)
    crossed = ((log_lambda >= math.log(1 / ALPHA)) & (n >= _spec().min_samples)).any(axis=1)
    assert max_errors(2000, FALSE_WINNER_RATE) <= 2000 * ALPHA
    assert crossed.sum() <= 2000 * ALPHA


def test_the_interval_covers_the_true_effect_at_every_look() -> None:
    """The always-valid interval holds the true effect (+0.03) at all looks at once in >= 95% of experiments."""
    horizon = 3 * planned_samples(0.90, MDE, ALPHA)
    correct_a, correct_b, n = _paths(0.90, 0.93, horizon, experiments=2000, seed=20170104)
    effect, _, width = _vectorised_test(correct_a, correct_b, n)
    missed = ((np.abs(effect - 0.03) > width) & (n >= _spec().min_samples)).any(axis=1)
    assert max_errors(2000, CI_MISS_RATE) <= 2000 * ALPHA
    assert missed.sum() <= 2000 * ALPHA


def test_vectorised_test_matches_compare() -> None:
    correct_a, correct_b, n = _paths(0.90, 0.93, 1000, experiments=1, seed=5)
    effect, log_lambda, width = _vectorised_test(correct_a, correct_b, n)
    for look in (0, 3, 19):
        rows, k_a, k_b = int(n[look]), int(correct_a[0, look]), int(correct_b[0, look])
        test = compare(
            bernoulli_moments(rows, k_a),
            bernoulli_moments(rows, k_b),
            mde=MDE,
            alpha=ALPHA,
            metric="accuracy",
        )
        assert test.effect == pytest.approx(effect[0, look])
        assert test.log_lambda == pytest.approx(log_lambda[0, look])
        assert test.ci_high - test.effect == pytest.approx(width[0, look])


# --- the test statistic by hand ------------------------------------------------------------------------------


def test_lambda_p_value_and_interval_by_hand() -> None:
    """A 0.80 (var 0.16), B 0.90 (var 0.09), 100 rows each, tau = mde = 0.1: v = 0.0025,
    Lambda = sqrt(0.0025 / 0.0125) e^(0.01 * 0.01 / (2 * 0.0025 * 0.0125)) = sqrt(0.2) e^1.6 = 2.21506,
    half-width = sqrt(2 * 0.0025 * 0.0125 / 0.01 * (ln 20 + ln 5 / 2)) = sqrt(0.00625 * 3.80045) = 0.154119."""
    test = compare(Moments(100, 0.80, 0.16), Moments(100, 0.90, 0.09), mde=0.1, alpha=0.05, metric="score")
    assert test.variance == pytest.approx(0.0025)
    assert math.exp(test.log_lambda) == pytest.approx(2.21506, rel=1e-5)
    assert test.p_value == pytest.approx(1 / 2.21506, rel=1e-5)
    assert (test.ci_low, test.ci_high) == pytest.approx((0.1 - 0.154119, 0.1 + 0.154119), rel=1e-5)
    assert not test.crossed(0.05)  # p 0.45; the interval holds 0


def test_the_interval_excludes_zero_exactly_when_lambda_crosses() -> None:
    for effect in (0.01, 0.02, 0.03, 0.04):
        test = compare(
            Moments(2000, 0.90, 0.09),
            Moments(2000, 0.90 + effect, 0.09),
            mde=0.02,
            alpha=0.05,
            metric="score",
        )
        assert test.crossed(0.05) == (test.ci_low > 0)


def test_mixing_scale_is_the_mde() -> None:
    assert mixing_scale(0.02) == 0.02


def test_no_spread_does_not_divide_by_zero() -> None:
    """Both variants 100% accurate (sample variance 0): the +1/+2 pseudo-count floor keeps the test finite."""
    perfect = bernoulli_moments(500, 500)
    assert perfect.var == 0.0
    test = compare(perfect, perfect, mde=0.02, alpha=0.05, metric="accuracy")
    assert test.p_value == 1.0 and math.isfinite(test.ci_low) and math.isfinite(test.ci_high)
    decision = decide(_spec(mde=0.02), perfect, perfect, None, None, 0.0)
    assert decision.verdict == "no_difference"
    assert decide(_spec(), bernoulli_moments(500, 450), perfect, None, None, 0.0).verdict == "b_better"
    constant = score_moments(300, 300 * 0.7, 300 * 0.49)  # every score 0.7
    test = compare(constant, constant, mde=0.01, alpha=0.05, metric="score")
    assert test.p_value == 1.0 and math.isfinite(test.ci_high)


def test_fewer_than_two_rows_give_an_unbounded_interval() -> None:
    test = compare(bernoulli_moments(0, 0), bernoulli_moments(1, 1), mde=0.02, alpha=0.05, metric="accuracy")
    assert (test.ci_low, test.ci_high, test.p_value) == (-1.0, 1.0, 1.0)
    test = compare(
        score_moments(1, 3.0, 9.0), score_moments(5, 10.0, 30.0), mde=0.5, alpha=0.05, metric="score"
    )
    assert (test.ci_low, test.ci_high) == (-math.inf, math.inf)


# --- moments --------------------------------------------------------------------------------------------------


def test_bernoulli_and_score_moments() -> None:
    assert bernoulli_moments(4, 3) == Moments(4, 0.75, 0.25)  # sample variance: 3 * 1 / (4 * 3)
    assert bernoulli_moments(0, 0) == Moments(0, 0.0, 0.0)
    scores = np.array([0.2, 0.4, 0.9])
    m = score_moments(3, float(scores.sum()), float((scores**2).sum()))
    assert (m.mean, m.var) == pytest.approx((scores.mean(), scores.var(ddof=1)))
    assert score_moments(1, 0.5, 0.25).var == 0.0


# --- planned samples -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mde", "rows"), [(0.01, 28581), (0.02, 7438), (0.03, 3433), (0.05, 1324)])
def test_planned_samples_match_the_docs_table(mde: float, rows: int) -> None:
    """docs/experiments.md quotes these (baseline 0.90, alpha 0.05, power 0.8): change both together."""
    assert planned_samples(0.90, mde, 0.05) == rows


def test_planned_samples_grow_with_power_and_unequal_splits() -> None:
    base = planned_samples(0.90, 0.02, 0.05)
    assert planned_samples(0.90, 0.02, 0.05, power=0.9) > base
    assert planned_samples(0.90, 0.02, 0.01) > base
    # 20% to B: B (the smaller variant) needs fewer rows than each half of an even split, the total more
    smaller = planned_samples(0.90, 0.02, 0.05, b_share=0.2)
    assert smaller < base < smaller / 0.2 / 2
    even_variance = planned_samples(0.0, 0.1, 0.05, b_share=0.2, variance=0.25)
    assert planned_samples(0.0, 0.1, 0.05, b_share=0.8, variance=0.25) == even_variance
    assert planned_samples(0.0, 0.1, 0.05, variance=0.25) > planned_samples(0.0, 0.1, 0.05, variance=0.09)
    with pytest.raises(ValueError, match="baseline"):
        planned_samples(1.5, 0.02, 0.05)


# --- the verdict rules ---------------------------------------------------------------------------------------


def test_a_challenger_erring_on_20_percent_of_requests_breaches_the_guardrail() -> None:
    """Checked first: B winning on accuracy changes nothing, the experiment stops and A stays."""
    a, b = bernoulli_moments(5000, 4500), bernoulli_moments(5000, 4800)
    decision = decide(_spec(), a, b, Health(1000, 2), Health(1000, 200), 0.0)
    assert (decision.verdict, decision.final) == ("guardrail_breached", True)
    assert (
        "20.0%" in decision.reason
        and "5.0%" in decision.reason
        and "A (the champion) stays" in decision.reason
    )


def test_guardrails_wait_for_min_requests() -> None:
    a, b = bernoulli_moments(100, 90), bernoulli_moments(100, 90)
    decision = decide(_spec(), a, b, Health(50, 0), Health(50, 10), 0.0)
    assert decision.verdict == "not_enough_data"


def test_p99_guardrail() -> None:
    spec = _spec(guardrails=Guardrails(max_p99_ms=50.0))
    a, b = bernoulli_moments(300, 270), bernoulli_moments(300, 270)
    decision = decide(spec, a, b, Health(500, 0, 20.0), Health(500, 0, 80.0), 0.0)
    assert (decision.verdict, decision.final) == ("guardrail_breached", True)
    assert "80.0 ms" in decision.reason and "50 ms" in decision.reason
    assert decide(spec, a, b, None, Health(500, 0, 45.0), 0.0).verdict == "not_enough_data"


def test_below_min_samples_there_is_no_verdict() -> None:
    """Even a huge difference waits for min_samples rows on both variants."""
    decision = decide(_spec(), bernoulli_moments(150, 100), bernoulli_moments(150, 150), None, None, 0.0)
    assert (decision.verdict, decision.final) == ("not_enough_data", False)
    assert "200 per variant" in decision.reason


def test_a_better_when_the_champion_wins() -> None:
    decision = decide(_spec(), bernoulli_moments(5000, 4650), bernoulli_moments(5000, 4400), None, None, 0.0)
    assert (decision.verdict, decision.final) == ("a_better", True)
    assert decision.effect < 0 and decision.ci_high < 0 and decision.p_value < ALPHA


def test_no_difference_when_the_interval_fits_within_the_mde() -> None:
    decision = decide(
        _spec(mde=0.02), bernoulli_moments(20000, 18010), bernoulli_moments(20000, 17990), None, None, 0.0
    )
    assert (decision.verdict, decision.final) == ("no_difference", True)
    assert -0.02 < decision.ci_low < decision.ci_high < 0.02


def test_limits_end_it_undecided() -> None:
    a, b = bernoulli_moments(1000, 900), bernoulli_moments(1000, 915)
    running = decide(_spec(started_at=1000.0, max_duration_s=3600.0), a, b, None, None, 1000.0 + 3599)
    assert (running.verdict, running.final) == ("not_enough_data", False)
    ended = decide(_spec(started_at=1000.0, max_duration_s=3600.0), a, b, None, None, 1000.0 + 3600)
    assert (ended.verdict, ended.final) == ("not_enough_data", True)
    assert "Ended undecided" in ended.reason and "1h" in ended.reason
    full = decide(_spec(max_samples=1000), a, b, None, None, 0.0)
    assert (full.verdict, full.final) == ("not_enough_data", True) and "max_samples 1,000" in full.reason
    early = decide(_spec(started_at=0.0, max_duration_s=60.0), bernoulli_moments(10, 9), a, None, None, 61.0)
    assert (early.verdict, early.final) == ("not_enough_data", True)


def test_decision_serialises_for_the_cli() -> None:
    decision = decide(_spec(), bernoulli_moments(3000, 2700), bernoulli_moments(3000, 2800), None, None, 0.0)
    document = json.loads(json.dumps(decision.to_dict()))
    assert document["verdict"] in VERDICTS
    assert set(VERDICTS) == {"b_better", "a_better", "no_difference", "guardrail_breached", "not_enough_data"}
    assert {
        "final",
        "reason",
        "effect",
        "ci_low",
        "ci_high",
        "p_value",
        "n_a",
        "n_b",
        "mean_a",
        "mean_b",
    } <= set(document)
    assert document["planned_samples"] == planned_samples(0.9, MDE, ALPHA)
    empty = decide(_spec(), bernoulli_moments(0, 0), bernoulli_moments(0, 0), None, None, 0.0)
    assert empty.planned_samples is None and math.isfinite(empty.ci_low)
