"""emissions.services.activities: calculate a batch, then store activities and emissions all or nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from calculator.types import CalculationInput
from emissions.models import ActivityRecord, Emission
from emissions.services.activities import (
    ActivitiesInvalidError,
    ActivityInput,
    activities_calculate,
    activities_create,
)
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, SupplierFactory

pytestmark = pytest.mark.django_db

JAN = (dt.date(2025, 1, 1), dt.date(2025, 1, 31))


@pytest.fixture
def factor():
    return EmissionFactorFactory(activity="desnz:7_400_4000_5", unit="kWh", co2e_per_unit=Decimal("0.177"))


def item(
    amount: str = "1", unit: str = "MWh", *, supplier_id: int | None = None, period=JAN, **kwargs
) -> ActivityInput:
    calc = CalculationInput(
        category=3,
        method="activity",
        activity="desnz:7_400_4000_5",
        amount=Decimal(amount),
        unit=unit,
        supplier_id=supplier_id,
        **kwargs,
    )
    return ActivityInput(calculation=calc, period_start=period[0], period_end=period[1], external_ref="ref")


def test_create_stores_activities_and_emissions(org, factor):
    supplier = SupplierFactory(organization=org)
    records = activities_create(organization=org, items=[item("1", supplier_id=supplier.pk), item("2")])
    assert [r.pk is not None for r in records] == [True, True]
    stored = Emission.objects.select_related("supplier", "factor").in_bulk([r.emission.pk for r in records])
    first, second = (stored[r.emission.pk] for r in records)
    assert first.co2e_kg == Decimal("177")
    assert second.co2e_kg == Decimal("354")
    assert first.supplier == supplier
    assert second.supplier is None
    assert first.factor == factor
    assert first.period_start == JAN[0]
    assert first.organization == org
    assert first.data_quality["score"]
    assert records[0].emission.co2e_kg == Decimal("177")  # cached for serialization
    assert ActivityRecord.objects.get(pk=records[0].pk).external_ref == "ref"


def test_any_invalid_item_writes_nothing(org, other_org, factor):
    theirs = SupplierFactory(organization=other_org)
    items = [item(), item(unit="kg"), item(), item(supplier_id=theirs.pk), item(period=(JAN[1], JAN[0]))]
    with pytest.raises(ActivitiesInvalidError) as info:
        activities_create(organization=org, items=items)
    errors = {e.index: e.errors for e in info.value.errors}
    assert set(errors) == {1, 3, 4}
    assert "unit" in errors[1]
    assert "supplier" in errors[3]
    assert "period_end" in errors[4]
    assert not ActivityRecord.objects.exists()
    assert not Emission.objects.exists()


def test_calculate_only_writes_nothing(org, factor):
    outcomes = activities_calculate(organization=org, items=[item(), item(unit="parsec")])
    assert outcomes[0].co2e_kg == Decimal("177")
    assert "unit" in outcomes[1]
    assert not ActivityRecord.objects.exists()


def test_currency_stored_for_spend_only(org, factor):
    steel = EmissionFactorFactory(
        activity="naics:331110",
        unit="USD",
        currency="USD",
        region="US",
        year=2022,
        co2e_per_unit=Decimal("0.787"),
        dataset__basis_year=2022,
    )
    spend = ActivityInput(
        calculation=CalculationInput(
            category=1, method="spend", activity=steel.activity, amount=Decimal(1000), unit="USD", spend_year=2022
        ),
        period_start=JAN[0],
        period_end=JAN[1],
    )
    records = activities_create(organization=org, items=[spend, item()])
    assert [r.currency for r in records] == ["USD", ""]
    assert records[0].emission.co2e_kg == Decimal("787")


# -- defaults from the period ---------------------------------------------------------------------------


def supplier_factor(org, **kwargs):
    supplier = SupplierFactory(organization=org)
    factor = EmissionFactorFactory(
        dataset=FactorDatasetFactory(organization=org, source="supplier", basis_year=2025),
        supplier=supplier,
        activity=f"supplier:{supplier.pk}",
        **kwargs,
    )
    return supplier, factor


def supplier_specific(supplier_id: int, amount: str, unit: str) -> ActivityInput:
    calc = CalculationInput(
        category=1, method="supplier_specific", amount=Decimal(amount), unit=unit, supplier_id=supplier_id
    )
    return ActivityInput(calculation=calc, period_start=JAN[0], period_end=JAN[1])


def test_supplier_specific_per_kwh_keeps_no_spend_year(org):
    """The defaulted price year plays no part when the supplier's factor is not per unit of money."""
    supplier, factor = supplier_factor(org, unit="kWh", co2e_per_unit=Decimal("0.1"))
    [record] = activities_create(organization=org, items=[supplier_specific(supplier.pk, "100", "kWh")])
    assert (record.year, record.spend_year, record.currency) == (2025, None, "")
    assert record.emission.factor == factor
    assert [note["code"] for note in record.emission.fallbacks] == ["year_from_period"]


def test_supplier_specific_per_dollar_is_spend_with_the_periods_price_year(org):
    supplier, factor = supplier_factor(org, unit="USD", currency="USD", co2e_per_unit=Decimal("0.3"))
    [record] = activities_create(organization=org, items=[supplier_specific(supplier.pk, "100", "")])
    assert record.emission.factor == factor
    # Period 2025 = the factor's price year 2025: no price index needed.
    assert (record.year, record.spend_year, record.currency) == (2025, 2025, "USD")
    assert record.emission.co2e_kg == Decimal("30")
    assert [note["code"] for note in record.emission.fallbacks] == ["year_from_period", "spend_year_from_period"]
