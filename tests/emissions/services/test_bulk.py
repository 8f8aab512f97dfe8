"""emissions.services.bulk: activities_create's COPY writes what bulk_create writes, ids linked, all or nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, IntegrityError, NotSupportedError, connections
from django.db.models import Model
from psycopg.types.json import Jsonb

from calculator.types import CalculationInput
from emissions.models import ActivityRecord, Emission, EmissionFactor, FactorDataset, Method, Organization, Supplier
from emissions.services import activities, bulk
from emissions.services.activities import (
    ActivitiesInvalidError,
    ActivityInput,
    activities_create,
    default_write_method,
)
from emissions.services.bulk import activities_delete_for_org
from tests.factories import (
    ActivityRecordFactory,
    EmissionFactorFactory,
    EmissionFactory,
    FactorDatasetFactory,
    SupplierFactory,
)

pytestmark = pytest.mark.django_db

MICRO = Decimal("0.000001")
JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))
FEB = (dt.date(2025, 2, 1), dt.date(2025, 2, 28))
# Everything but the keys and the timestamps each write stamps: those differ between two writes by design.
ACTIVITY_FIELDS = [
    f.attname for f in ActivityRecord._meta.concrete_fields if f.attname not in ("id", "created_at", "organization_id")
]
EMISSION_FIELDS = [
    f.attname
    for f in Emission._meta.concrete_fields
    if f.attname not in ("id", "activity_id", "calculated_at", "organization_id")
]


@pytest.fixture
def supplier(org: Organization) -> Supplier:
    return SupplierFactory.create(organization=org, naics="331110")


@pytest.fixture
def factors() -> dict[str, EmissionFactor]:
    desnz = FactorDatasetFactory.create(source=FactorDataset.Source.DESNZ, version="2025", basis_year=2025)
    epa = FactorDatasetFactory.create(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="1.3.0", basis_year=2022)
    return {
        "power": EmissionFactorFactory.create(
            dataset=desnz,
            activity="desnz:7_400_4000_5",
            unit="kWh",
            co2e_per_unit=Decimal("0.17700"),
            gases={"CO2": "0.17489", "CH4": "0.00089", "N2O": "0.00122"},
            # DESNZ's outside-of-scopes biogenic CO2 of UK electricity: a nullable column both writers must fill.
            biogenic_co2_per_unit=Decimal("0.11507"),
        ),
        "freight": EmissionFactorFactory.create(
            dataset=desnz, activity="desnz:27_304_3140_14", unit="t*km", unit_label="tonne.km", co2e_per_unit="0.10163"
        ),
        "steel": EmissionFactorFactory.create(
            dataset=epa,
            activity="naics:331110",
            region="US",
            year=2022,
            unit="USD",
            unit_label="USD",
            currency="USD",
            co2e_per_unit=Decimal("0.787"),
        ),
    }


def mixed_items(supplier: Supplier) -> list[ActivityInput]:
    """Activity, distance and spend lines: unit conversions, null mass/distance/year, fallbacks, suppliers."""
    return [
        ActivityInput(
            calculation=CalculationInput(
                category=3,
                method=Method.ACTIVITY,
                amount=Decimal("1.234567"),
                unit="MWh",
                activity="desnz:7_400_4000_5",
                supplier_id=supplier.pk,
            ),
            period_start=JAN[0],
            period_end=JAN[1],
            external_ref="A-1",
        ),
        ActivityInput(
            calculation=CalculationInput(
                category=4,
                method=Method.DISTANCE,
                amount=Decimal("2400.000000"),
                unit="t*km",
                activity="desnz:27_304_3140_14",
                mass=Decimal("12.50"),
                mass_unit="t",
                distance=Decimal("192.00"),
                distance_unit="km",
                year=2025,
            ),
            period_start=FEB[0],
            period_end=FEB[1],
            external_ref="A-2",
        ),
        ActivityInput(
            calculation=CalculationInput(
                category=1,
                method=Method.SPEND,
                amount=Decimal("98765.43"),
                unit="USD",
                activity="naics:331110",
                region="US",
                currency="USD",
                spend_year=2022,
                supplier_id=supplier.pk,
            ),
            period_start=JAN[0],
            period_end=JAN[1],
            external_ref="A-3",
        ),
    ]


def create_by_copy(*, organization: Organization, items: list[ActivityInput]) -> int:
    """``activities_create`` with the COPY writer; the number of activities written."""
    return len(activities_create(organization=organization, items=items, method="copy"))


def snapshot(org: Organization) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every activity of ``org`` with its emission, as field values, in external_ref order."""
    activities = ActivityRecord.objects.for_org(org).order_by("external_ref")
    emissions = {e["activity_id"]: e for e in Emission.objects.for_org(org).values("activity_id", *EMISSION_FIELDS)}
    rows = []
    for activity in activities.values("id", *ACTIVITY_FIELDS):
        emission = emissions.pop(activity.pop("id"))
        emission.pop("activity_id")
        rows.append((activity, emission))
    assert not emissions  # no emission without its activity
    return rows


def test_copy_is_the_default_on_postgresql():
    assert default_write_method() == "copy"


def test_copy_writes_the_same_rows_as_bulk_create(org, supplier, factors):
    activities_create(organization=org, items=mixed_items(supplier), method="bulk_create")
    expected = snapshot(org)
    activities_delete_for_org(organization=org)

    assert create_by_copy(organization=org, items=mixed_items(supplier)) == 3

    assert snapshot(org) == expected
    activity = expected[1][0]
    # The comparison covered real values: exact Decimals, dates, NULLs and every JSON column.
    assert activity["mass"] == Decimal("12.50") and activity["period_start"] == FEB[0]
    assert expected[0][0]["mass"] is None and expected[0][0]["distance"] is None
    assert expected[0][1]["co2e_kg"] == Decimal("218.518359")  # 1.234567 MWh x 0.177 kg/kWh
    assert expected[0][1]["biogenic_co2_kg"] == Decimal("142.061625")  # 1.234567 MWh x 0.11507 kg/kWh
    assert expected[1][1]["biogenic_co2_kg"] is None  # the freight factor has no biogenic figure
    assert expected[0][1]["gases"] and expected[0][1]["fallbacks"]  # year taken from the period
    assert expected[2][0]["currency"] == "USD" and expected[1][0]["currency"] == ""


def test_ids_link_one_to_one_and_timestamps_are_set(org, supplier, factors):
    create_by_copy(organization=org, items=mixed_items(supplier) * 4)
    activities = ActivityRecord.objects.for_org(org)
    emissions = list(Emission.objects.for_org(org).select_related("activity"))
    assert activities.count() == len(emissions) == 12
    assert len({e.activity_id for e in emissions}) == 12
    for emission in emissions:
        assert emission.activity.organization_id == org.pk
        assert emission.category == emission.activity.category
        assert emission.period_start == emission.activity.period_start
        assert emission.supplier_id == emission.activity.supplier_id
        assert emission.calculated_at is not None and emission.activity.created_at is not None


def test_returned_records_are_the_stored_rows(org, supplier, factors, django_assert_num_queries):
    # Savepoint and release, suppliers, the candidates of every activity named (one query, primed), supplier
    # factors, supplier check, the exchange-rate set and the price-index set a spend line may convert with (primed
    # before its factor, and so its price year, is known), 2 id reservations. The two COPY statements go to psycopg
    # directly: Django's query log (and this count) does not see them.
    with django_assert_num_queries(10):
        records = activities_create(organization=org, items=mixed_items(supplier), method="copy")
    stored = {e.pk: e for e in Emission.objects.for_org(org)}
    assert [r.external_ref for r in records] == ["A-1", "A-2", "A-3"]
    for record in records:
        # As after bulk_create: pks set (the emission's too), saved state, reverse one-to-one filled in.
        assert not record._state.adding and not record.emission._state.adding
        assert stored[record.emission.pk].activity_id == record.pk
        assert stored[record.emission.pk].co2e_kg == record.emission.co2e_kg
    # A later save() updates the copied row instead of inserting a duplicate.
    records[0].external_ref = "A-1b"
    records[0].save(update_fields=["external_ref"])
    assert ActivityRecord.objects.get(pk=records[0].pk).external_ref == "A-1b"


def test_json_columns_are_jsonb_and_round_trip(org, supplier, factors):
    create_by_copy(organization=org, items=mixed_items(supplier))
    emission = Emission.objects.for_org(org).get(activity__external_ref="A-1")
    # 1.234567 MWh = 1234.567 kWh times each per-kWh gas factor, as strings of 6-decimal Decimals.
    per_kwh = {"CO2": "0.17489", "CH4": "0.00089", "N2O": "0.00122"}
    assert emission.gases == {
        gas: str((Decimal("1234.567") * Decimal(v)).quantize(MICRO)) for gas, v in per_kwh.items()
    }
    assert isinstance(emission.data_quality, dict) and emission.data_quality["score"]
    assert isinstance(emission.fallbacks, list) and emission.fallbacks[0]["code"] == "year_from_period"
    assert emission.warnings == []
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(
            "SELECT jsonb_typeof(gases), jsonb_typeof(data_quality), jsonb_typeof(fallbacks), jsonb_typeof(warnings) "
            "FROM emissions_emission WHERE id = %s",
            [emission.pk],
        )
        # Objects and arrays, not JSON strings holding serialized text.
        assert cursor.fetchone() == ("object", "object", "array", "array")
    # The database can query into them, which a double-encoded string would not allow.
    assert Emission.objects.filter(gases__CO2=emission.gases["CO2"], fallbacks__0__code="year_from_period").count() == 1


def test_sequence_is_advanced_past_the_copied_ids(org, supplier, factors):
    create_by_copy(organization=org, items=mixed_items(supplier))
    highest = ActivityRecord.objects.order_by("-id").values_list("id", flat=True)[0]
    # Ordinary inserts after a COPY take the next ids; they would collide if COPY had bypassed the sequence.
    later = ActivityRecordFactory.create(organization=org, supplier=supplier)
    assert later.pk > highest
    EmissionFactory.create(organization=org, activity=later, factor=factors["power"])
    assert ActivityRecord.objects.for_org(org).count() == 4


class Boom(Exception):
    pass


def _fail_in_activity_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third activity breaks a check constraint: the server rejects the COPY after two good rows."""
    original = activities.activity_record_build
    calls = {"n": 0}

    def record(*args: Any) -> ActivityRecord:
        row = original(*args)
        calls["n"] += 1
        if calls["n"] == 3:
            row.category = 99
        return row

    monkeypatch.setattr(activities, "activity_record_build", record)


def _fail_in_emission_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python fails while emissions stream, after every activity was copied."""
    original = bulk._copy

    def copy(model: type[Model], objects: Iterable[Model], *, with_pk: bool) -> int:
        if model is not Emission:
            return original(model, objects, with_pk=with_pk)

        def failing() -> Iterator[Model]:
            for n, obj in enumerate(objects, start=1):
                if n == 2:
                    raise Boom("second emission")
                yield obj

        return original(model, failing(), with_pk=with_pk)

    monkeypatch.setattr(bulk, "_copy", copy)


@pytest.mark.parametrize(
    ("break_it", "error"), [(_fail_in_activity_copy, IntegrityError), (_fail_in_emission_copy, Boom)]
)
def test_a_failure_mid_copy_leaves_nothing(org, supplier, factors, monkeypatch, break_it, error):
    break_it(monkeypatch)
    with pytest.raises(error):
        create_by_copy(organization=org, items=mixed_items(supplier))
    assert not ActivityRecord.objects.exists()
    assert not Emission.objects.exists()
    # The connection is still usable: the failed call was rolled back to its savepoint.
    monkeypatch.undo()
    assert create_by_copy(organization=org, items=mixed_items(supplier)) == 3


def test_invalid_items_are_all_reported_and_nothing_written(org, other_org, supplier, factors):
    theirs = SupplierFactory.create(organization=other_org)
    items = mixed_items(supplier)
    bad_unit = ActivityInput(
        calculation=CalculationInput(
            category=3, method=Method.ACTIVITY, amount=Decimal(1), unit="kg", activity="desnz:7_400_4000_5"
        ),
        period_start=JAN[0],
        period_end=JAN[1],
    )
    foreign = ActivityInput(
        calculation=CalculationInput(
            category=3,
            method=Method.ACTIVITY,
            amount=Decimal(1),
            unit="kWh",
            activity="desnz:7_400_4000_5",
            supplier_id=theirs.pk,
        ),
        period_start=JAN[0],
        period_end=JAN[1],
    )
    with pytest.raises(ActivitiesInvalidError) as info:
        create_by_copy(organization=org, items=[*items, bad_unit, foreign])
    errors = {e.index: e.errors for e in info.value.errors}
    assert set(errors) == {3, 4}
    assert "unit" in errors[3]
    assert "supplier" in errors[4]
    assert not ActivityRecord.objects.exists()


def test_empty_batch_writes_nothing(org, django_assert_num_queries):
    with django_assert_num_queries(2):  # the savepoint and its release: no reservation, no COPY
        assert create_by_copy(organization=org, items=[]) == 0
    assert not ActivityRecord.objects.exists()


def test_refuses_other_databases(org, monkeypatch):
    monkeypatch.setattr(connections[DEFAULT_DB_ALIAS], "vendor", "sqlite")
    assert default_write_method() == "bulk_create"
    with pytest.raises(NotSupportedError, match="PostgreSQL"):
        create_by_copy(organization=org, items=[])


def test_delete_for_org_deletes_only_that_org(org, other_org, supplier, factors):
    create_by_copy(organization=org, items=mixed_items(supplier))
    theirs = EmissionFactory.create(organization=other_org, factor=factors["power"])
    assert activities_delete_for_org(organization=org) == (3, 3)
    assert not ActivityRecord.objects.for_org(org).exists()
    assert not Emission.objects.for_org(org).exists()
    assert Emission.objects.get() == theirs
    assert ActivityRecord.objects.get() == theirs.activity


def test_copy_prepares_each_value_as_bulk_create_would(org, supplier, factors):
    """Fields COPY passes through unprepared are exactly those whose preparation changes nothing."""
    db = connections[DEFAULT_DB_ALIAS]
    records = activities_create(organization=org, items=mixed_items(supplier), method="bulk_create")
    for model, objects in ((ActivityRecord, records), (Emission, [r.emission for r in records])):
        columns = bulk.copy_columns(model, with_pk=True)
        for obj in objects:
            for (_, attname, prep), field in zip(columns, model._meta.concrete_fields, strict=True):
                value = getattr(obj, attname)
                copied, inserted = prep(value), field.get_db_prep_save(value, connection=db)
                if isinstance(inserted, Jsonb):  # a wrapper without equality: compare what it wraps
                    assert isinstance(copied, Jsonb)
                    copied, inserted = copied.obj, inserted.obj
                # Django may send a subtype as a type hint (Int2 for small integers); COPY writes both the same.
                assert copied == inserted and isinstance(inserted, type(copied)), (model, attname)
    prepared = {
        attname for _, attname, prep in bulk.copy_columns(Emission, with_pk=True) if prep is not bulk._unchanged
    }
    # The JSON columns must go through Django (psycopg needs them wrapped as Jsonb), as must the one-to-one.
    assert prepared == {"activity_id", "gases", "data_quality", "fallbacks", "warnings", "conversion"}
