"""Data-quality scoring with the GHG Protocol's five indicators (1 = very good ... 5 = very poor).

The score is derived from how the number was produced, never entered by hand. Rule table
(Scope 3 Calculation Guidance, ch. 7 / Technical Guidance table 7.6, simplified):

``basis`` is the method that actually produced the number: ``supplier_specific`` only when
the supplier's own factor was used; a supplier-specific request that fell back to average
data is scored as the computation it became (``activity``, ``distance`` or ``spend``).

=================  ===========  ==========  ============
basis              reliability  technology  completeness
=================  ===========  ==========  ============
supplier_specific  1            1           2
activity           2            2           2
distance           2            3           2
spend              4            4           3
=================  ===========  ==========  ============

Why: a supplier's own (ideally verified) data on its own product is the most reliable and
technology-specific. Average data for the physical activity is published, reviewed and
process-based (2/2). Distance-based transport factors are as reliable, but average over
vehicle types, loads and routes the reporter cannot see (technology 3). Spend-based
(EEIO) factors average a whole industry, are priced in the publisher's currency and year
and mix many technologies (4/4); they cover the sector's supply chain only as far as
the input-output table does (completeness 3). Physical-activity data still leaves parts
of a product's life cycle to the factor's boundary (completeness 2).

Geography (from the region fallbacks the resolver recorded):

- 1: the requested region matched exactly, or the supplier's own factor was used;
- 2: no region was requested and the activity has a factor for one region only (the
  match cannot be checked, but there was no choice to make);
- 3: no region was requested and several were on offer (``region_unspecified``);
- 4: fell back to the ``GLOBAL`` factor;
- 5: fell back to another country's factor.

Time: ``|reporting year - factor year|`` where the reporting year is ``inp.year``, else
``inp.spend_year``, else the factor's year: 0-1 -> 1, 2-3 -> 2, 4-6 -> 3, 7-10 -> 4, >10 -> 5;
one worse (at most 5) when a year fallback was taken.

Warnings (``Note`` objects in ``warnings``): ``factor_outdated`` when the factor is more than
5 years older than the activity year; ``cv_mismatch`` when the activity unit states a
calorific-value basis (gross/net) and the factor's unit label states the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from calculator.rules import GLOBAL, Method
from calculator.types import CalculationInput, DataQuality, FactorLike, Note

# basis -> (reliability, technology, completeness)
METHOD_SCORES: dict[str, tuple[int, int, int]] = {
    Method.SUPPLIER_SPECIFIC: (1, 1, 2),
    Method.ACTIVITY: (2, 2, 2),
    Method.DISTANCE: (2, 3, 2),
    Method.SPEND: (4, 4, 3),
}

# (largest age difference in years, score), checked in order.
TIME_BANDS: tuple[tuple[int, int], ...] = ((1, 1), (3, 2), (6, 3), (10, 4))
OUTDATED_AFTER_YEARS = 5
YEAR_FALLBACKS = frozenset({"year_fallback_earlier", "year_fallback_later"})

_CV = re.compile(r"\b(gross|net)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Assessment:
    quality: DataQuality
    warnings: list[Note] = field(default_factory=list)


def reporting_year(inp: CalculationInput, factor: FactorLike) -> int:
    """The year the activity describes: ``inp.year``, else ``inp.spend_year``, else the factor's year."""
    if inp.year is not None:
        return inp.year
    if inp.spend_year is not None:
        return inp.spend_year
    return factor.year


def time_score(age: int, *, year_fallback: bool) -> int:
    score = 5
    for limit, band_score in TIME_BANDS:
        if age <= limit:
            score = band_score
            break
    return min(5, score + 1) if year_fallback else score


def geography_score(inp: CalculationInput, factor: FactorLike, fallbacks: list[Note], *, supplier_factor: bool) -> int:
    codes = {n.code for n in fallbacks}
    if supplier_factor:
        return 1
    if "region_fallback" in codes:
        return 4 if factor.region == GLOBAL else 5
    if "region_unspecified" in codes:
        return 3
    if inp.region.strip():
        return 1
    return 2


def assess(inp: CalculationInput, factor: FactorLike, *, basis: str, fallbacks: list[Note]) -> Assessment:
    """Score one calculation.

    Precondition: ``basis`` is one of ``Method`` and is the method that produced the number
    (see the module docstring); ``fallbacks`` are the notes the resolver and engine recorded.
    """
    reliability, technology, completeness = METHOD_SCORES[basis]
    codes = {n.code for n in fallbacks}
    year = reporting_year(inp, factor)
    age = abs(year - factor.year)
    quality = DataQuality(
        technology=technology,
        time=time_score(age, year_fallback=bool(codes & YEAR_FALLBACKS)),
        geography=geography_score(inp, factor, fallbacks, supplier_factor=basis == Method.SUPPLIER_SPECIFIC),
        completeness=completeness,
        reliability=reliability,
    )
    warnings: list[Note] = []
    if year - factor.year > OUTDATED_AFTER_YEARS:
        warnings.append(
            Note(
                "factor_outdated",
                f"Factor year {factor.year} is more than {OUTDATED_AFTER_YEARS} years older than "
                f"the activity year {year}",
            )
        )
    cv_warning = _cv_mismatch(inp.unit, factor.unit_label)
    if cv_warning:
        warnings.append(cv_warning)
    return Assessment(quality=quality, warnings=warnings)


def _cv_mismatch(activity_unit: str, factor_label: str) -> Note | None:
    """Gross and net calorific values differ by ~5-10 % for fuels; mixing them silently biases the result."""
    given, used = _CV.search(activity_unit or ""), _CV.search(factor_label or "")
    if not given or not used or given.group(1).lower() == used.group(1).lower():
        return None
    return Note(
        "cv_mismatch",
        f"Activity unit '{activity_unit}' is on a {given.group(1).lower()} CV basis but the factor is per "
        f"'{factor_label}'",
    )
