"""The analyst's dashboard of one organization and year (the admin's ``Dashboard`` page draws it).

Everything comes from the rollups (``emissions.rollups``), so the page costs the same at a thousand emissions or a
million: one query for the year's groups by month, category, method and data quality (``EmissionRollup``, or
``SupplierRollup`` when one supplier is chosen), one for the suppliers' ranking (``SupplierYearRollup``). The
embedded SQLite default, which keeps no rollups, sums the emissions instead (the same groups, the same figures).

A result counts in the month its period starts in and in the year of that month, as the summary by month counts it;
its whole period must lie within the year (a result from December to January belongs to neither year's page, as the
inventory of either year leaves it out).

The uncertainty band is the inventory's Monte Carlo (``calculator.uncertainty``): a 95 % interval per month, per
category and for the year, from the same seeded draws, so a reload draws the same band.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import F, Sum

from calculator import uncertainty
from calculator.types import present_kg, present_t
from emissions.models import (
    Category,
    Emission,
    EmissionQuerySet,
    EmissionRollup,
    SupplierRollup,
    SupplierYearRollup,
)
from emissions.reports import group_add, quality_code
from emissions.rollups import SUMS, rollup_reads, rollups_flush
from emissions.summaries import SHARE_QUANTUM

TOP_SUPPLIERS = 10
# Data-quality classes: the mean of a result's five scores (1 very good ... 5 very poor), rounded half up.
QUALITY_LABELS = {1: "1 very good", 2: "2 good", 3: "3 fair", 4: "4 poor", 5: "5 very poor", 0: "not scored"}


@dataclass
class Sums:
    """A figure's count and kg CO2e, summed over rollup groups."""

    count: int = 0
    co2e_kg: Decimal = Decimal(0)

    def add(self, group: dict[str, Any]) -> None:
        self.count += int(group["count"])
        self.co2e_kg += group["co2e_kg"]


@dataclass(frozen=True)
class DashboardQuery:
    """What the page shows: the organization's ``year``, optionally one ``category`` and one supplier."""

    organization_id: int
    year: int
    category: int | None = None
    supplier_id: int | None = None


def quality_class(code: int) -> int:
    """The data-quality class of a rollup's quality code (``QUALITY_LABELS``): 0 when the results have no scores."""
    if not code:
        return 0
    # The inventory's score of the same results (``emissions.reports.Totals``): a missing indicator counts as 5.
    mean = Decimal(sum(uncertainty.scores(code).values())) / 5
    return int(mean.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _share(part: Decimal, whole: Decimal) -> str:
    return format((part * 100 / whole).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_UP), "f") if whole else "0.00"


def _t(kg: float) -> str:
    """A Monte Carlo figure (kg, floating point) in tonnes, rounded to the kg, as the inventory writes them."""
    return present_t(Decimal(repr(kg)).quantize(Decimal(1)))


def _band(interval: uncertainty.Interval | None) -> dict[str, str] | None:
    if interval is None:
        return None
    return {"low_t": _t(interval.low), "median_t": _t(interval.median), "high_t": _t(interval.high)}


def _year_emissions(query: DashboardQuery) -> EmissionQuerySet:
    """The organization's emissions wholly within the year."""
    return Emission.objects.for_org(query.organization_id).filter(
        period_start__gte=dt.date(query.year, 1, 1), period_end__lte=dt.date(query.year, 12, 31)
    )


def _filtered(queryset: Any, query: DashboardQuery) -> Any:
    """Emissions or rollup rows of the query's category and supplier, when it names them."""
    if query.category is not None:
        queryset = queryset.filter(category=query.category)
    if query.supplier_id is not None:
        queryset = queryset.filter(supplier_id=query.supplier_id)
    return queryset


def _groups(query: DashboardQuery) -> list[dict[str, Any]]:
    """The year's groups: month, category, method, quality code and the rollups' sums; one query."""
    start, end = dt.date(query.year, 1, 1), dt.date(query.year, 12, 1)
    if not rollup_reads():
        return _groups_from_emissions(query)
    model = EmissionRollup if query.supplier_id is None else SupplierRollup
    queryset = model.objects.for_org(query.organization_id).in_window(start=start, end=end)
    rollups_flush()
    return list(
        _filtered(queryset, query)
        .order_by()
        .values("period", "category", "method", "quality_code")
        .annotate(**{name: Sum(name) for name in SUMS})
        .order_by("period", "category", "method", "quality_code")
    )


def _groups_from_emissions(query: DashboardQuery) -> list[dict[str, Any]]:
    """``_groups`` summed here from the emissions: a database without rollups (the embedded SQLite default), or
    ``ROLLUP_READS`` off."""
    emissions = _filtered(_year_emissions(query), query)
    groups: dict[tuple[dt.date, int, str, int], dict[str, Any]] = {}
    rows = emissions.values_list("period_start", "category", "method", "data_quality", "co2e_kg", "biogenic_co2_kg")
    for start, category, method, quality, kg, biogenic in rows.iterator():
        code = quality_code(quality)
        labels = {"period": start.replace(day=1), "category": category, "method": method, "quality_code": code}
        group_add(groups, (labels["period"], category, method, code), labels, kg, biogenic)
    return [groups[key] for key in sorted(groups)]


def _suppliers(query: DashboardQuery, total_kg: Decimal) -> list[dict[str, Any]]:
    """The year's ``TOP_SUPPLIERS`` largest suppliers, then the rest together and the results without a supplier."""
    if rollup_reads():
        queryset: Any = SupplierYearRollup.objects.for_org(query.organization_id).in_window(
            start=dt.date(query.year, 1, 1), end=dt.date(query.year, 1, 1)
        )
    else:
        queryset = _year_emissions(query)
    rows = list(_filtered(queryset, query).summary("supplier"))
    named = [row for row in rows if row["key"] is not None]
    top = named[:TOP_SUPPLIERS]
    listed = [
        {
            "supplier_id": row["key"],
            "name": row["supplier_name"],
            "co2e_kg": present_kg(row["total_kg"]),
            "co2e_t": present_t(row["total_kg"]),
            "count": row["count"],
            "share": _share(row["total_kg"], total_kg),
        }
        for row in top
    ]
    rest = named[TOP_SUPPLIERS:]
    unassigned = [row for row in rows if row["key"] is None]
    for label, group in ((f"{len(rest)} other suppliers", rest), ("no supplier", unassigned)):
        if group:
            kg = sum((row["total_kg"] for row in group), Decimal(0))
            count = sum(row["count"] for row in group)
            listed.append(
                {
                    "supplier_id": None,
                    "name": label,
                    "co2e_kg": present_kg(kg),
                    "co2e_t": present_t(kg),
                    "count": count,
                    "share": _share(kg, total_kg),
                }
            )
    return listed


def _merged_months(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The groups summed over their months: one per category, method and quality code, in that order (the
    inventory's groups, ``emissions.reports._rows``)."""
    merged: dict[tuple[int, str, int], dict[str, Any]] = {}
    for group in groups:
        key = (group["category"], group["method"], group["quality_code"])
        row = merged.setdefault(
            key, {"category": key[0], "method": key[1], "quality_code": key[2], **dict.fromkeys(SUMS, 0)}
        )
        for name in SUMS:
            row[name] += group[name]
    return [merged[key] for key in sorted(merged)]


def _keyed(groups: Iterable[dict[str, Any]], key: str) -> list[tuple[Hashable, uncertainty.Group]]:
    return [
        (
            group[key],
            uncertainty.Group(
                total=group["co2e_kg"],
                squares=group["co2e_kg_squares"],
                sigma2=uncertainty.log_variance(group["quality_code"], group["method"]),
            ),
        )
        for group in groups
    ]


def dashboard(
    query: DashboardQuery, *, draws: int = uncertainty.DEFAULT_DRAWS, seed: int = uncertainty.DEFAULT_SEED
) -> dict[str, Any]:
    """The figures of the dashboard for ``query``: the year's total, each category, the twelve months, the top
    suppliers and the data-quality mix, each with t CO2e as exact decimal strings (``present_t``), and 95 %
    intervals for the total, the categories and the months. Categories and months without results are listed
    with zero (a chart's axis shows the whole year and every category)."""
    groups = _groups(query)
    total_kg = sum((group["co2e_kg"] for group in groups), Decimal(0))
    count = sum(int(group["count"]) for group in groups)
    by_category: dict[Hashable, Sums] = defaultdict(Sums)
    by_month: dict[Hashable, Sums] = defaultdict(Sums)
    by_quality: dict[Hashable, Sums] = defaultdict(Sums)
    for group in groups:
        by_category[group["category"]].add(group)
        by_month[group["period"]].add(group)
        by_quality[quality_class(group["quality_code"])].add(group)

    # The year's and the categories' intervals from the inventory's groups (the months' merged), so that they are
    # the very intervals of the inventory and its ESRS and CDP files (the same groups, order, draws and seed).
    yearly = _merged_months(groups)
    category_bands, total_band = uncertainty.monte_carlo(_keyed(yearly, "category"), draws=draws, seed=seed)
    month_bands, _ = uncertainty.monte_carlo(_keyed(groups, "period"), draws=draws, seed=seed)

    def entry(sums: Sums | None) -> dict[str, Any]:
        kg, records = (Decimal(0), 0) if sums is None else (sums.co2e_kg, sums.count)
        return {"co2e_kg": present_kg(kg), "co2e_t": present_t(kg), "count": records, "share": _share(kg, total_kg)}

    categories = [
        {
            "category": category.value,
            "label": str(category.label),
            **entry(by_category.get(category.value)),
            "uncertainty": _band(category_bands.get(category.value)) if category.value in by_category else None,
        }
        for category in Category
        if query.category is None or category.value == query.category
    ]
    months = []
    for number in range(1, 13):
        month = dt.date(query.year, number, 1)
        months.append(
            {
                "month": month.strftime("%Y-%m"),
                **entry(by_month.get(month)),
                "uncertainty": _band(month_bands.get(month)) if month in by_month else None,
            }
        )
    quality = [
        {"class": klass, "label": QUALITY_LABELS[klass], **entry(by_quality[klass])}
        for klass in (1, 2, 3, 4, 5, 0)
        if klass in by_quality
    ]
    return {
        "year": query.year,
        "category": query.category,
        "supplier_id": query.supplier_id,
        "total": {
            "co2e_kg": present_kg(total_kg),
            "co2e_t": present_t(total_kg),
            "count": count,
            "uncertainty": _band(total_band) if count else None,
        },
        "categories": categories,
        "months": months,
        "suppliers": _suppliers(query, total_kg),
        "quality": quality,
        "uncertainty_method": {"draws": draws, "seed": seed, "interval": "95 % (2.5th-97.5th percentile)"},
    }


def dashboard_years(organization_id: int) -> list[int]:
    """The years the organization has results wholly within (newest first: the years whose page shows something),
    for the page's year choice: from the yearly supplier rollup (a few rows a year), or the emissions where the
    rollups are not read."""
    if rollup_reads():
        rollups_flush()
        periods = (
            SupplierYearRollup.objects.for_org(organization_id)
            .filter(period=F("end_period"))  # results wholly within their year
            .order_by()
            .values_list("period", flat=True)
            .distinct()
        )
        return sorted({period.year for period in periods}, reverse=True)
    emissions = Emission.objects.for_org(organization_id).filter(period_start__year=F("period_end__year"))
    return [day.year for day in emissions.dates("period_start", "year", order="DESC")]
