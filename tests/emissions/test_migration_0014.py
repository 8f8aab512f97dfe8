"""emissions/migrations/0014: exchange rates and price indexes loaded before reference sets existed become the public
set ``legacy``, and the stored money lines that may have converted with them name it, so a recalculation converts
them as before."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.apps import apps

from emissions.models import ActivityRecord, ExchangeRate, PriceIndex
from tests.factories import ActivityRecordFactory, ExchangeRateFactory, PriceIndexFactory

pytestmark = pytest.mark.django_db

migration = importlib.import_module("emissions.migrations.0014_spend_reference_sets")


def test_rows_loaded_before_sets_become_legacy_and_money_lines_keep_converting_with_them(org) -> None:
    ExchangeRateFactory.create(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    PriceIndexFactory.create(currency="USD", year=2024, value=Decimal("313.689"))
    euro = ActivityRecordFactory.create(organization=org, method="spend", currency="EUR", spend_year=2024)
    dollars = ActivityRecordFactory.create(organization=org, method="spend", currency="USD", spend_year=None)
    energy = ActivityRecordFactory.create(organization=org, method="activity", currency="", spend_year=None)
    migration.legacy_sets(apps, None)
    assert set(ExchangeRate.objects.values_list("set_name", flat=True)) == {"legacy"}
    assert set(PriceIndex.objects.values_list("set_name", flat=True)) == {"legacy"}
    sets = {
        pk: (rate_set, index_set)
        for pk, rate_set, index_set in ActivityRecord.objects.values_list("pk", "exchange_rate_set", "price_index_set")
    }
    assert sets == {euro.pk: ("legacy", "legacy"), dollars.pk: ("", ""), energy.pk: ("", "")}


def test_a_database_without_reference_rows_names_no_legacy_set(org) -> None:
    euro = ActivityRecordFactory.create(organization=org, method="spend", currency="EUR", spend_year=2024)
    migration.legacy_sets(apps, None)
    euro.refresh_from_db()
    assert (euro.exchange_rate_set, euro.price_index_set) == ("", "")
