"""The Scope 3 inventory of a reporting period (``GET /api/v1/reports/inventory/``), from the rollups.

One read of ``EmissionRollup`` per period (the reporting period, and the base year when the organization has one),
grouped by category, method and data quality: a few hundred rows whatever the number of emissions. From them, per
category and in total: t CO2e and biogenic CO2, the methods and their shares, the share computed from supplier
data, the record- and emission-weighted data-quality scores, and the uncertainty (``calculator.uncertainty``).
Figures are exact sums (``Decimal``), presented as every output presents them; the uncertainty is a Monte Carlo
estimate (floating point), rounded to kg.

Without rollups (the embedded SQLite default) the same groups are summed from the emissions, in Python.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection
from django.db.models import Sum

from calculator import uncertainty
from calculator.types import present_kg, present_t
from emissions.models import Category, CategoryExclusion, Emission, EmissionRollup, Method, Organization, Restatement
from emissions.rollups import SUMS, rollup_reads, rollups_flush, rollups_maintained

SHARE_QUANTUM = Decimal("0.01")
SCORE_QUANTUM = Decimal("0.01")
KG_QUANTUM = Decimal(1)
# A method whose results are computed from the supplier's own data (ESRS E1 AR 46(g): "primary data"). Its
# results carry reliability 1 (calculator.quality); a supplier-specific line that fell back to average data is
# scored, and counted, as the average data it used.
PRIMARY_RELIABILITY = 1
# The quality code's digits (migration 0015's vcci_quality_code): score name, power of ten.
QUALITY_DIGITS = (("technology", 4), ("time", 3), ("geography", 2), ("completeness", 1), ("reliability", 0))


class Status:
    CALCULATED = "calculated"
    NOT_CALCULATED = "not_calculated"
    NOT_RELEVANT = "not_relevant"  # the organization's CategoryExclusion, with its explanation


@dataclass
class Totals:
    """Sums over rollup groups: count, kg CO2e, sum of squares, biogenic kg and count, and the weighted scores."""

    count: int = 0
    co2e_kg: Decimal = Decimal(0)
    biogenic_kg: Decimal = Decimal(0)
    biogenic_count: int = 0
    primary_kg: Decimal = Decimal(0)
    score_x_count: Decimal = Decimal(0)  # sum of (record score x records)
    score_x_kg: Decimal = Decimal(0)  # sum of (record score x kg)
    scored_count: int = 0
    scored_kg: Decimal = Decimal(0)
    by_method: dict[str, tuple[int, Decimal]] = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        count, kg = int(row["count"]), row["co2e_kg"]
        self.count += count
        self.co2e_kg += kg
        self.biogenic_kg += row["biogenic_co2_kg"]
        self.biogenic_count += int(row["biogenic_count"])
        digits = uncertainty.scores(row["quality_code"]) if row["quality_code"] else None
        if digits is not None:
            if digits["reliability"] == PRIMARY_RELIABILITY:
                self.primary_kg += kg
            score = Decimal(sum(digits.values())) / 5
            self.score_x_count += score * count
            self.score_x_kg += score * kg
            self.scored_count += count
            self.scored_kg += kg
        # The method that produced the figure (a supplier-specific line that fell back to average data counts as the
        # average data it used), as the primary-data share and the uncertainty count it.
        method = uncertainty.basis(row["quality_code"], row["method"]) if row["quality_code"] else row["method"]
        method_count, method_kg = self.by_method.get(method, (0, Decimal(0)))
        self.by_method[method] = (method_count + count, method_kg + kg)


def _share(part: Decimal, whole: Decimal) -> str | None:
    """``part`` as a percentage of ``whole``, 2 decimals; None when ``whole`` is zero."""
    if not whole:
        return None
    return format((part * 100 / whole).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_UP), "f")


def _score(weighted: Decimal, weight: Decimal | int) -> str | None:
    if not weight:
        return None
    return format((weighted / weight).quantize(SCORE_QUANTUM, rounding=ROUND_HALF_EVEN), "f")


def _change(now: Decimal, base: Decimal) -> str | None:
    if not base:
        return None
    return format(((now - base) * 100 / base).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_UP), "f")


def _t(kg: float) -> str:
    """A Monte Carlo figure (kg, floating point) in tonnes, rounded to the kg."""
    return present_t(Decimal(repr(kg)).quantize(KG_QUANTUM, rounding=ROUND_HALF_EVEN))


def _presented(totals: Totals, interval: uncertainty.Interval | None) -> dict[str, Any]:
    methods = [
        {
            "method": method,
            "label": str(Method(method).label),
            "co2e_t": present_t(kg),
            "count": count,
            "share": _share(kg, totals.co2e_kg),
        }
        for method, (count, kg) in sorted(totals.by_method.items(), key=lambda item: (-item[1][1], item[0]))
    ]
    return {
        "co2e_kg": present_kg(totals.co2e_kg),
        "co2e_t": present_t(totals.co2e_kg),
        "biogenic_co2_t": present_t(totals.biogenic_kg) if totals.biogenic_count else None,
        "count": totals.count,
        "methods": methods,
        "primary_data_share": _share(totals.primary_kg, totals.co2e_kg),
        "data_quality": {
            "record_weighted": _score(totals.score_x_count, totals.scored_count),
            "emission_weighted": _score(totals.score_x_kg, totals.scored_kg),
        },
        "uncertainty": None
        if interval is None
        else {"low_t": _t(interval.low), "median_t": _t(interval.median), "high_t": _t(interval.high)},
    }


def _rows(organization_id: int, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    """The organization's rollup groups of emissions wholly within ``start`` .. ``end`` (whole months), summed by
    category, method and data quality: one query. With ``ROLLUP_READS`` off the emissions are summed instead, by
    PostgreSQL (the benchmark's "before"), or here on a database without rollups."""
    if not rollups_maintained():
        return _rows_from_emissions(organization_id, start, end)
    if not rollup_reads():
        return _rows_summed_by_postgresql(organization_id, start, end)
    return list(
        EmissionRollup.objects.for_org(organization_id)
        .in_window(start=start.replace(day=1), end=end.replace(day=1))
        .order_by()
        .values("category", "method", "quality_code")
        .annotate(
            count=Sum("count"),
            co2e_kg=Sum("co2e_kg"),
            co2e_kg_squares=Sum("co2e_kg_squares"),
            biogenic_co2_kg=Sum("biogenic_co2_kg"),
            biogenic_count=Sum("biogenic_count"),
        )
        .order_by("category", "method", "quality_code")
    )


def _rows_summed_by_postgresql(organization_id: int, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    """``_rows`` summed from the emissions by PostgreSQL (the rollups' own definition of a result's quality code,
    ``vcci_quality_code`` of migration 0015): every emission of the window read."""
    columns = ("category", "method", "quality_code", *SUMS)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category, method, vcci_quality_code(data_quality) AS quality_code, count(*), sum(co2e_kg),"
            " sum(co2e_kg * co2e_kg), coalesce(sum(biogenic_co2_kg), 0), count(biogenic_co2_kg)"
            " FROM emissions_emission WHERE organization_id = %s AND period_start >= %s AND period_end <= %s"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            [organization_id, start, end],
        )
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def quality_code(data_quality: dict[str, Any]) -> int:
    """A result's five data-quality scores as the rollups' ``quality_code`` (``vcci_quality_code`` of migration
    0015): technology, time, geography, completeness, reliability as digits, 0 for a missing score."""
    return sum(int(data_quality.get(name) or 0) * 10**place for name, place in QUALITY_DIGITS)


def group_add(
    groups: dict[Any, dict[str, Any]], key: Any, labels: dict[str, Any], kg: Decimal, biogenic: Decimal | None
) -> None:
    """Add one emission (its kg CO2e and biogenic kg) to ``groups[key]``, created with ``labels`` and zero sums: the
    rollups' sums (``emissions.rollups.SUMS``), made here in Python where the database keeps no rollups."""
    row = groups.setdefault(
        key,
        {
            **labels,
            "count": 0,
            "co2e_kg": Decimal(0),
            "co2e_kg_squares": Decimal(0),
            "biogenic_co2_kg": Decimal(0),
            "biogenic_count": 0,
        },
    )
    row["count"] += 1
    row["co2e_kg"] += kg
    row["co2e_kg_squares"] += kg * kg
    if biogenic is not None:
        row["biogenic_co2_kg"] += biogenic
        row["biogenic_count"] += 1


def _rows_from_emissions(organization_id: int, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    """``_rows`` summed from the emissions themselves: the embedded SQLite default, which keeps no rollups (its
    data is small). The same groups, the same sums."""
    groups: dict[tuple[int, str, int], dict[str, Any]] = {}
    emissions = Emission.objects.for_org(organization_id).filter(period_start__gte=start, period_end__lte=end)
    for category, method, quality, kg, biogenic in emissions.values_list(
        "category", "method", "data_quality", "co2e_kg", "biogenic_co2_kg"
    ).iterator():
        code = quality_code(quality)
        labels = {"category": category, "method": method, "quality_code": code}
        group_add(groups, (category, method, code), labels, kg, biogenic)
    return [groups[key] for key in sorted(groups)]


def _by_category(rows: Iterable[dict[str, Any]]) -> tuple[dict[int, Totals], Totals]:
    categories: dict[int, Totals] = defaultdict(Totals)
    total = Totals()
    for row in rows:
        categories[row["category"]].add(row)
        total.add(row)
    return categories, total


def _uncertainty(
    rows: list[dict[str, Any]], *, draws: int, seed: int
) -> tuple[dict[Any, uncertainty.Interval], uncertainty.Interval]:
    groups = [
        (
            row["category"],
            uncertainty.Group(
                total=row["co2e_kg"],
                squares=row["co2e_kg_squares"],
                sigma2=uncertainty.log_variance(row["quality_code"], row["method"]),
            ),
        )
        for row in rows
    ]
    return uncertainty.monte_carlo(groups, draws=draws, seed=seed)


def _against_base(totals: Totals, base: Totals | None) -> dict[str, str | None]:
    """The base year's t CO2e and the change against it (both None without a base year; a category the base year
    has no result in compares with 0, and its change is None)."""
    if base is None:
        return {"base_year_co2e_t": None, "change_pct": None}
    return {"base_year_co2e_t": present_t(base.co2e_kg), "change_pct": _change(totals.co2e_kg, base.co2e_kg)}


def base_window(base_year: int, period_from: dt.date, period_to: dt.date) -> tuple[dt.date, dt.date]:
    """The same months as the reporting period, in the base year: a calendar year compares with the base year, a
    quarter with the base year's quarter, a fiscal year (April to March) with the one starting in the base year.

    Precondition: the period is whole months."""
    shift = base_year - period_from.year
    end_year = period_to.year + shift
    last = calendar.monthrange(end_year, period_to.month)[1]
    return period_from.replace(year=base_year), dt.date(end_year, period_to.month, last)


def _restatements(organization_id: int, windows: list[tuple[dt.date, dt.date]]) -> list[dict[str, Any]]:
    """The organization's restatements whose scope overlaps any of ``windows``: their recalculated figures are in
    the stored emissions the report sums (a restatement is applied when its job commits)."""
    named = []
    restatements = Restatement.objects.for_org(organization_id).select_related("target_dataset").order_by("job_id")
    for restatement in restatements:
        scope = restatement.scope or {}
        scope_from = dt.date.fromisoformat(scope["period_from"]) if scope.get("period_from") else dt.date.min
        scope_to = dt.date.fromisoformat(scope["period_to"]) if scope.get("period_to") else dt.date.max
        if not any(scope_from <= end and start <= scope_to for start, end in windows):
            continue
        dataset = restatement.target_dataset
        named.append(
            {
                "id": restatement.pk,
                "created_at": restatement.created_at,
                "dataset": f"{dataset.source}:{dataset.version}",
                "change_pct": None if restatement.change_pct is None else format(restatement.change_pct, "f"),
                "significant": restatement.significant,
                "scope": scope,
            }
        )
    return named


def inventory(
    organization: Organization,
    *,
    period_from: dt.date,
    period_to: dt.date,
    draws: int = uncertainty.DEFAULT_DRAWS,
    seed: int = uncertainty.DEFAULT_SEED,
) -> dict[str, Any]:
    """The inventory of ``organization`` for the emissions wholly within ``period_from`` .. ``period_to``.

    Precondition: the window is whole months (``period_from`` a first day, ``period_to`` a last day, the first not
    after the second). Every one of the 15 categories is listed, in order: ``not_relevant`` (with the organization's
    explanation) when it excluded the category, whatever results it has (they are still summed and shown), else
    ``calculated`` or ``not_calculated``.
    """
    rollups_flush()
    rows = _rows(organization.pk, period_from, period_to)
    categories, total = _by_category(rows)
    intervals, total_interval = _uncertainty(rows, draws=draws, seed=seed)

    base: dict[str, Any] | None = None
    base_categories: dict[int, Totals] = {}
    base_total = Totals()
    windows = [(period_from, period_to)]
    if organization.base_year is not None:
        base_from, base_to = base_window(organization.base_year, period_from, period_to)
        windows.append((base_from, base_to))
        base_categories, base_total = _by_category(_rows(organization.pk, base_from, base_to))
        base = {
            "year": organization.base_year,
            "period_from": base_from,
            "period_to": base_to,
            "co2e_t": present_t(base_total.co2e_kg),
            "change_pct": _change(total.co2e_kg, base_total.co2e_kg),
        }

    excluded = dict(
        CategoryExclusion.objects.for_org(organization.pk).values_list("category", "explanation").order_by()
    )
    listed = []
    for category in Category:
        totals = categories.get(category.value, Totals())
        status = Status.CALCULATED if totals.count else Status.NOT_CALCULATED
        entry = {
            "category": category.value,
            "label": str(category.label),
            "status": Status.NOT_RELEVANT if category.value in excluded else status,
            "explanation": excluded.get(category.value),
            **_presented(totals, intervals.get(category.value)),
        }
        listed.append(
            {**entry, **_against_base(totals, base_categories.get(category.value, Totals()) if base else None)}
        )
    return {
        "period_from": period_from,
        "period_to": period_to,
        "categories": listed,
        "total": {
            **_presented(total, total_interval if total.count else None),
            **_against_base(total, base_total if base else None),
        },
        "base_year": base,
        "restatements": _restatements(organization.pk, windows),
        "uncertainty_method": {"draws": draws, "seed": seed, "interval": "95 % (2.5th-97.5th percentile)"},
    }
