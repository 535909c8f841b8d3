"""The error thresholds of `tests/chance.py`: the Chernoff bound really holds the binomial tail under 1e-4."""

import pytest
from chance import P_FAIL, binomial_tail, max_errors, min_share


@pytest.mark.parametrize(
    ("n", "rate"), [(360, 0.03), (216, 0.02), (200, 0.02), (64, 0.02), (80, 0.15), (80, 0.2), (60, 0.02)]
)
def test_max_errors_cuts_the_binomial_tail_below_p_fail(n: int, rate: float) -> None:
    allowed = max_errors(n, rate)
    assert binomial_tail(n, rate, allowed + 1) < P_FAIL  # a correct model fails this rarely enough
    assert binomial_tail(n, rate, allowed) > P_FAIL / 1000  # and the bound is not absurdly loose
    assert min_share(n, rate) == 1 - allowed / n


def test_the_distributed_teacher_bound() -> None:
    """27 errors of 360 at a 3% rate: the number quoted in test_distributed."""
    assert max_errors(360, 0.03) == 27
