"""emissions.reports: the inventory's figures, against the stored emissions and worked examples."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.db import connection

from emissions.models import CategoryExclusion, Job, Organization, Restatement
from emissions.reports import _rows, _rows_from_emissions, _rows_summed_by_postgresql, inventory
from emissions.rollups import rollups_flush
from tests.emissions.management import test_seed_demo
from tests.factories import EmissionFactory, FactorDatasetFactory, SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

factors = test_seed_demo.factors
YEAR = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
GOOD = {"technology": 2, "time": 1, "geography": 1, "completeness": 2, "reliability": 2, "score": "1.6"}  # 1.6
POOR = {"technology": 4, "time": 4, "geography": 1, "completeness": 3, "reliability": 4, "score": "3.2"}  # 3.2
PRIMARY = {"technology": 1, "time": 1, "geography": 1, "completeness": 2, "reliability": 1, "score": "1.2"}


def emission(org: Organization, kg: str, *, month: int = 3, year: int = 2025, **kwargs: Any) -> None:
    start = dt.date(year, month, 1)
    EmissionFactory.create(
        organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=27),
        co2e_kg=Decimal(kg), **kwargs,
    )  # fmt: skip


def category(report: dict[str, Any], number: int) -> dict[str, Any]:
    return report["categories"][number - 1]


def sql_sums(org: Organization, start: dt.date, end: dt.date) -> dict[int, tuple[int, Decimal]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT category, count(*), sum(co2e_kg) FROM emissions_emission WHERE organization_id = %s"
            " AND period_start >= %s AND period_end <= %s GROUP BY category",
            [org.pk, start, end],
        )
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


def test_every_category_is_listed_and_the_totals_are_the_sql_sums_to_the_last_digit(
    org: Organization, factors: None
) -> None:
    call_command("seed_demo", "--org", org.slug, "--activities", "500", "--end-month", "2025-12", stdout=StringIO())
    emission(org, "0.000001", month=12)  # the smallest figure a result has
    EmissionFactory.create(  # straddles the year's end: in no 2025 window
        organization=org, activity__period_start=dt.date(2025, 12, 1), activity__period_end=dt.date(2026, 1, 31)
    )
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    expected = sql_sums(org, *YEAR)
    assert [line["category"] for line in report["categories"]] == list(range(1, 16))
    for line in report["categories"]:
        count, kg = expected.get(line["category"], (0, Decimal(0)))
        assert (line["count"], line["co2e_kg"]) == (count, format(kg.quantize(Decimal("0.000001")), "f"))
        assert line["status"] == ("calculated" if count else "not_calculated")
    total_kg = sum((kg for _, kg in expected.values()), Decimal(0))
    assert report["total"]["co2e_kg"] == format(total_kg.quantize(Decimal("0.000001")), "f")
    assert report["total"]["count"] == sum(count for count, _ in expected.values())


def test_methods_primary_share_and_both_data_quality_weightings(org: Organization) -> None:
    emission(org, "10", data_quality=GOOD)
    emission(org, "30", data_quality=POOR, activity__method="spend")
    emission(org, "60", data_quality=PRIMARY, activity__method="supplier_specific")
    line = category(inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500), 1)
    assert [(m["method"], m["co2e_t"], m["count"], m["share"]) for m in line["methods"]] == [
        ("supplier_specific", "0.060000000", 1, "60.00"),
        ("spend", "0.030000000", 1, "30.00"),
        ("activity", "0.010000000", 1, "10.00"),
    ]
    assert line["primary_data_share"] == "60.00"
    # Records: (1.6 + 3.2 + 1.2) / 3 = 2.0; by kg: (10 x 1.6 + 30 x 3.2 + 60 x 1.2) / 100 = 1.84.
    assert line["data_quality"] == {"record_weighted": "2.00", "emission_weighted": "1.84"}


def test_biogenic_co2_is_apart_and_null_when_no_result_has_a_figure(org: Organization) -> None:
    emission(org, "10", biogenic_co2_kg=Decimal("2.5"))
    emission(org, "5", biogenic_co2_kg=None, activity__category=4)
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert category(report, 1)["biogenic_co2_t"] == "0.002500000"
    assert category(report, 4)["biogenic_co2_t"] is None
    assert report["total"]["biogenic_co2_t"] == "0.002500000"
    assert report["total"]["co2e_t"] == "0.015000000"


def test_the_uncertainty_brackets_the_figure_and_is_reproducible(org: Organization) -> None:
    for kg in ("100", "250", "40"):
        emission(org, kg, data_quality=POOR, activity__method="spend")
    first = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=2000)
    interval = category(first, 1)["uncertainty"]
    assert Decimal(interval["low_t"]) < Decimal("0.390") < Decimal(interval["high_t"])
    assert inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=2000) == first
    assert category(first, 2)["uncertainty"] is None  # no results
    assert first["uncertainty_method"]["draws"] == 2000


def test_the_base_year_and_the_change_against_it(org: Organization) -> None:
    emission(org, "100", year=2022)
    emission(org, "50", year=2022, activity__category=4)
    emission(org, "80", year=2025)
    org.base_year = 2022
    org.save()
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert report["base_year"] == {
        "year": 2022,
        "period_from": dt.date(2022, 1, 1),
        "period_to": dt.date(2022, 12, 31),
        "co2e_t": "0.150000000",
        "change_pct": "-46.67",
    }
    assert (category(report, 1)["base_year_co2e_t"], category(report, 1)["change_pct"]) == ("0.100000000", "-20.00")
    assert (category(report, 4)["base_year_co2e_t"], category(report, 4)["change_pct"]) == ("0.050000000", "-100.00")
    assert (category(report, 6)["base_year_co2e_t"], category(report, 6)["change_pct"]) == ("0.000000000", None)
    assert report["total"]["change_pct"] == "-46.67"


def test_no_base_year_leaves_the_comparison_empty(org: Organization) -> None:
    emission(org, "80")
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert report["base_year"] is None
    assert (report["total"]["base_year_co2e_t"], report["total"]["change_pct"]) == (None, None)


def test_restatements_of_the_period_or_the_base_year_are_named(org: Organization) -> None:
    dataset = FactorDatasetFactory.create(source="desnz", version="2025-b")

    def restatement(scope: dict[str, Any]) -> Restatement:
        job = Job.objects.create(organization=org, kind="recalculation", state="succeeded")
        return Restatement.objects.create(
            job=job, organization=org, target_dataset=dataset, scope=scope, total_before_kg=Decimal(100),
            total_after_kg=Decimal(110), change_pct=Decimal("10.0000"), threshold_pct=Decimal(5), significant=True,
        )  # fmt: skip

    in_year = restatement({"period_from": "2025-01-01", "period_to": "2025-06-30"})
    unbounded = restatement({})
    restatement({"period_from": "2023-01-01", "period_to": "2023-12-31"})  # neither window
    in_base = restatement({"period_to": "2022-12-31"})
    org.base_year = 2022
    org.save()
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert [r["id"] for r in report["restatements"]] == [in_year.pk, unbounded.pk, in_base.pk]
    assert report["restatements"][0]["dataset"] == "desnz:2025-b"
    assert report["restatements"][0]["change_pct"] == "10.0000"


def test_the_emissions_sum_to_the_same_groups_as_the_rollups(org: Organization, factors: None) -> None:
    """Summed by PostgreSQL (ROLLUP_READS off), or here (the embedded SQLite default): the rows the rollups give."""
    call_command("seed_demo", "--org", org.slug, "--activities", "300", "--end-month", "2025-12", stdout=StringIO())
    supplier = SupplierFactory(organization=org)
    emission(org, "7.5", biogenic_co2_kg=Decimal("1"), activity__supplier=supplier)
    rollups_flush()
    from_rollups = _rows(org.pk, *YEAR)
    assert len(from_rollups) > 5
    assert _rows_from_emissions(org.pk, *YEAR) == from_rollups
    assert _rows_summed_by_postgresql(org.pk, *YEAR) == from_rollups


def test_another_organizations_emissions_are_not_counted(org: Organization, other_org: Organization) -> None:
    emission(org, "10")
    emission(other_org, "999")
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert (report["total"]["co2e_kg"], report["total"]["count"]) == ("10.000000", 1)


def test_an_excluded_category_is_not_relevant_with_its_explanation(org: Organization) -> None:
    emission(org, "10", activity__category=8)  # excluded, yet with a result: still summed and shown
    CategoryExclusion.objects.create(organization=org, category=8, explanation="No upstream leased assets.")
    CategoryExclusion.objects.create(organization=org, category=14, explanation="No franchises.")
    report = inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500)
    assert [(c["category"], c["status"], c["explanation"]) for c in report["categories"] if c["explanation"]] == [
        (8, "not_relevant", "No upstream leased assets."),
        (14, "not_relevant", "No franchises."),
    ]
    assert category(report, 8)["co2e_kg"] == "10.000000"
    assert category(report, 1)["status"] == "not_calculated" and category(report, 1)["explanation"] is None


def test_a_period_of_some_months_compares_with_the_same_months_of_the_base_year(org: Organization) -> None:
    emission(org, "100", year=2022, month=2)  # the base year's first quarter
    emission(org, "999", year=2022, month=7)  # not in it
    emission(org, "90", year=2025, month=3)
    emission(org, "40", year=2026, month=2)  # a fiscal year April 2025 to March 2026 holds it
    org.base_year = 2022
    org.save()
    quarter = inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 3, 31), draws=500)
    assert quarter["base_year"]["period_from"] == dt.date(2022, 1, 1)
    assert quarter["base_year"]["period_to"] == dt.date(2022, 3, 31)
    assert (quarter["base_year"]["co2e_t"], quarter["base_year"]["change_pct"]) == ("0.100000000", "-10.00")
    fiscal = inventory(org, period_from=dt.date(2025, 4, 1), period_to=dt.date(2026, 3, 31), draws=500)
    assert (fiscal["base_year"]["period_from"], fiscal["base_year"]["period_to"]) == (
        dt.date(2022, 4, 1),
        dt.date(2023, 3, 31),
    )
    assert fiscal["base_year"]["co2e_t"] == "0.999000000" and fiscal["total"]["co2e_t"] == "0.040000000"


def test_a_supplier_specific_line_that_fell_back_counts_as_the_method_it_used(org: Organization) -> None:
    emission(org, "30", data_quality=POOR, activity__method="supplier_specific")  # scored as spend: fell back
    line = category(inventory(org, period_from=YEAR[0], period_to=YEAR[1], draws=500), 1)
    assert [m["method"] for m in line["methods"]] == ["spend"]
    assert line["primary_data_share"] == "0.00"
