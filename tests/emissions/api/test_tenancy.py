"""Tenant isolation across every API v1 endpoint.

``other_api`` belongs to another organization that owns a supplier, a supplier-specific
factor, an activity and its emission. Each endpoint must behave for ``api`` exactly as if
those rows did not exist: 404 on detail, absent from lists and totals, unmodifiable, and
unusable as a reference.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.models import SUMMARY_KEYS, ActivityRecord, Emission, EmissionFactor, FactorDataset, Supplier
from tests.emissions.api.payloads import activity_input, electricity_input
from tests.factories import (
    EmissionFactorFactory,
    EmissionFactory,
    ExchangeRateFactory,
    FactorDatasetFactory,
    SupplierFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def january_emission(organization, supplier, factor, co2e_kg: str):
    """An activity of ``supplier`` for January 2025 with its stored emission."""
    return EmissionFactory(
        organization=organization,
        activity__supplier=supplier,
        activity__period_start=dt.date(2025, 1, 1),
        activity__period_end=dt.date(2025, 1, 31),
        factor=factor,
        co2e_kg=Decimal(co2e_kg),
    )


@pytest.fixture
def theirs(other_org):
    """Another organization's rows: supplier, supplier-specific factor, activity + emission."""
    supplier = SupplierFactory(organization=other_org, external_id="THEIRS", name="Their supplier")
    dataset = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=other_org)
    factor = EmissionFactorFactory(
        dataset=dataset, supplier=supplier, activity="supplier:theirs", unit="kWh", co2e_per_unit=Decimal("0.5")
    )
    emission = january_emission(other_org, supplier, factor, "1000")
    return {"supplier": supplier, "factor": factor, "emission": emission, "activity": emission.activity}


@pytest.fixture
def mine(org, electricity_factor):
    supplier = SupplierFactory(organization=org, external_id="MINE", name="My supplier")
    emission = january_emission(org, supplier, electricity_factor, "10")
    return {"supplier": supplier, "emission": emission, "activity": emission.activity}


def result_ids(response) -> set[int]:
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def test_factors(api, theirs, mine, electricity_factor):
    assert result_ids(api.get(reverse("factor-list"))) == {electricity_factor.pk}
    assert result_ids(api.get(reverse("factor-list"), {"search": "theirs"})) == set()
    assert api.get(reverse("factor-detail", args=[theirs["factor"].pk])).status_code == 404


def test_suppliers_read(api, theirs, mine):
    assert result_ids(api.get(reverse("supplier-list"))) == {mine["supplier"].pk}
    assert api.get(reverse("supplier-detail", args=[theirs["supplier"].pk])).status_code == 404


def test_suppliers_write(api, theirs, mine):
    url = reverse("supplier-detail", args=[theirs["supplier"].pk])
    assert api.patch(url, {"name": "Hijacked"}, format="json").status_code == 404
    assert api.delete(url).status_code == 404
    theirs["supplier"].refresh_from_db()
    assert theirs["supplier"].name == "Their supplier"
    # Their external_id does not collide with ours.
    response = api.post(reverse("supplier-list"), {"external_id": "THEIRS", "name": "Ours"}, format="json")
    assert response.status_code == 201
    assert Supplier.objects.filter(external_id="THEIRS").count() == 2


def test_calculate_with_their_supplier(api, theirs, electricity_factor):
    response = api.post(reverse("calculate"), electricity_input(supplier=theirs["supplier"].pk), format="json")
    assert response.status_code == 400
    assert "supplier" in response.json()


def test_calculate_with_their_supplier_specific_factor(api, theirs):
    body = electricity_input(activity="", factor_id=theirs["factor"].pk, amount="1", unit="kWh")
    response = api.post(reverse("calculate"), body, format="json")
    assert response.status_code == 400
    assert "factor_id" in response.json()
    body = electricity_input(activity="supplier:theirs", amount="1", unit="kWh")
    response = api.post(reverse("calculate"), body, format="json")
    assert response.status_code == 400
    assert "activity" in response.json()


def test_batch_with_their_supplier_and_factor(api, theirs, electricity_factor):
    items = [
        electricity_input(supplier=theirs["supplier"].pk),
        electricity_input(activity="", factor_id=theirs["factor"].pk, unit="kWh"),
        electricity_input(),
    ]
    results = api.post(reverse("calculate-batch"), {"items": items}, format="json").json()["results"]
    assert "supplier" in results[0]["error"]
    assert "factor_id" in results[1]["error"]
    assert results[2]["co2e_kg"] == "177.000000"


def test_activities_read(api, theirs, mine):
    assert result_ids(api.get(reverse("activity-list"))) == {mine["activity"].pk}
    assert result_ids(api.get(reverse("activity-list"), {"supplier": theirs["supplier"].pk})) == set()
    assert api.get(reverse("activity-detail", args=[theirs["activity"].pk])).status_code == 404


def test_activities_create_with_their_references(api, theirs, electricity_factor):
    before = ActivityRecord.objects.count()
    items = [
        activity_input(),
        activity_input(supplier=theirs["supplier"].pk),
        activity_input(activity="", factor_id=theirs["factor"].pk, unit="kWh"),
    ]
    response = api.post(reverse("activity-list"), items, format="json")
    assert response.status_code == 400
    errors = {e["index"]: e["errors"] for e in response.json()["errors"]}
    assert set(errors) == {1, 2}
    assert "supplier" in errors[1]
    assert "factor_id" in errors[2]
    assert ActivityRecord.objects.count() == before


def test_activities_are_not_writable_by_path(api, theirs):
    url = reverse("activity-detail", args=[theirs["activity"].pk])
    assert api.patch(url, {"amount": "1"}, format="json").status_code in (404, 405)
    assert api.delete(url).status_code in (404, 405)
    assert ActivityRecord.objects.filter(pk=theirs["activity"].pk).exists()


def test_emissions_read(api, theirs, mine):
    assert result_ids(api.get(reverse("emission-list"))) == {mine["emission"].pk}
    assert result_ids(api.get(reverse("emission-list"), {"supplier": theirs["supplier"].pk})) == set()
    assert api.get(reverse("emission-detail", args=[theirs["emission"].pk])).status_code == 404
    url = reverse("emission-detail", args=[theirs["emission"].pk])
    assert api.delete(url).status_code in (404, 405)
    assert Emission.objects.filter(pk=theirs["emission"].pk).exists()


def test_export_excludes_their_emissions(api, other_api, theirs, mine):
    def exported_ids(client, **params):
        response = client.get(reverse("emission-export"), params)
        assert response.status_code == 200
        lines = b"".join(response.streaming_content).decode().splitlines()
        return {int(line.split(",")[0]) for line in lines[1:]}

    assert exported_ids(api) == {mine["emission"].pk}
    assert exported_ids(api, supplier=theirs["supplier"].pk) == set()
    assert exported_ids(other_api) == {theirs["emission"].pk}


def test_supplier_factors_of_their_supplier(api, theirs, mine):
    their_supplier, their_factor = theirs["supplier"], theirs["factor"]
    assert api.get(reverse("supplier-factor-list", args=[their_supplier.pk])).status_code == 404
    assert api.get(reverse("supplier-factor-detail", args=[their_supplier.pk, their_factor.pk])).status_code == 404
    # Their factor is not reachable through our supplier either.
    assert api.get(reverse("supplier-factor-detail", args=[mine["supplier"].pk, their_factor.pk])).status_code == 404
    body = {"name": "Hijack", "unit": "kWh", "co2e_per_unit": "0", "year": 2025}
    assert api.post(reverse("supplier-factor-list", args=[their_supplier.pk]), body, format="json").status_code == 404
    assert api.delete(reverse("supplier-factor-detail", args=[their_supplier.pk, their_factor.pk])).status_code == 404
    assert EmissionFactor.objects.filter(pk=their_factor.pk).exists()
    assert not EmissionFactor.objects.filter(name="Hijack").exists()


def test_our_supplier_factor_is_invisible_to_them(api, other_api, mine):
    url = reverse("supplier-factor-list", args=[mine["supplier"].pk])
    body = {"name": "Our coil", "unit": "kg", "co2e_per_unit": "1.5", "year": 2025, "activity": "coil"}
    created = api.post(url, body, format="json").json()
    assert created["id"] not in result_ids(other_api.get(reverse("factor-list")))
    assert other_api.get(reverse("factor-detail", args=[created["id"]])).status_code == 404
    response = other_api.post(
        reverse("calculate"), electricity_input(activity="coil", amount="1", unit="kg"), format="json"
    )
    assert response.status_code == 400
    assert "activity" in response.json()


@pytest.mark.parametrize("group_by", SUMMARY_KEYS)
def test_summary_excludes_their_emissions(api, other_api, theirs, mine, group_by):
    body = api.get(reverse("emission-summary"), {"group_by": group_by}).json()
    assert body["total_co2e_kg"] == "10.000000"
    assert body["count"] == 1
    assert sum(Decimal(g["co2e_kg"]) for g in body["groups"]) == Decimal(10)
    # And the other way round.
    assert other_api.get(reverse("emission-summary"), {"group_by": group_by}).json()["total_co2e_kg"] == "1000.000000"


def test_summary_by_supplier_never_names_their_supplier(api, theirs, mine):
    body = api.get(reverse("emission-summary"), {"group_by": "supplier"}).json()
    assert [g["label"] for g in body["groups"]] == ["My supplier"]


def test_their_pagination_cursor_shows_only_our_rows(api, other_api, theirs, mine, other_org):
    for _ in range(3):
        EmissionFactory(organization=other_org, factor=theirs["factor"])
    their_next = other_api.get(reverse("emission-list"), {"limit": 1}).json()["next"]
    assert result_ids(api.get(their_next)) <= {mine["emission"].pk}


ENDPOINTS = [
    ("get", "factor-list", ()),
    ("get", "supplier-list", ()),
    ("post", "supplier-list", ()),
    ("get", "activity-list", ()),
    ("post", "activity-list", ()),
    ("get", "emission-list", ()),
    ("get", "emission-summary", ()),
    ("get", "emission-export", ()),
    ("post", "calculate", ()),
    ("post", "calculate-batch", ()),
    ("get", "factor-detail", (1,)),
    ("get", "supplier-detail", (1,)),
    ("patch", "supplier-detail", (1,)),
    ("delete", "supplier-detail", (1,)),
    ("get", "supplier-factor-list", (1,)),
    ("post", "supplier-factor-list", (1,)),
    ("get", "supplier-factor-detail", (1, 1)),
    ("delete", "supplier-factor-detail", (1, 1)),
    ("get", "activity-detail", (1,)),
    ("get", "emission-detail", (1,)),
]


@pytest.mark.parametrize(("method", "name", "args"), ENDPOINTS)
def test_401_without_token(method, name, args):
    response = getattr(APIClient(), method)(reverse(name, args=args), {}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "name", "args"), ENDPOINTS)
def test_403_for_a_user_without_organization(method, name, args):
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    response = getattr(client, method)(reverse(name, args=args), {}, format="json")
    assert response.status_code == 403
    assert "organization" in response.json()["detail"]


def test_another_organizations_reference_set_is_not_there_for_the_caller(api, org, other_org, steel_factor):
    ExchangeRateFactory.create(
        set_name="their-budget", organization=other_org, currency="EUR", quote_currency="USD", year=2022
    )
    ExchangeRateFactory.create(set_name="our-budget", organization=org, currency="EUR", quote_currency="USD", year=2022)
    body = {"category": 1, "method": "spend", "activity": "naics:331110", "amount": "1000", "currency": "EUR"}
    body["spend_year"] = 2022
    refused = api.post(reverse("calculate"), {**body, "exchange_rate_set": "their-budget"}, format="json")
    assert refused.status_code == 400
    assert refused.json() == {
        "exchange_rate_set": [
            "No exchange-rate set 'their-budget' is loaded: check the name, or load it with load_reference_data."
        ]
    }
    ours = api.post(reverse("calculate"), {**body, "exchange_rate_set": "our-budget"}, format="json")
    assert ours.status_code == 200, ours.json()
    assert ours.json()["conversion"]["exchange_rate"]["set"] == "our-budget"
