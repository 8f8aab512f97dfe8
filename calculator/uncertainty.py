"""Uncertainty of summed results from their data-quality scores: a lognormal per result, Monte Carlo over groups.

Per result (the pedigree approach of ecoinvent's data quality guideline, Weidema et al. 2013):

- the stored figure ``c`` is the result's expected value (a factor is a published average): the result is the
  lognormal ``X = c * exp(sigma * Z - sigma**2 / 2)``, ``Z`` standard normal, whose mean is ``c`` (its median is
  ``c * exp(-sigma**2 / 2)``). Taking ``c`` as the median instead would move every sum up by ``exp(sigma**2 / 2)``
  and, with many results, put the reported total outside its own interval;
- ``sigma**2`` = the basic variance of the method that produced it (``BASIC_VARIANCE``; the basis its reliability,
  technology and completeness scores show, ``calculator.quality.METHOD_SCORES``: a supplier-specific line that fell
  back to a spend factor counts as spend) + the added variance of each of its five data-quality scores
  (``PEDIGREE_VARIANCES``, Weidema et al. 2013 table 10.5: variances of the natural logarithm).

Aggregation (why a million results cost as little as a few hundred):

- results are assumed **independent** of each other;
- results with the same scores and method share ``sigma``; for a group of them with sum ``S1 = sum(c)`` and sum of
  squares ``S2 = sum(c**2)`` (both kept by the rollups), the group total has mean ``S1`` and variance
  ``S2 * (exp(sigma**2) - 1)``, exactly;
- each group total is drawn from the lognormal with that mean and variance (Fenton-Wilkinson), the groups
  independently, ``draws`` times with a seeded generator, and summed per category and in total; the interval is the
  2.5th and 97.5th percentiles of those sums, with their median.

What that leaves out, so read the interval as a lower bound of the real spread: results that share a factor are
not independent (an error in the factor moves all of them together; with thousands of results, independence makes
the interval narrow), and the approximation of a group total by a lognormal is close for groups of similar results
and coarser for a group of one large and many small results.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from calculator.quality import METHOD_SCORES
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
GROUPS_PER_DRAW = 64  # 64 x 10,000 draws: 5 MB of float64 at a time


def scores(quality_code: int) -> dict[str, int]:
    """The five scores of a quality code (``22212``: technology 2, time 2, geography 2, completeness 1,
    reliability 2); a zero digit (no score) counts as ``UNKNOWN_SCORE``."""
    digits = f"{quality_code:05d}"[-5:]
    return {name: int(digit) or UNKNOWN_SCORE for name, digit in zip(PEDIGREE_VARIANCES, digits, strict=True)}


def basis(quality_code: int, method: str) -> str:
    """The method that produced a result with these scores: the one whose reliability, technology and completeness
    scores they are (``calculator.quality.METHOD_SCORES``), else ``method`` (the one requested)."""
    given = scores(quality_code)
    found = (given["reliability"], given["technology"], given["completeness"])
    for candidate, expected in METHOD_SCORES.items():
        if found == expected:
            return candidate
    return method


def log_variance(quality_code: int, method: str) -> float:
    """``sigma**2`` of one result: the basic variance of its ``basis`` plus its scores' added variances.

    Precondition: ``method`` is one of ``Method``.
    """
    added = sum(PEDIGREE_VARIANCES[name][score - 1] for name, score in scores(quality_code).items())
    return BASIC_VARIANCE[basis(quality_code, method)] + added


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
    mean = total
    variance = squares * math.expm1(group.sigma2)
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
    # GROUPS_PER_DRAW groups' draws at a time: memory stays bounded however many groups there are.
    for start in range(0, len(mus), GROUPS_PER_DRAW):
        end = start + GROUPS_PER_DRAW
        normal = rng.standard_normal((len(mus[start:end]), draws))
        values = np.exp(np.asarray(mus[start:end])[:, None] + np.asarray(sigmas[start:end])[:, None] * normal)
        np.add.at(sums, np.asarray(rows[start:end]), values)
    per_key = {key: _interval(sums[i]) for i, key in enumerate(keys)}
    return per_key, _interval(sums.sum(axis=0))


def _interval(samples: np.ndarray) -> Interval:
    low, median, high = np.percentile(samples, PERCENTILES)
    return Interval(low=float(low), median=float(median), high=float(high))
