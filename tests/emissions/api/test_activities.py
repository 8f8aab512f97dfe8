"""/api/v1/activities/: all-or-nothing bulk create, list, detail."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from emissions.models import ActivityRecord, Emission, Organization
from tests.emissions.api.payloads import activity_input
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db

LIST = reverse("activity-list")


def emission_in(org: Organization, start: dt.date, **kwargs: Any) -> Emission:
    """A stored activity + emission for the month starting at ``start``."""
    return EmissionFactory.create(
        organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=27), **kwargs
    )


def test_create_one(api, org, electricity_factor):
    supplier = SupplierFactory(organization=org)
    body = activity_input(supplier=supplier.pk, external_ref="INV-7")
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["amount"] == "1.000000"
    assert data["unit"] == "MWh"
    assert data["external_ref"] == "INV-7"
    assert data["supplier"] == {"id": supplier.pk, "name": supplier.name}
    assert data["emission"]["co2e_kg"] == "177.000000"
    assert data["emission"]["co2e_t"] == "0.177000000"
    assert data["emission"]["factor"]["id"] == electricity_factor.pk

    record = ActivityRecord.objects.get(pk=data["id"])
    assert record.organization == org
    assert record.currency == ""  # not a spend line
    emission = Emission.objects.get(activity=record)
    assert emission.co2e_kg == Decimal("177")
    assert emission.organization == org
    assert emission.supplier == supplier
    assert emission.factor == electricity_factor
    assert emission.period_start == dt.date(2025, 1, 1)
    assert emission.data_quality["score"]


def test_create_list_keeps_order(api, electricity_factor, steel_factor):
    items = [
        activity_input(amount="2"),
        {
            "category": 1,
            "method": "spend",
            "activity": "naics:331110",
            "amount": "1000",
            "unit": "USD",
            "spend_year": 2022,
            "period_start": "2022-03-01",
            "period_end": "2022-03-31",
        },
    ]
    response = api.post(LIST, items, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert [row["emission"]["co2e_kg"] for row in data] == ["354.000000", "787.000000"]
    assert data[1]["currency"] == "USD"
    assert Emission.objects.count() == 2


def test_one_bad_item_of_50_writes_nothing(api, electricity_factor):
    items = [activity_input(amount=str(i + 1)) for i in range(50)]
    items[17] = activity_input(unit="lightyear")
    items[33] = activity_input(period_start="2025-02-01", period_end="2025-01-01")
    response = api.post(LIST, items, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [17, 33]
    assert "unit" in errors[0]["errors"]
    assert "period_end" in errors[1]["errors"]
    assert ActivityRecord.objects.count() == 0
    assert Emission.objects.count() == 0


def test_shape_and_calculation_errors_reported_together(api, electricity_factor):
    items = [activity_input(), activity_input(amount="NaN"), activity_input(activity="desnz:missing")]
    response = api.post(LIST, items, format="json")
    assert response.status_code == 400
    errors = {e["index"]: e["errors"] for e in response.json()["errors"]}
    assert set(errors) == {1, 2}
    assert "amount" in errors[1]
    assert "activity" in errors[2]
    assert ActivityRecord.objects.count() == 0


def test_other_orgs_supplier_rejected(api, other_org, electricity_factor):
    theirs = SupplierFactory(organization=other_org)
    response = api.post(LIST, [activity_input(), activity_input(supplier=theirs.pk)], format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": 1, "errors": {"supplier": [f"Unknown supplier id {theirs.pk}."]}}]
    assert ActivityRecord.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"period_start": "not-a-date"}, "period_start"), ({"category": 99}, "category"), ({"amount": "-5"}, "amount")],
)
def test_single_object_errors(api, electricity_factor, overrides, field):
    response = api.post(LIST, activity_input(**overrides), format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["index"] == 0
    assert field in response.json()["errors"][0]["errors"]


def test_empty_list(api):
    response = api.post(LIST, [], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_list_limit(api):
    response = api.post(LIST, [{}] * 10_001, format="json")
    assert response.status_code == 400
    assert "10000" in response.json()["non_field_errors"][0]


def test_list_newest_period_first_and_filters(api, org):
    a = emission_in(org, dt.date(2025, 1, 1), activity__category=1)
    b = emission_in(org, dt.date(2025, 3, 1), activity__category=4)
    c = emission_in(org, dt.date(2025, 2, 1), activity__category=1)
    response = api.get(LIST)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [r["id"] for r in rows] == [b.activity_id, c.activity_id, a.activity_id]
    assert rows[0]["emission"]["co2e_kg"] == "17.700000"
    assert [r["id"] for r in api.get(LIST, {"category": 1}).json()["results"]] == [c.activity_id, a.activity_id]
    assert [r["id"] for r in api.get(LIST, {"supplier": a.supplier_id}).json()["results"]] == [a.activity_id]
    assert [r["id"] for r in api.get(LIST, {"period_from": "2025-02-01"}).json()["results"]] == [
        b.activity_id,
        c.activity_id,
    ]
    assert api.get(LIST, {"method": "spend"}).json()["results"] == []


def test_detail(api, org):
    emission = EmissionFactory(organization=org)
    response = api.get(reverse("activity-detail", args=[emission.activity_id]))
    assert response.status_code == 200
    assert response.json()["emission"]["id"] == emission.pk


def test_query_count_is_constant(api, org, django_assert_num_queries):
    EmissionFactory(organization=org)
    with django_assert_num_queries(3):  # token, membership, page with supplier/emission/factor joined
        assert len(api.get(LIST).json()["results"]) == 1
    EmissionFactory.create_batch(49, organization=org)
    with django_assert_num_queries(3):
        assert len(api.get(LIST).json()["results"]) == 50


def test_create_query_count_does_not_grow_per_item(api, org, electricity_factor, django_assert_max_num_queries):
    supplier = SupplierFactory(organization=org)
    with django_assert_max_num_queries(15):
        response = api.post(LIST, [activity_input(supplier=supplier.pk) for _ in range(200)], format="json")
    assert response.status_code == 201
    assert Emission.objects.filter(supplier=supplier).count() == 200
