"""calculator.uncertainty: variances from the pedigree scores, and the Monte Carlo against analytic values."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from calculator.rules import Method
from calculator.uncertainty import Group, Interval, log_variance, monte_carlo, scores

Z975 = 1.959963984540054  # the standard normal's 97.5th percentile


def test_a_quality_code_is_five_scores_and_a_missing_score_is_the_poorest() -> None:
    assert scores(21122) == {"technology": 2, "time": 1, "geography": 1, "completeness": 2, "reliability": 2}
    assert scores(0) == dict.fromkeys(("technology", "time", "geography", "completeness", "reliability"), 5)


@pytest.mark.parametrize(
    ("code", "method", "variance"),
    [
        (11121, Method.SUPPLIER_SPECIFIC, 0.0006 + 0.0001),  # completeness 2
        (21122, Method.ACTIVITY, 0.0006 + 0.0006 + 0.0001 + 0.0006),  # basic, technology 2, completeness 2, rel. 2
        (44134, Method.SPEND, 0.12 + 0.04 + 0.008 + 0.0006 + 0.008),  # technology 4, time 4, compl. 3, rel. 4
        (55555, Method.DISTANCE, 0.0006 + 0.12 + 0.04 + 0.002 + 0.008 + 0.04),
        # A supplier-specific line that fell back to a spend factor is scored, and varies, as spend.
        (44134, Method.SUPPLIER_SPECIFIC, 0.12 + 0.04 + 0.008 + 0.0006 + 0.008),
    ],
)
def test_the_log_variance_adds_the_methods_basic_variance_and_each_scores(
    code: int, method: str, variance: float
) -> None:
    assert log_variance(code, method) == pytest.approx(variance, rel=1e-12)


def close(interval: Interval, low: float, median: float, high: float, tolerance: float) -> bool:
    return all(
        math.isclose(got, want, rel_tol=tolerance)
        for got, want in ((interval.low, low), (interval.median, median), (interval.high, high))
    )


def test_one_result_is_its_lognormal_the_figure_its_mean() -> None:
    sigma2 = 0.1
    group = Group(total=Decimal("1000"), squares=Decimal("1000000"), sigma2=sigma2)
    per_key, total = monte_carlo([("a", group)], draws=200_000, seed=1)
    s, median = math.sqrt(sigma2), 1000 * math.exp(-sigma2 / 2)
    expected = (median * math.exp(-Z975 * s), median, median * math.exp(Z975 * s))
    assert close(per_key["a"], *expected, tolerance=0.01)
    assert total == per_key["a"]


def test_a_group_matches_its_results_drawn_one_by_one() -> None:
    """The group total drawn as one lognormal with the exact mean and variance of 50 independent lognormal results
    (Fenton-Wilkinson), against the 50 results drawn one by one."""
    figures = np.linspace(10.0, 500.0, 50)
    sigma2 = 0.12 + 0.04 + 0.008
    group = Group(
        total=Decimal(repr(float(figures.sum()))), squares=Decimal(repr(float((figures**2).sum()))), sigma2=sigma2
    )
    _, total = monte_carlo([("spend", group)], draws=200_000, seed=2)
    rng = np.random.default_rng(3)
    normal = rng.standard_normal((50, 200_000))
    one_by_one = (figures[:, None] * np.exp(math.sqrt(sigma2) * normal - sigma2 / 2)).sum(axis=0)
    low, median, high = np.percentile(one_by_one, (2.5, 50, 97.5))
    assert close(total, low, median, high, tolerance=0.02)


def test_the_interval_of_many_results_brackets_their_total() -> None:
    """Each result's mean is its figure: the sum of many is centred on the reported total, not above it."""
    groups = [(category, Group(Decimal(100 * 10_000), Decimal(100 * 100 * 10_000), 0.17)) for category in (1, 4)]
    per_key, total = monte_carlo(groups, draws=20_000)
    for interval in (*per_key.values(), total):
        assert (
            interval.low < float(sum(g.total for _, g in groups) / (2 if interval is not total else 1)) < interval.high
        )


def test_many_groups_are_drawn_a_slice_at_a_time_with_the_same_answer() -> None:
    groups = [(i % 3, Group(Decimal(i + 1), Decimal((i + 1) ** 2), 0.05)) for i in range(200)]
    per_key, total = monte_carlo(groups, draws=500)
    assert set(per_key) == {0, 1, 2}
    assert total.low < float(sum(range(1, 201))) < total.high


def test_groups_of_a_key_add_up_and_the_total_adds_every_key() -> None:
    tiny = 1e-16  # sigma 1e-8: every draw is the figure itself, to the gram
    groups = [
        ("1", Group(Decimal("10"), Decimal("100"), tiny)),
        ("1", Group(Decimal("5"), Decimal("25"), tiny)),
        ("4", Group(Decimal("2"), Decimal("4"), tiny)),
        ("6", Group(Decimal("0"), Decimal("0"), 0.5)),  # no emission: always 0
    ]
    per_key, total = monte_carlo(groups, draws=1000)
    assert {key: round(interval.median, 3) for key, interval in per_key.items()} == {"1": 15.0, "4": 2.0, "6": 0.0}
    assert round(total.low, 3) == round(total.high, 3) == 17.0


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    groups = [("1", Group(Decimal("100"), Decimal("10000"), 0.2))]
    assert monte_carlo(groups, seed=7) == monte_carlo(groups, seed=7)
    assert monte_carlo(groups, seed=7) != monte_carlo(groups, seed=8)


def test_draws_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draws must be at least 1"):
        monte_carlo([], draws=0)
