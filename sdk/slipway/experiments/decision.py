"""The verdict of an experiment at one look: guardrails on B first, then the sequential test, then the limits.

Pure: it reads the spec, both variants' primary metric and health, and the clock, so `status` may call it as
often as it likes (the test stays valid under peeking) and tests drive it with simulated numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from slipway.experiments.sequential import Comparison, compare, planned_samples
from slipway.experiments.spec import ExperimentSpec, Health, Moments

Verdict = Literal["b_better", "a_better", "no_difference", "guardrail_breached", "not_enough_data"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)


@dataclass(frozen=True)
class Decision:
    """What the test says now. `final`: stop the experiment (a winner, no difference worth having, a guardrail
    breach, or a limit reached); otherwise keep collecting. Effect, interval and p-value are B - A, always-valid."""

    verdict: Verdict
    final: bool
    reason: str
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    planned_samples: int | None  # labelled rows per variant to find an effect of mde with 80% power

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    spec: ExperimentSpec,
    a: Moments,
    b: Moments,
    health_a: Health | None,
    health_b: Health | None,
    now: float,
) -> Decision:
    """The verdict at time `now` (unix seconds). Rules, in order:

    1. B's guardrails (once B has `guardrails.min_requests` requests): an error rate above `max_error_rate` or a
       p99 above `max_p99_ms` -> guardrail_breached, final (A, the champion, keeps serving).
    2. Fewer than `min_samples` labelled rows on either variant -> not_enough_data (final once the max duration
       has passed).
    3. Lambda >= 1/alpha -> b_better or a_better by the effect's sign, final.
    4. The always-valid interval inside (-mde, +mde) -> no_difference, final.
    5. `max_samples` reached on both variants, or the max duration passed -> not_enough_data, final (undecided).
    6. Otherwise not_enough_data, not final.
    """
    test = compare(a, b, mde=spec.mde, alpha=spec.alpha, metric=spec.metric)
    plan = _plan(spec, a, b)

    def verdict(verdict: Verdict, final: bool, reason: str) -> Decision:
        return Decision(
            verdict=verdict,
            final=final,
            reason=reason,
            effect=test.effect,
            ci_low=test.ci_low,
            ci_high=test.ci_high,
            p_value=test.p_value,
            n_a=a.n,
            n_b=b.n,
            mean_a=a.mean,
            mean_b=b.mean,
            planned_samples=plan,
        )

    breach = _guardrail_breach(spec, health_a, health_b)
    if breach is not None:
        return verdict(
            "guardrail_breached", True, breach + "; the experiment stops and A (the champion) stays"
        )

    elapsed = now - spec.started_at
    timed_out = elapsed >= spec.max_duration_s
    rows = f"A has {a.n:,} rows and B {b.n:,}"
    planned = f"; about {plan:,} per variant planned to find an effect of {spec.mde:g}" if plan else ""
    needed = max(spec.min_samples, 2)
    if min(a.n, b.n) < needed:
        if timed_out:
            return verdict(
                "not_enough_data",
                True,
                f"Ended undecided: {_duration(spec.max_duration_s)} passed and {rows}, "
                f"fewer than the {needed:,} per variant needed before any verdict",
            )
        return verdict(
            "not_enough_data",
            False,
            f"Not enough data yet: {rows}; {needed:,} per variant are needed before any verdict{planned}",
        )

    summary = (
        f"{spec.metric} A {a.mean:.4f} ({a.n:,} rows) vs B {b.mean:.4f} ({b.n:,} rows), "
        f"effect B - A {_interval(test)}, always-valid p = {test.p_value:.4g}"
    )
    if test.crossed(spec.alpha):
        winner: Verdict = "b_better" if test.effect > 0 else "a_better"
        name = "B" if winner == "b_better" else "A"
        return verdict(winner, True, f"{name} is better: {summary} < alpha {spec.alpha:g}")
    if -spec.mde < test.ci_low and test.ci_high < spec.mde:
        return verdict(
            "no_difference",
            True,
            f"No difference of {spec.mde:g} or more: {summary}; the interval lies within +-{spec.mde:g}",
        )
    full = spec.max_samples is not None and min(a.n, b.n) >= spec.max_samples
    if full or timed_out:
        limit = (
            f"max_samples {spec.max_samples:,} reached"
            if full
            else f"{_duration(spec.max_duration_s)} passed"
        )
        return verdict(
            "not_enough_data",
            True,
            f"Ended undecided ({limit}): {summary}; neither a winner nor within +-{spec.mde:g}",
        )
    return verdict("not_enough_data", False, f"Undecided so far: {summary}{planned}")


def _guardrail_breach(spec: ExperimentSpec, health_a: Health | None, health_b: Health | None) -> str | None:
    """The sentence naming B's breached guardrail, or None (also while B has too few requests to judge)."""
    rails = spec.guardrails
    if health_b is None or health_b.requests < rails.min_requests:
        return None
    a_errors = f" (A: {health_a.error_rate:.1%})" if health_a is not None and health_a.requests else ""
    if health_b.error_rate > rails.max_error_rate:
        return (
            f"Guardrail breached: B answered {health_b.error_rate:.1%} of {health_b.requests:,} requests with an "
            f"error{a_errors}, above the {rails.max_error_rate:.1%} allowed"
        )
    if rails.max_p99_ms is not None and health_b.p99_ms is not None and health_b.p99_ms > rails.max_p99_ms:
        a_p99 = (
            f" (A: {health_a.p99_ms:.1f} ms)" if health_a is not None and health_a.p99_ms is not None else ""
        )
        return f"Guardrail breached: B's p99 latency is {health_b.p99_ms:.1f} ms{a_p99}, above {rails.max_p99_ms:g} ms"
    return None


def _plan(spec: ExperimentSpec, a: Moments, b: Moments) -> int | None:
    """Planned rows per variant at 80% power: for accuracy from A's accuracy, for scores from the larger sample
    variance (both rounded to 3 significant digits, so the plan does not jitter from look to look); None before
    there is anything to base it on."""
    if spec.metric == "accuracy":
        if a.n == 0:
            return None
        return planned_samples(float(f"{a.mean:.3g}"), spec.mde, spec.alpha, b_share=spec.b_share)
    if min(a.n, b.n) < 2:
        return None
    variance = float(f"{max(a.var, b.var):.3g}")
    return planned_samples(0.0, spec.mde, spec.alpha, b_share=spec.b_share, variance=variance)


def _interval(test: Comparison) -> str:
    return f"{test.effect:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}]"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"max duration {seconds / size:g}{unit}"
    return f"max duration {seconds:g}s"
