"""Reads of the rollup tables (``EmissionRollup``, ``SupplierRollup``, ``SupplierYearRollup``): which one answers a
summary, and how they differ from the emissions they sum.

The rollups are kept by PostgreSQL triggers (migration ``0015_rollups``; docs/reports.md): every statement that
writes emissions records its net change per group, and the transaction's commit adds them to the rollups, so a
reader sees the rollups and the emissions at the same point (inside a writing transaction, after
``rollups_flush``). A summary reads them when its filters select whole groups: any category, method or
supplier, and a period window of whole months (``period_from`` the first day of a month, ``period_to`` the last).
Other windows, and the embedded SQLite default (no triggers), sum the emissions themselves; the answer is the
same either way, only its cost differs.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection

from emissions.models import EmissionRollup, RollupBase, RollupQuerySet, SupplierRollup, SupplierYearRollup

# The rollup tables, finest first; each compared with the emissions' groups at its own grain.
ROLLUP_MODELS: tuple[type[RollupBase], ...] = (SupplierRollup, SupplierYearRollup, EmissionRollup)
# What a group sums (RollupBase).
SUMS = ("count", "co2e_kg", "co2e_kg_squares", "biogenic_co2_kg", "biogenic_count")
# The emissions' own groups at the finest grain (per supplier and month), computed from the table: a view of
# migration 0015, the triggers' definition of a group. The rollups must equal it.
GROUPS_VIEW = "vcci_emission_groups"


def rollup_keys(model: type[RollupBase]) -> list[str]:
    """The key columns of a rollup table, in the order of its unique key."""
    supplier = ["supplier_id"] if model.HAS_SUPPLIER else []
    return ["organization_id", *supplier, "period", "end_period", "category", "method", "quality_code"]


def rollup_reads() -> bool:
    """Whether summaries read the rollups: kept by this database, and ``ROLLUP_READS`` on."""
    return settings.ROLLUP_READS and rollups_maintained()


def rollups_maintained() -> bool:
    """Whether the database keeps the rollups (PostgreSQL: the triggers of migration 0015)."""
    return connection.vendor == "postgresql"


def rollups_flush() -> None:
    """Apply the current transaction's pending changes to the rollups (they are applied at its commit otherwise),
    so that a read inside a transaction that wrote emissions sees its own writes. Outside a transaction (autocommit:
    a request's reads) there is nothing pending, and no statement is sent.

    Precondition: PostgreSQL with migration 0015. It locks the rollup rows the transaction changes until its end,
    which a transaction that only writes does at commit (docs/reports.md).
    """
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT vcci_rollups_apply()")


def _last_day(day: dt.date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def window_grain(period_from: dt.date | None, period_to: dt.date | None) -> str | None:
    """The coarsest grain whose whole periods make up the window: "year" (open, or 1 January to 31 December),
    "month" (a month's first day to a month's last), None (a bound inside a month)."""
    if (period_from is not None and period_from.day != 1) or (
        period_to is not None and period_to.day != _last_day(period_to)
    ):
        return None
    if (period_from is None or period_from.month == 1) and (period_to is None or period_to.month == 12):
        return "year"
    return "month"


def _period(day: dt.date | None, grain: str) -> dt.date | None:
    """The first day of ``day``'s month or year."""
    if day is None:
        return None
    return day.replace(day=1) if grain == "month" else day.replace(month=1, day=1)


def summary_rollups(organization_id: int, *, group_by: str, filters: Mapping[str, Any]) -> RollupQuerySet | None:
    """The rollup rows holding exactly the emissions of ``organization_id`` that ``filters`` select, or None when
    no rollup can answer (not PostgreSQL, ``ROLLUP_READS`` off, or a period bound inside a month).

    ``filters`` are the emissions list's cleaned filter values (``EmissionFilter``: ``category``, ``supplier``,
    ``method``, ``period_from``, ``period_to``; absent or empty: no filter). The smallest table that can answer
    does: without a supplier in the question, ``EmissionRollup``; by supplier (or filtered by one) over whole
    years or all time, ``SupplierYearRollup``; else ``SupplierRollup``.
    """
    period_from, period_to = filters.get("period_from"), filters.get("period_to")
    grain = window_grain(period_from, period_to)
    if not rollup_reads() or grain is None:
        return None
    supplier = filters.get("supplier")
    model: type[RollupBase] = EmissionRollup
    if group_by == "supplier" or supplier is not None:
        model = SupplierYearRollup if grain == "year" and group_by != "month" else SupplierRollup
    grain = model.GRAIN
    queryset = model.objects.for_org(organization_id).in_window(
        start=_period(period_from, grain), end=_period(period_to, grain)
    )
    if category := filters.get("category"):  # the form's empty value is "" (TypedChoiceFilter)
        queryset = queryset.filter(category=category)
    if method := filters.get("method"):
        queryset = queryset.filter(method=method)
    if supplier is not None:
        queryset = queryset.filter(supplier_id=supplier)
    rollups_flush()
    return queryset


@dataclass(frozen=True)
class RollupDifference:
    """One group where a rollup table and the emissions disagree: ``expected`` is what the emissions sum to
    (None: no emission in the group), ``found`` what the table holds (None: no row)."""

    table: str
    key: dict[str, Any]
    expected: dict[str, Any] | None
    found: dict[str, Any] | None


def rollup_differences(*, organization_id: int | None = None, limit: int = 1000) -> tuple[int, list[RollupDifference]]:
    """(number of differing groups, the first ``limit`` of them) between every rollup table and the emissions of
    ``organization_id`` (None: every organization).

    Precondition: PostgreSQL with migration 0015 applied. Each table is compared in one statement, so with
    writers running it compares one committed state (a transaction's emissions and rollups commit together).
    """
    rollups_flush()
    total, differences = 0, list[RollupDifference]()
    for model in ROLLUP_MODELS:
        keys = rollup_keys(model)
        grouped = [f"date_trunc('{model.GRAIN}', {k})::date" if k in ("period", "end_period") else k for k in keys]
        groups = (
            f"SELECT {', '.join(f'{g} AS {k}' for g, k in zip(grouped, keys, strict=True))}, "
            f"{', '.join(f'sum({c}) AS {c}' for c in SUMS)} FROM {GROUPS_VIEW} {{where}} GROUP BY {', '.join(grouped)}"
        )
        count, rows = _compare(model._meta.db_table, keys, groups, organization_id, limit - len(differences))
        total += count
        differences.extend(rows)
    return total, differences


def _compare(
    table: str, keys: list[str], groups: str, organization_id: int | None, limit: int
) -> tuple[int, list[RollupDifference]]:
    where, params = ("WHERE organization_id = %s", [organization_id]) if organization_id is not None else ("", [])
    # coalesce: a full join needs an equality it can hash or merge, and "no supplier" is a group of its own.
    on = " AND ".join(
        f"coalesce(g.{k}, 0) = coalesce(r.{k}, 0)" if k == "supplier_id" else f"g.{k} = r.{k}" for k in keys
    )
    differs = " OR ".join(f"g.{c} IS DISTINCT FROM r.{c}" for c in SUMS)
    sql = f"""
        SELECT {", ".join(f"coalesce(g.{k}, r.{k})" for k in keys)},
               g.count IS NOT NULL, {", ".join(f"g.{c}" for c in SUMS)},
               r.count IS NOT NULL, {", ".join(f"r.{c}" for c in SUMS)},
               count(*) OVER ()
        FROM ({groups.format(where=where)}) g
        FULL JOIN (SELECT * FROM {table} {where}) r ON {on}
        WHERE {differs}
        ORDER BY {", ".join(str(i) for i in range(1, len(keys) + 1))}
        LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *params, max(limit, 1)])
        rows = cursor.fetchall()
    found_total = rows[0][-1] if rows else 0
    differences = []
    for row in rows[: max(limit, 0)]:
        key = dict(zip(keys, row[: len(keys)], strict=True))
        expected_at, found_at = len(keys), len(keys) + 1 + len(SUMS)
        differences.append(
            RollupDifference(
                table=table,
                key=key,
                expected=_sums(row[expected_at + 1 : found_at]) if row[expected_at] else None,
                found=_sums(row[found_at + 1 : found_at + 1 + len(SUMS)]) if row[found_at] else None,
            )
        )
    return found_total, differences


def _sums(values: tuple[Any, ...]) -> dict[str, Any]:
    """A group's sums, counts as integers (summed counts come back as numeric)."""
    return {
        column: int(value) if column.endswith("count") else value for column, value in zip(SUMS, values, strict=True)
    }
