"""emissions.services.batches: a batch's items in order, each validated or carrying its validation errors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from calculator.types import CalculationInput, CalculationResult
from emissions.models import ActivityRecord, Emission
from emissions.services.activities import ActivitiesInvalidError, ActivityInput
from emissions.services.batches import activities_submit, calculations_run
from tests.factories import EmissionFactorFactory, SupplierFactory

pytestmark = pytest.mark.django_db

JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))
SHAPE_ERROR = {"amount": ["A valid number is required."]}


@pytest.fixture
def factor():
    return EmissionFactorFactory(activity="desnz:7_400_4000_5", unit="kWh", co2e_per_unit=Decimal("0.177"))


def calc(amount: str = "1", unit: str = "MWh", **kwargs) -> CalculationInput:
    return CalculationInput(
        category=3, method="activity", activity="desnz:7_400_4000_5", amount=Decimal(amount), unit=unit, **kwargs
    )


def activity(amount: str = "1", unit: str = "MWh", **kwargs) -> ActivityInput:
    return ActivityInput(calculation=calc(amount, unit, **kwargs), period_start=JAN[0], period_end=JAN[1])


# -- calculations_run ---------------------------------------------------------------------------


def test_calculations_run_keeps_order_and_passes_validation_errors_through(org, factor):
    outcomes = calculations_run(organization=org, items=[calc("1"), SHAPE_ERROR, calc(unit="parsec"), calc("2")])
    assert isinstance(outcomes[0], CalculationResult) and outcomes[0].co2e_kg == Decimal("177.000000")
    assert outcomes[1] is SHAPE_ERROR
    assert isinstance(outcomes[2], dict) and list(outcomes[2]) == ["unit"]
    assert isinstance(outcomes[3], CalculationResult) and outcomes[3].co2e_kg == Decimal("354.000000")
    assert not ActivityRecord.objects.exists() and not Emission.objects.exists()


def test_calculations_run_checks_each_items_supplier(org, other_org, factor):
    mine, theirs = SupplierFactory(organization=org), SupplierFactory(organization=other_org)
    outcomes = calculations_run(organization=org, items=[calc(supplier_id=mine.pk), calc(supplier_id=theirs.pk)])
    assert isinstance(outcomes[0], CalculationResult)
    assert outcomes[1] == {"supplier": [f"Unknown supplier {theirs.pk}."]}


def test_calculations_run_checks_suppliers_in_constant_queries(org, factor, cold_cache):
    counts = []
    for suppliers in (1, 30):
        items = [calc(supplier_id=SupplierFactory(organization=org).pk) for _ in range(suppliers)]
        cold_cache()
        with CaptureQueriesContext(connection) as captured:
            outcomes = calculations_run(organization=org, items=items)
        assert all(isinstance(outcome, CalculationResult) for outcome in outcomes)
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]


def test_calculations_run_of_only_invalid_items_queries_nothing(org, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert calculations_run(organization=org, items=[SHAPE_ERROR]) == [SHAPE_ERROR]


# -- activities_submit --------------------------------------------------------------------------


def test_activities_submit_stores_every_item(org, factor):
    records = activities_submit(organization=org, items=[activity("1"), activity("2")])
    assert [record.emission.co2e_kg for record in records] == [Decimal("177.000000"), Decimal("354.000000")]
    assert ActivityRecord.objects.for_org(org).count() == 2
    assert Emission.objects.for_org(org).count() == 2


def test_activities_submit_reports_validation_and_calculation_errors_together(org, factor):
    items = [activity("1"), SHAPE_ERROR, activity(unit="parsec"), activity("2")]
    with pytest.raises(ActivitiesInvalidError) as caught:
        activities_submit(organization=org, items=items)
    assert [error.index for error in caught.value.errors] == [1, 2]
    assert caught.value.errors[0].errors is SHAPE_ERROR
    assert list(caught.value.errors[1].errors) == ["unit"]
    assert not ActivityRecord.objects.exists() and not Emission.objects.exists()


def test_activities_submit_calculation_errors_alone_by_index(org, factor):
    with pytest.raises(ActivitiesInvalidError) as caught:
        activities_submit(organization=org, items=[activity("1"), activity(unit="parsec")])
    assert [error.index for error in caught.value.errors] == [1]
    assert not ActivityRecord.objects.exists()
