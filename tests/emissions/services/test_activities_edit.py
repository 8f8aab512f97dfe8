"""emissions.services.activities: editing a stored activity (recalculated in place) and deleting one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction

from calculator.types import CalculationError, CalculationInput
from emissions.calculation import calculate_in_period
from emissions.models import ActivityRecord, Emission, Organization
from emissions.services.activities import ActivityInput, activities_create, activity_delete, activity_update
from tests.emissions.api.payloads import FREIGHT_ACTIVITY
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, OrganizationFactory, SupplierFactory
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db

JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))
ELECTRICITY = CalculationInput(
    category=3, method="activity", activity="desnz:7_400_4000_5", amount=Decimal(1), unit="MWh"
)


def stored(org: Organization, calculation: CalculationInput = ELECTRICITY, period=JAN, **kwargs: Any) -> ActivityRecord:
    """One activity stored as POST /activities/ stores it."""
    return activities_create(
        organization=org, items=[ActivityInput(calculation, period_start=period[0], period_end=period[1], **kwargs)]
    )[0]


def snapshot(record_id: int) -> tuple[Any, Any]:
    """Every column of the activity and of its emission, as stored."""
    [row] = ActivityRecord.objects.filter(pk=record_id).values()
    [emission_row] = Emission.objects.filter(activity_id=record_id).values()
    return row, emission_row


@pytest.fixture
def old_electricity_factor():
    """An older edition of the UK electricity factor (2010), beside the 2025 one."""
    dataset = FactorDatasetFactory.create(source="desnz", version="2010", basis_year=2010)
    return EmissionFactorFactory.create(
        dataset=dataset, activity="desnz:7_400_4000_5", region="GB", year=2010, unit="kWh", co2e_per_unit="0.5"
    )


def test_a_new_amount_is_recalculated_in_place(org, electricity_factor):
    record = stored(org, external_ref="INV-1")
    emission = record.emission
    updated = activity_update(organization=org, activity_id=record.pk, changes={"amount": "2.5"})

    expected = calculate_in_period(
        dataclasses.replace(ELECTRICITY, amount=Decimal("2.5")), period_year=2025, organization=org
    )
    row, emission_row = snapshot(record.pk)
    assert row["amount"] == Decimal("2.5")
    assert row["external_ref"] == "INV-1"  # what the changes leave out keeps what was sent
    assert emission_row["id"] == emission.pk  # the same rows, updated
    assert emission_row["co2e_kg"] == expected.co2e_kg != emission.co2e_kg
    assert emission_row["calculated_at"] > emission.calculated_at
    assert ActivityRecord.objects.count() == Emission.objects.count() == 1
    # The returned record carries what a response shows, loaded as with_related() loads it.
    assert updated.pk == record.pk and updated.emission.pk == emission.pk
    assert updated.emission.co2e_kg == expected.co2e_kg
    assert updated.emission.factor.dataset.version == "2025"
    assert updated.created_at == record.created_at


def test_a_year_left_to_the_period_follows_a_new_period(org, electricity_factor, old_electricity_factor):
    record = stored(org, period=(dt.date(2012, 5, 1), dt.date(2012, 5, 31)))
    assert (record.year, record.emission.factor_id) == (2012, old_electricity_factor.pk)

    updated = activity_update(
        organization=org, activity_id=record.pk, changes={"period_start": "2025-03-01", "period_end": "2025-03-31"}
    )

    assert (updated.year, updated.emission.factor_id) == (2025, electricity_factor.pk)
    assert [note["code"] for note in updated.emission.fallbacks] == ["year_from_period"]


def test_a_year_that_was_sent_stays_when_the_period_changes(org, electricity_factor, old_electricity_factor):
    record = stored(org, dataclasses.replace(ELECTRICITY, year=2010))
    updated = activity_update(
        organization=org, activity_id=record.pk, changes={"period_start": "2024-03-01", "period_end": "2024-03-31"}
    )
    assert (updated.year, updated.emission.factor_id) == (2010, old_electricity_factor.pk)


def test_a_mass_times_distance_line_recomputes_its_amount(org):
    dataset = FactorDatasetFactory.create(source="desnz", version="2025", basis_year=2025)
    EmissionFactorFactory.create(
        dataset=dataset, activity=FREIGHT_ACTIVITY, unit="t*km", unit_label="tonne.km", co2e_per_unit="0.17146"
    )
    freight = CalculationInput(
        category=4,
        method="distance",
        activity=FREIGHT_ACTIVITY,
        amount=Decimal(1200),
        unit="t*km",
        mass=Decimal(20),
        mass_unit="t",
        distance=Decimal(60),
        distance_unit="km",
    )
    record = stored(org, freight)
    updated = activity_update(organization=org, activity_id=record.pk, changes={"mass": "10"})
    expected = calculate_in_period(
        dataclasses.replace(freight, amount=Decimal(600), mass=Decimal(10)), period_year=2025, organization=org
    )
    assert updated.amount == Decimal(600)
    assert updated.emission.co2e_kg == expected.co2e_kg


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"unit": "kg"}, "unit"),  # valid shape, but electricity is not a mass: the calculator's error
        ({"period_end": "2024-12-31"}, "period_end"),
        ({"amout": "2"}, "amout"),
        ({"activity": "no-such-factor"}, "activity"),
    ],
)
def test_an_invalid_change_names_the_field_and_writes_nothing(org, electricity_factor, changes, field):
    record = stored(org)
    before = snapshot(record.pk)
    with pytest.raises(CalculationError) as raised:
        activity_update(organization=org, activity_id=record.pk, changes=changes)
    assert field in raised.value.errors
    assert snapshot(record.pk) == before


def test_changes_that_are_no_object_are_an_error(org, electricity_factor):
    record = stored(org)
    with pytest.raises(CalculationError) as raised:
        activity_update(organization=org, activity_id=record.pk, changes=[{"amount": "2"}])
    assert list(raised.value.errors) == ["non_field_errors"]


def test_another_organizations_supplier_is_refused(org, other_org, electricity_factor):
    record = stored(org)
    theirs = SupplierFactory.create(organization=other_org)
    before = snapshot(record.pk)
    with pytest.raises(CalculationError) as raised:
        activity_update(organization=org, activity_id=record.pk, changes={"supplier": theirs.pk})
    assert raised.value.errors == {"supplier": [f"Unknown supplier id {theirs.pk}."]}
    assert snapshot(record.pk) == before


def test_a_supplier_of_the_organization_is_set_on_both_rows(org, electricity_factor):
    record = stored(org)
    ours = SupplierFactory.create(organization=org)
    updated = activity_update(organization=org, activity_id=record.pk, changes={"supplier": ours.pk})
    row, emission_row = snapshot(record.pk)
    assert row["supplier_id"] == emission_row["supplier_id"] == ours.pk
    assert updated.supplier == ours


def test_another_organizations_activity_does_not_exist(org, other_org, electricity_factor):
    record = stored(other_org)
    before = snapshot(record.pk)
    # Two service calls, each one unit of work (one lookup each, not an N+1).
    with unit_of_work(), pytest.raises(ActivityRecord.DoesNotExist):
        activity_update(organization=org, activity_id=record.pk, changes={"amount": "2"})
    with unit_of_work(), pytest.raises(ActivityRecord.DoesNotExist):
        activity_delete(organization=org, activity_id=record.pk)
    assert snapshot(record.pk) == before


def test_delete_removes_the_activity_and_its_emission(org, electricity_factor):
    kept, deleted = stored(org), stored(org)
    activity_delete(organization=org, activity_id=deleted.pk)
    assert list(ActivityRecord.objects.values_list("pk", flat=True)) == [kept.pk]
    assert list(Emission.objects.values_list("activity_id", flat=True)) == [kept.pk]


def _waiting_for_a_lock(deadline_seconds: float = 30.0) -> bool:
    """Whether another session of this database is waiting for a row lock (polled until it is, or the deadline)."""
    end = time.monotonic() + deadline_seconds
    while time.monotonic() < end:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)  # the second editor runs on its own connection, in a thread
def test_concurrent_edits_apply_one_after_the_other(electricity_factor):
    """An edit that starts while another holds the activity waits for it, then applies its change to the other's
    result: neither change is lost, and the emission is that of the final input."""
    org = OrganizationFactory.create()
    record = stored(org)
    errors: list[BaseException] = []

    def second_editor() -> None:
        try:
            activity_update(organization=org, activity_id=record.pk, changes={"external_ref": "PO-2"})
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connections.close_all()

    with transaction.atomic():
        activity_update(organization=org, activity_id=record.pk, changes={"amount": "3"})
        thread = threading.Thread(target=second_editor)
        thread.start()
        # The second edit is blocked on the row this transaction locked (it would have read the old amount).
        assert _waiting_for_a_lock()
    thread.join()

    assert errors == []
    row, emission_row = snapshot(record.pk)
    assert (row["amount"], row["external_ref"]) == (Decimal(3), "PO-2")
    expected = calculate_in_period(
        dataclasses.replace(ELECTRICITY, amount=Decimal(3)), period_year=2025, organization=org
    )
    assert emission_row["co2e_kg"] == expected.co2e_kg
