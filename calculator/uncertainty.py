"""Uncertainty of summed results from their data-quality scores: a lognormal per result, Monte Carlo over groups.

Per result (the pedigree approach of ecoinvent's data quality guideline, Weidema et al. 2013):

- the stored figure ``c`` is the median of a lognormal: ``X = c * exp(sigma * Z)``, ``Z`` standard normal;
- ``sigma**2`` = the basic variance of its method (``BASIC_VARIANCE``) + the added variance of each of its five
  data-quality scores (``PEDIGREE_VARIANCES``, Weidema et al. 2013 table 10.5: variances of the natural logarithm).

Aggregation (why a million results cost as little as a few hundred):

- results are assumed **independent** of each other;
- results with the same scores and method share ``sigma``; for a group of them with sum ``S1 = sum(c)`` and sum of
  squares ``S2 = sum(c**2)`` (both kept by the rollups), the group total has mean ``S1 * exp(sigma**2 / 2)`` and
  variance ``S2 * exp(sigma**2) * (exp(sigma**2) - 1)``, exactly;
- each group total is drawn from the lognormal with that mean and variance (Fenton-Wilkinson), the groups
  independently, ``draws`` times with a seeded generator, and summed per category and in total; the interval is the
  2.5th and 97.5th percentiles of those sums, with their median.

What that leaves out, so read the interval as a lower bound of the real spread: results that share a factor are
not independent (an error in the factor moves all of them together), and the approximation of a group total by a
lognormal is close for groups of similar results and coarser for a group of one large and many small results.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from calculator.rules import Method

# Variance of ln(value) added by each score, 1 (very good) to 5 (very poor): Weidema et al. 2013 (ecoinvent data
# quality guideline v3), table 10.5. The order is that of the quality code's digits.
PEDIGREE_VARIANCES: dict[str, tuple[float, float, float, float, float]] = {
    "technology": (0.0, 0.0006, 0.008, 0.04, 0.12),  # further technological correlation
    "time": (0.0, 0.0002, 0.002, 0.008, 0.04),  # temporal correlation
    "geography": (0.0, 0.000025, 0.0001, 0.0006, 0.002),  # geographical correlation
    "completeness": (0.0, 0.0001, 0.0006, 0.002, 0.008),
    "reliability": (0.0, 0.0006, 0.002, 0.008, 0.04),
}
# Basic variance of ln(value) by method: 0.0006 is the guideline's basic variance for emission factors of
# combustion and energy (table 10.3); for spend-based (sector-average input-output) factors VCCI takes 0.12, the
# table's largest basic variance, as its own assumption: the pedigree scores of spend (technology and
# reliability 4) already add 0.048.
BASIC_VARIANCE: dict[str, float] = {
    Method.SUPPLIER_SPECIFIC: 0.0006,
    Method.ACTIVITY: 0.0006,
    Method.DISTANCE: 0.0006,
    Method.SPEND: 0.12,
}
# A result without scores (quality code 0) is taken at the poorest score of every indicator.
UNKNOWN_SCORE = 5
DEFAULT_DRAWS = 10_000
DEFAULT_SEED = 20_130_506  # the guideline's date, so that a report is reproducible
PERCENTILES = (2.5, 50.0, 97.5)


def scores(quality_code: int) -> dict[str, int]:
    """The five scores of a quality code (``22212``: technology 2, time 2, geography 2, completeness 1,
    reliability 2); a zero digit (no score) counts as ``UNKNOWN_SCORE``."""
    digits = f"{quality_code:05d}"[-5:]
    return {name: int(digit) or UNKNOWN_SCORE for name, digit in zip(PEDIGREE_VARIANCES, digits, strict=True)}


def log_variance(quality_code: int, method: str) -> float:
    """``sigma**2`` of one result: the method's basic variance plus its scores' added variances.

    Precondition: ``method`` is one of ``Method``.
    """
    added = sum(PEDIGREE_VARIANCES[name][score - 1] for name, score in scores(quality_code).items())
    return BASIC_VARIANCE[method] + added


@dataclass(frozen=True)
class Group:
    """Results sharing one ``sigma``: the sum of their figures and of their squares (kg)."""

    total: Decimal
    squares: Decimal
    sigma2: float


@dataclass(frozen=True)
class Interval:
    """A Monte Carlo estimate of a sum (kg): the 95 % interval and the median."""

    low: float
    median: float
    high: float


def _lognormal_params(group: Group) -> tuple[float, float]:
    """(mu, s) of the lognormal with the mean and variance of the group's total (Fenton-Wilkinson)."""
    total, squares = float(group.total), float(group.squares)
    if total <= 0.0:
        return -math.inf, 0.0  # no emission: always 0
    mean = total * math.exp(group.sigma2 / 2)
    variance = squares * math.exp(group.sigma2) * math.expm1(group.sigma2)
    s2 = math.log1p(variance / (mean * mean))
    return math.log(mean) - s2 / 2, math.sqrt(s2)


def monte_carlo(
    groups: Iterable[tuple[Hashable, Group]], *, draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED
) -> tuple[dict[Hashable, Interval], Interval]:
    """The interval of each key's sum of groups, and of the grand total, from ``draws`` seeded draws.

    Precondition: ``draws >= 1``. The same groups in the same order, draws and seed give the same answer.
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1; got {draws}.")
    keys: list[Hashable] = []
    index: dict[Hashable, int] = {}
    mus, sigmas, rows = [], [], []
    for key, group in groups:
        if key not in index:
            index[key] = len(keys)
            keys.append(key)
        mu, s = _lognormal_params(group)
        mus.append(mu)
        sigmas.append(s)
        rows.append(index[key])
    rng = np.random.default_rng(seed)
    sums = np.zeros((len(keys), draws))
    if mus:
        normal = rng.standard_normal((len(mus), draws))
        values = np.exp(np.asarray(mus)[:, None] + np.asarray(sigmas)[:, None] * normal)
        np.add.at(sums, np.asarray(rows), values)
    per_key = {key: _interval(sums[i]) for i, key in enumerate(keys)}
    return per_key, _interval(sums.sum(axis=0))


def _interval(samples: np.ndarray) -> Interval:
    low, median, high = np.percentile(samples, PERCENTILES)
    return Interval(low=float(low), median=float(median), high=float(high))
