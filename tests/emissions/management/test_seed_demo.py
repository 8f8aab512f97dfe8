"""Tests for ``manage.py seed_demo``, on factors made by factories with the real activity keys."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from calculator.units import convert
from emissions.management.commands.seed_demo import DESNZ_KEYS, Command, FactorKey
from emissions.models import ActivityRecord, Emission, FactorDataset, Method, Organization, Supplier
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, OrganizationFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

MICRO = Decimal("0.000001")
NAICS = {"331110": "0.769", "333120": "0.412", "484110": "0.874", "541511": "0.105"}
# One real key per DESNZ group (the first of each list), with its 2025 factor and unit.
DESNZ = {
    "energy": ("kWh", "0.01853"),
    "materials": ("t", "3172.49932"),
    "waste": ("t", "520.53270"),
    "freight": ("t*km", "0.10163"),
    "travel": ("passenger*km", "0.12576"),
    "commuting": ("passenger*km", "0.10385"),
}


@pytest.fixture
def factors() -> None:
    epa = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="1.3.0", basis_year=2022)
    for code, value in NAICS.items():
        EmissionFactorFactory(
            dataset=epa,
            activity=f"naics:{code}",
            region="US",
            year=2022,
            unit="USD",
            unit_label="USD",
            currency="USD",
            co2e_per_unit=Decimal(value),
        )
    desnz = FactorDatasetFactory(source=FactorDataset.Source.DESNZ, version="2025", basis_year=2025)
    for group, (unit, value) in DESNZ.items():
        EmissionFactorFactory(
            dataset=desnz, activity=DESNZ_KEYS[group][0], unit=unit, unit_label=unit, co2e_per_unit=Decimal(value)
        )


def seed(*extra: str, activities: int = 400, seed: int = 7) -> str:
    out = StringIO()
    call_command(
        "seed_demo",
        "--org", "demo",
        "--suppliers", "12",
        "--activities", str(activities),
        "--months", "6",
        "--end-month", "2025-06",
        "--seed", str(seed),
        "--batch-size", "150",
        "--verbosity", "0",
        *extra,
        stdout=out,
    )  # fmt: skip
    return out.getvalue()


def totals() -> dict[int, Decimal]:
    return dict(Emission.objects.values_list("category").annotate(kg=Sum("co2e_kg")).order_by("category"))


def test_seeds_counts_categories_and_periods(factors):
    output = seed()
    org = Organization.objects.get(slug="demo")
    assert Supplier.objects.for_org(org).count() == 12
    assert ActivityRecord.objects.for_org(org).count() == 400
    assert Emission.objects.for_org(org).count() == 400
    categories = set(ActivityRecord.objects.values_list("category", flat=True))
    assert categories == {1, 2, 3, 4, 5, 6, 7, 9, 12}
    assert set(ActivityRecord.objects.values_list("method", flat=True)) == {
        Method.SPEND,
        Method.ACTIVITY,
        Method.DISTANCE,
    }
    starts = set(ActivityRecord.objects.values_list("period_start", flat=True))
    assert starts == {dt.date(2025, m, 1) for m in range(1, 7)}
    assert not ActivityRecord.objects.filter(emission__isnull=True).exists()
    assert set(Supplier.objects.values_list("naics", flat=True)) <= set(NAICS)
    assert "400 activities + 400 emissions" in output
    assert "rows/s" in output


def test_every_emission_is_amount_times_factor(factors):
    seed()
    emissions = Emission.objects.select_related("activity__supplier", "factor__dataset")
    checked = set()
    for emission in emissions:
        activity, factor = emission.activity, emission.factor
        assert emission.category == activity.category
        assert emission.method == activity.method
        assert emission.period_start == activity.period_start
        assert emission.supplier_id == activity.supplier_id
        if activity.method == Method.SPEND:
            # USD at 2022 prices against 2022-USD factors: no exchange or inflation step.
            assert activity.spend_year == factor.dataset.basis_year == 2022
            converted = activity.amount
            assert factor.activity == f"naics:{activity.supplier.naics}"
        elif activity.mass is not None:
            converted = convert(
                activity.mass * activity.distance, f"{activity.mass_unit}*{activity.distance_unit}", factor.unit
            )
        else:
            converted = convert(activity.amount, activity.unit, factor.unit)
        expected = (converted * factor.co2e_per_unit).quantize(MICRO, rounding=ROUND_HALF_EVEN)
        assert emission.co2e_kg == expected, (activity.pk, activity.unit, factor.activity)
        assert emission.data_quality["score"]
        checked.add(activity.unit)
    # Inputs arrive in several units, so the conversions really were exercised.
    assert {"USD", "kWh", "t*km", "passenger*km"} <= checked
    assert checked & {"MWh", "kg", "passenger*mile"}


def test_same_seed_same_totals_other_seed_differs(factors):
    seed()
    first = totals()
    seed("--reset")
    assert ActivityRecord.objects.count() == 400  # reset replaced, not appended
    assert totals() == first
    seed("--reset", seed=8)
    assert totals() != first


def test_refuses_to_seed_twice_without_reset(factors):
    seed(activities=50)
    with pytest.raises(CommandError, match="--reset"):
        seed(activities=50)
    assert ActivityRecord.objects.count() == 50


def test_missing_factors_tell_to_import_first():
    with pytest.raises(CommandError, match="import_factors"):
        seed(activities=10)
    assert not ActivityRecord.objects.exists()
    assert not Supplier.objects.exists()


def test_missing_one_group_names_it(factors):
    from emissions.models import EmissionFactor

    EmissionFactor.objects.filter(activity=DESNZ_KEYS["freight"][0]).delete()
    with pytest.raises(CommandError, match="freight"):
        seed(activities=10)
    assert not ActivityRecord.objects.exists()


def test_bad_sizes_are_refused(factors):
    with pytest.raises(CommandError, match="--activities"):
        seed(activities=0)


def test_if_empty_skips_an_org_with_data(factors):
    seed(activities=50)
    output = seed("--if-empty", activities=80)
    assert "nothing seeded" in output
    assert ActivityRecord.objects.count() == 50


def test_catalog_dedupes_in_python_not_with_postgres_distinct_on(factors):
    # A second, newer EPA version repeats naics:331110/US: the catalog still has one key per (activity, region).
    newer = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="1.4.0", basis_year=2023)
    EmissionFactorFactory(
        dataset=newer, activity="naics:331110", region="US", year=2023, unit="USD", currency="USD", unit_label="USD"
    )
    with CaptureQueriesContext(connection) as queries:
        catalog = Command._catalog(OrganizationFactory())
    # DISTINCT ON exists only on PostgreSQL; the demo must also seed the README's SQLite database.
    assert not any("DISTINCT ON" in q["sql"].upper() for q in queries.captured_queries)
    assert catalog.naics == [FactorKey(f"naics:{code}", "US", "USD") for code in sorted(NAICS)]
    assert Command._catalog(OrganizationFactory()).naics == catalog.naics  # deterministic


def rows_by_ref() -> list[tuple[Any, ...]]:
    """Every seeded activity with its emission's values, without ids and timestamps, in external_ref order."""
    activity_fields = [f.attname for f in ActivityRecord._meta.concrete_fields if f.attname not in ("id", "created_at")]
    emission_fields = [
        f"emission__{f.attname}"
        for f in Emission._meta.concrete_fields
        if f.attname not in ("id", "activity_id", "calculated_at")
    ]
    return list(ActivityRecord.objects.order_by("external_ref").values_list(*activity_fields, *emission_fields))


def test_copy_and_bulk_create_write_the_same_rows(factors):
    output = seed("--method", "bulk_create")
    assert "with bulk_create" in output
    by_bulk_create = rows_by_ref()
    output = seed("--reset", "--method", "copy")
    assert "with copy" in output
    by_copy = rows_by_ref()
    assert len(by_copy) == 400
    assert by_copy == by_bulk_create
    # Every emission is linked to its own activity, one to one.
    assert Emission.objects.count() == Emission.objects.values("activity").distinct().count() == 400


def test_copy_is_the_default_on_postgresql_and_analyze_runs(factors):
    output = seed()
    assert "with copy" in output
    assert "ANALYZE" in output
    with connection.cursor() as cursor:
        # ANALYZE writes its row count into pg_class at once (and counts this transaction's own new rows);
        # without it a freshly loaded table keeps the planner's old estimate.
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE relname IN (%s, %s)",
            [ActivityRecord._meta.db_table, Emission._meta.db_table],
        )
        assert dict(cursor.fetchall()) == {ActivityRecord._meta.db_table: 400, Emission._meta.db_table: 400}


def test_other_databases_default_to_bulk_create_and_refuse_copy(monkeypatch):
    monkeypatch.setattr(connections[DEFAULT_DB_ALIAS], "vendor", "sqlite")
    assert Command._method(None) == "bulk_create"
    assert Command._method("bulk_create") == "bulk_create"
    with pytest.raises(CommandError, match="--method copy needs PostgreSQL"):
        Command._method("copy")


def test_reset_deletes_only_this_orgs_rows(factors):
    other = OrganizationFactory(slug="other")
    seed(activities=30)
    # A second org's data survives the demo org's reset.
    call_command(
        "seed_demo", "--org", other.slug, "--suppliers", "3", "--activities", "20", "--months", "2",
        "--end-month", "2025-06", "--verbosity", "0", stdout=StringIO(),
    )  # fmt: skip
    output = seed("--reset", activities=10)
    assert "Deleted 30 activities and 30 emissions." in output
    assert ActivityRecord.objects.filter(organization__slug="demo").count() == 10
    assert ActivityRecord.objects.filter(organization=other).count() == 20
    assert Emission.objects.filter(organization=other).count() == 20


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_load_is_vacuumed(factors):
    # Index-only scans need the visibility map, which only VACUUM sets (ANALYZE does not).
    output = seed()
    assert "Ran VACUUM (ANALYZE)" in output
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, relallvisible > 0 FROM pg_class WHERE relname IN (%s, %s)",
            [ActivityRecord._meta.db_table, Emission._meta.db_table],
        )
        assert dict(cursor.fetchall()) == {ActivityRecord._meta.db_table: True, Emission._meta.db_table: True}
        # The suppliers are analyzed too (reltuples is -1 until a table's first ANALYZE).
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [Supplier._meta.db_table])
        assert cursor.fetchone()[0] == Supplier.objects.count() > 0
