"""emissions.dashboard: the admin dashboard's figures, against direct SQL sums over the stored emissions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from emissions import dashboard as dashboard_module
from emissions.dashboard import TOP_SUPPLIERS, DashboardQuery, dashboard, dashboard_years, quality_class
from emissions.models import Organization, Supplier
from emissions.reports import inventory
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db

GOOD = {"technology": 2, "time": 1, "geography": 1, "completeness": 2, "reliability": 2, "score": "1.6"}
POOR = {"technology": 4, "time": 4, "geography": 1, "completeness": 3, "reliability": 4, "score": "3.2"}
DRAWS = 400


def emission(org: Organization, kg: str, *, month: int = 3, year: int = 2025, days: int = 27, **kwargs: Any) -> None:
    start = dt.date(year, month, 1)
    EmissionFactory.create(
        organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=days),
        co2e_kg=Decimal(kg), **kwargs,
    )  # fmt: skip


def sql(query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


def kg_text(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")), "f")


def t_text(value: Decimal) -> str:
    return format((value / 1000).quantize(Decimal("0.000000001")), "f")


@pytest.fixture
def varied(org: Organization, other_org: Organization) -> list[Supplier]:
    """Results over the months and categories of 2025 from 13 suppliers and none, two quality classes, one result
    straddling the year's end and one of 2024; another organization's results the page must never count."""
    suppliers = [SupplierFactory.create(organization=org) for _ in range(13)]
    for i in range(40):
        emission(
            org,
            f"{(i * 37) % 500 + 1}.{i:06d}",
            month=i % 12 + 1,
            activity__category=(1, 4, 6, 12)[i % 4],
            activity__supplier=None if i % 9 == 0 else suppliers[i % 13],
            data_quality=GOOD if i % 3 else POOR,
        )
    emission(org, "999", month=12, days=40)  # December 2025 to January 2026: in no year's page
    emission(org, "555", year=2024)
    emission(other_org, "100000", month=5)
    return suppliers


def test_the_totals_are_the_sql_sums_per_category_and_month_to_the_last_digit(
    org: Organization, varied: list[Supplier]
) -> None:
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025), draws=DRAWS)
    window = [org.pk, dt.date(2025, 1, 1), dt.date(2025, 12, 31)]
    where = "organization_id = %s AND period_start >= %s AND period_end <= %s"
    ((count, total),) = sql(f"SELECT count(*), sum(co2e_kg) FROM emissions_emission WHERE {where}", window)
    assert (figures["total"]["count"], figures["total"]["co2e_kg"]) == (count, kg_text(total))
    assert figures["total"]["co2e_t"] == t_text(total)

    by_category = dict(
        (category, (n, kg))
        for category, n, kg in sql(
            f"SELECT category, count(*), sum(co2e_kg) FROM emissions_emission WHERE {where} GROUP BY 1", window
        )
    )
    assert [line["category"] for line in figures["categories"]] == list(range(1, 16))
    for line in figures["categories"]:
        n, kg = by_category.get(line["category"], (0, Decimal(0)))
        assert (line["count"], line["co2e_kg"]) == (n, kg_text(kg))
        assert (line["uncertainty"] is None) == (n == 0)

    by_month = dict(
        (month.strftime("%Y-%m"), (n, kg))
        for month, n, kg in sql(
            "SELECT date_trunc('month', period_start)::date, count(*), sum(co2e_kg) FROM emissions_emission"
            f" WHERE {where} GROUP BY 1",
            window,
        )
    )
    assert [line["month"] for line in figures["months"]] == [f"2025-{m:02d}" for m in range(1, 13)]
    for line in figures["months"]:
        n, kg = by_month.get(line["month"], (0, Decimal(0)))
        assert (line["count"], line["co2e_kg"]) == (n, kg_text(kg))


def test_suppliers_are_the_top_ten_then_the_rest_and_the_results_without_one(
    org: Organization, varied: list[Supplier]
) -> None:
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025), draws=DRAWS)
    where = "organization_id = %s AND period_start >= %s AND period_end <= %s"
    ranked = sql(
        f"SELECT supplier_id, sum(co2e_kg) FROM emissions_emission WHERE {where} AND supplier_id IS NOT NULL"
        " GROUP BY 1 ORDER BY 2 DESC, 1",
        [org.pk, dt.date(2025, 1, 1), dt.date(2025, 12, 31)],
    )
    listed = figures["suppliers"]
    assert [(s["supplier_id"], s["co2e_kg"]) for s in listed[:TOP_SUPPLIERS]] == [
        (supplier, kg_text(kg)) for supplier, kg in ranked[:TOP_SUPPLIERS]
    ]
    rest = sum((kg for _, kg in ranked[TOP_SUPPLIERS:]), Decimal(0))
    assert listed[TOP_SUPPLIERS] == {
        **listed[TOP_SUPPLIERS],
        "supplier_id": None,
        "name": f"{len(ranked) - TOP_SUPPLIERS} other suppliers",
        "co2e_kg": kg_text(rest),
    }
    assert listed[-1]["name"] == "no supplier"
    assert sum(Decimal(s["co2e_kg"]) for s in listed) == Decimal(figures["total"]["co2e_kg"])


def test_a_category_and_a_supplier_filter_every_figure(org: Organization, varied: list[Supplier]) -> None:
    supplier = varied[1]
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025, category=4, supplier_id=supplier.pk))
    ((count, total),) = sql(
        "SELECT count(*), sum(co2e_kg) FROM emissions_emission WHERE organization_id = %s AND category = 4"
        " AND supplier_id = %s AND period_start >= '2025-01-01' AND period_end <= '2025-12-31'",
        [org.pk, supplier.pk],
    )
    assert count > 0
    assert (figures["total"]["count"], figures["total"]["co2e_kg"]) == (count, kg_text(total))
    assert [line["category"] for line in figures["categories"]] == [4]
    assert [s["supplier_id"] for s in figures["suppliers"]] == [supplier.pk]
    assert sum(Decimal(m["co2e_kg"]) for m in figures["months"]) == total


def test_the_emissions_path_gives_the_same_page_as_the_rollups(
    org: Organization, varied: list[Supplier], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded SQLite default (no rollups) and ROLLUP_READS off sum the emissions: the same figures, bands
    included (the same groups in the same order meet the same seeded draws)."""
    queries = [
        DashboardQuery(organization_id=org.pk, year=2025),
        DashboardQuery(organization_id=org.pk, year=2025, category=1),
        DashboardQuery(organization_id=org.pk, year=2025, supplier_id=varied[2].pk),
    ]
    from_rollups = [dashboard(query, draws=DRAWS) for query in queries]
    monkeypatch.setattr(dashboard_module, "rollup_reads", lambda: False)
    assert [dashboard(query, draws=DRAWS) for query in queries] == from_rollups
    assert dashboard_years(org.pk) == [2025, 2024]


def test_the_data_quality_mix_counts_each_class(org: Organization) -> None:
    emission(org, "10", data_quality=GOOD)  # mean 1.6: class 2
    emission(org, "30", data_quality=POOR)  # mean 3.2: class 3
    emission(org, "5", data_quality={})  # not scored
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025), draws=DRAWS)
    assert [(q["label"], q["co2e_kg"], q["count"], q["share"]) for q in figures["quality"]] == [
        ("2 good", "10.000000", 1, "22.22"),
        ("3 fair", "30.000000", 1, "66.67"),
        ("not scored", "5.000000", 1, "11.11"),
    ]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(0, 0), (11111, 1), (22212, 2), (22222, 2), (22233, 2), (22333, 3), (55555, 5), (22200, 3)],
)
def test_quality_class_is_the_rounded_mean_with_a_missing_score_as_five(code: int, expected: int) -> None:
    # 22233: mean 2.4 -> 2; 22333: 2.6 -> 3; 22200: the two missing scores count 5 each, mean 3.2 -> 3.
    assert quality_class(code) == expected


def test_the_band_brackets_each_month_and_is_reproducible(org: Organization) -> None:
    emission(org, "100", month=1, data_quality=POOR)
    emission(org, "100", month=2, data_quality=GOOD)
    query = DashboardQuery(organization_id=org.pk, year=2025)
    figures = dashboard(query, draws=2000)
    january, february = figures["months"][0], figures["months"][1]
    for month in (january, february):
        band = month["uncertainty"]
        assert Decimal(band["low_t"]) < Decimal("0.1") < Decimal(band["high_t"])
    # A poorer score is a wider interval.
    width = {
        m["month"]: Decimal(m["uncertainty"]["high_t"]) - Decimal(m["uncertainty"]["low_t"])
        for m in (january, february)
    }
    assert width["2025-01"] > width["2025-02"]
    assert all(m["uncertainty"] is None for m in figures["months"][2:])
    assert dashboard(query, draws=2000) == figures


def test_an_organization_without_results_gets_an_empty_page(org: Organization) -> None:
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025), draws=DRAWS)
    assert figures["total"] == {"co2e_kg": "0.000000", "co2e_t": "0.000000000", "count": 0, "uncertainty": None}
    assert figures["suppliers"] == [] and figures["quality"] == []
    assert dashboard_years(org.pk) == []


def test_the_years_and_categories_intervals_are_the_inventorys(org: Organization, varied: list[Supplier]) -> None:
    """The same groups, order, draws and seed: the dashboard's bands are the ones the ESRS and CDP files carry."""
    figures = dashboard(DashboardQuery(organization_id=org.pk, year=2025), draws=DRAWS)
    report = inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 12, 31), draws=DRAWS)
    assert figures["total"]["uncertainty"] == report["total"]["uncertainty"]
    assert [line["uncertainty"] for line in figures["categories"]] == [
        line["uncertainty"] for line in report["categories"]
    ]


def test_a_year_whose_only_result_runs_into_the_next_is_not_offered(org: Organization) -> None:
    emission(org, "1", year=2023, month=12, days=40)  # December 2023 to January 2024
    emission(org, "2", year=2025)
    assert dashboard_years(org.pk) == [2025]
