"""The emissions summary as the API returns it (``SummarySerializer`` documents the shape).

One GROUP BY query (``EmissionQuerySet.summary``, or ``RollupQuerySet.summary`` of the same groups), each group
labelled and given its share of the total; kg and tonnes presented as every output presents them
(``calculator.types.present_kg`` / ``present_t``).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from calculator.types import present_kg, present_t
from emissions.models import Category, EmissionQuerySet, Method, RollupQuerySet

SHARE_QUANTUM = Decimal("0.01")


def emission_summary(queryset: EmissionQuerySet | RollupQuerySet, *, group_by: str) -> dict[str, Any]:
    """Totals of ``queryset`` (org-scoped and filtered by the caller; the emissions, or the rollup groups holding
    them: ``emissions.rollups.summary_rollups``) grouped by ``group_by``.

    Precondition: ``group_by`` is one of ``SUMMARY_KEYS`` (the API answers 400 before calling;
    ``EmissionQuerySet.summary`` raises ``ValueError`` otherwise, before any query).
    Groups come largest CO2e first (ties by key), by month chronologically. Biogenic CO2 is summed
    apart, over the emissions that have a figure; None when none has.
    """
    rows = _summary_rows(queryset, group_by)
    total = sum((row["co2e_kg"] for row in rows), Decimal(0))
    biogenic = _sum_known(row["biogenic_co2_kg"] for row in rows)
    groups = [
        {
            "key": row["key"],
            "label": row["label"],
            "co2e_kg": present_kg(row["co2e_kg"]),
            "co2e_t": present_t(row["co2e_kg"]),
            "biogenic_co2_kg": _kg_or_none(row["biogenic_co2_kg"]),
            "count": row["count"],
            "share": _share(row["co2e_kg"], total),
        }
        for row in rows
    ]
    return {
        "group_by": group_by,
        "total_co2e_kg": present_kg(total),
        "total_co2e_t": present_t(total),
        "total_biogenic_co2_kg": _kg_or_none(biogenic),
        "count": sum(row["count"] for row in rows),
        "groups": groups,
    }


def _kg_or_none(value: Decimal | None) -> str | None:
    return None if value is None else present_kg(value)


def _sum_known(values: Iterable[Decimal | None]) -> Decimal | None:
    """The sum of the values that are not None; None when all are (no biogenic figure anywhere)."""
    known = [value for value in values if value is not None]
    return sum(known, Decimal(0)) if known else None


def _share(part: Decimal, total: Decimal) -> str:
    """``part`` as a percentage of ``total``, 2 decimals ("0.00" when the total is zero)."""
    if not total:
        return "0.00"
    return format((part * 100 / total).quantize(SHARE_QUANTUM, rounding=ROUND_HALF_UP), "f")


def _summary_rows(queryset: EmissionQuerySet | RollupQuerySet, group_by: str) -> list[dict[str, Any]]:
    """``queryset.summary(group_by)`` (one query) with each group's display key and label."""
    rows = []
    for row in queryset.summary(group_by):
        raw = row["key"]
        if group_by == "category":
            key, label = raw, str(Category(raw).label)
        elif group_by == "method":
            key, label = raw, str(Method(raw).label)
        elif group_by == "month":
            key, label = raw.strftime("%Y-%m"), f"{calendar.month_name[raw.month]} {raw.year}"
        else:
            key, label = raw, row["supplier_name"] if raw is not None else "No supplier"
        rows.append(
            {
                "key": key,
                "label": label,
                "co2e_kg": row["total_kg"],
                "biogenic_co2_kg": row["biogenic_kg"],
                "count": row["count"],
            }
        )
    return rows
