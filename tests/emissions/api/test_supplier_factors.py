"""/api/v1/suppliers/{id}/factors/: supplier-provided factors, and their precedence in calculations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from emissions.models import EmissionFactor, FactorDataset, Supplier
from tests.emissions.api.payloads import activity_input
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db


def factors_url(supplier: Supplier) -> str:
    return reverse("supplier-factor-list", args=[supplier.pk])


def factor_url(supplier: Supplier, factor_id: int) -> str:
    return reverse("supplier-factor-detail", args=[supplier.pk, factor_id])


def widget_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Hot-rolled coil", "unit": "kg", "co2e_per_unit": "1.85", "year": 2024}
    body.update(overrides)
    return body


@pytest.fixture
def supplier(org) -> Supplier:
    return SupplierFactory.create(organization=org, external_id="ERP-7", name="Sheffield Steel", country="GB")


def test_create_with_defaults(api, org, supplier):
    response = api.post(factors_url(supplier), widget_body(), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["activity"] == "supplier:ERP-7:hot-rolled-coil"
    assert data["region"] == "GB"  # the supplier's country
    assert data["source"] == "supplier"
    assert data["dataset_version"] == "current"
    assert data["basis_year"] == 2024
    assert data["co2e_per_unit"] == "1.850000000000000"
    assert data["currency"] == ""
    assert data["supplier"] == supplier.pk
    factor = EmissionFactor.objects.select_related("dataset").get(pk=data["id"])
    assert factor.co2e_per_unit == Decimal("1.85")
    assert factor.dataset.organization_id == org.pk
    assert factor.dataset.source == FactorDataset.Source.SUPPLIER


def test_create_with_every_field(api, supplier):
    body = widget_body(
        activity="naics:331110",
        region="de",
        gases={"CO2": "1.8", "CH4": "0.05"},
        dataset_version="2024-cdp",
    )
    response = api.post(factors_url(supplier), body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["activity"], data["region"], data["dataset_version"]) == ("naics:331110", "DE", "2024-cdp")
    assert data["gases"] == {"CO2": "1.8", "CH4": "0.05"}


def test_region_defaults_to_global_without_supplier_country(api, org):
    supplier = SupplierFactory.create(organization=org, country="")
    response = api.post(factors_url(supplier), widget_body(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["region"] == "GLOBAL"


def test_spend_factor_takes_its_currency_from_the_unit(api, supplier):
    response = api.post(factors_url(supplier), widget_body(unit="EUR", co2e_per_unit="0.42"), format="json")
    assert response.status_code == 201, response.json()
    assert (response.json()["unit"], response.json()["currency"]) == ("EUR", "EUR")
    response = api.post(factors_url(supplier), widget_body(name="Services", unit="USD"), format="json")
    assert (response.json()["unit"], response.json()["currency"]) == ("USD", "USD")


def test_spend_factor_year_must_match_the_datasets_price_year(api, supplier):
    assert api.post(factors_url(supplier), widget_body(year=2023), format="json").status_code == 201
    response = api.post(factors_url(supplier), widget_body(name="Services", unit="EUR", year=2024), format="json")
    assert response.status_code == 400
    assert "price year 2023" in response.json()["year"][0]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unit": "widgets"}, "unit"),
        ({"unit": "Kwh2"}, "unit"),
        ({"unit": ""}, "unit"),
        ({"co2e_per_unit": "-1"}, "co2e_per_unit"),
        ({"co2e_per_unit": "NaN"}, "co2e_per_unit"),
        ({"co2e_per_unit": "Infinity"}, "co2e_per_unit"),
        ({"co2e_per_unit": "abc"}, "co2e_per_unit"),
        ({"year": 1800}, "year"),
        ({"region": "XX"}, "region"),
        ({"gases": {"CO2": "-0.1"}}, "gases"),
        ({"gases": {"CO2": "x"}}, "gases"),
        ({"gases": ["CO2"]}, "gases"),
        ({"gases": {"CO2 gas!": "1"}}, "gases"),
        ({"co2e_per_unit": "1e40"}, "co2e_per_unit"),
        ({"year": "soon"}, "year"),
        ({"name": ""}, "name"),
    ],
)
def test_create_validation(api, supplier, overrides, field):
    response = api.post(factors_url(supplier), widget_body(**overrides), format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not EmissionFactor.objects.filter(supplier=supplier).exists()


def test_unknown_fields_are_a_400_naming_them(api, supplier):
    response = api.post(factors_url(supplier), widget_body(co2e="1.85", basis_year=2024), format="json")
    assert response.status_code == 400
    assert response.json() == {"co2e": ["Unknown field."], "basis_year": ["Unknown field."]}
    assert not EmissionFactor.objects.filter(supplier=supplier).exists()


@pytest.mark.parametrize("field", ["activity", "dataset_version"])
def test_exported_text_a_spreadsheet_would_run_is_refused(api, supplier, field):
    response = api.post(factors_url(supplier), widget_body(**{field: "=1+1"}), format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]


@pytest.mark.parametrize("value", ["1_000", "\u0661"])
def test_a_number_in_an_unexpected_spelling_is_refused(api, supplier, value):
    response = api.post(factors_url(supplier), widget_body(co2e_per_unit=value, gases={"CO2": value}), format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"co2e_per_unit", "gases"}


def test_duplicate_activity_is_400_naming_it(api, supplier):
    assert api.post(factors_url(supplier), widget_body(activity="steel:coil"), format="json").status_code == 201
    response = api.post(factors_url(supplier), widget_body(activity="steel:coil"), format="json")
    assert response.status_code == 400
    assert "steel:coil" in response.json()["activity"][0]
    # Another dataset version may hold the same key.
    body = widget_body(activity="steel:coil", dataset_version="2025")
    assert api.post(factors_url(supplier), body, format="json").status_code == 201


def test_list_and_retrieve(api, org, supplier):
    other = SupplierFactory.create(organization=org)
    mine = api.post(factors_url(supplier), widget_body(), format="json").json()
    api.post(factors_url(other), widget_body(), format="json")
    response = api.get(factors_url(supplier))
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [mine["id"]]
    assert api.get(factor_url(supplier, mine["id"])).json()["activity"] == mine["activity"]
    # The factor exists, but not under this supplier.
    assert api.get(factor_url(other, mine["id"])).status_code == 404


def test_unknown_supplier_is_404(api):
    assert api.get(reverse("supplier-factor-list", args=[999_999])).status_code == 404
    assert api.post(reverse("supplier-factor-list", args=[999_999]), widget_body(), format="json").status_code == 404


def test_public_factor_is_not_reachable_through_a_supplier(api, supplier, electricity_factor):
    assert api.get(factor_url(supplier, electricity_factor.pk)).status_code == 404
    assert api.delete(factor_url(supplier, electricity_factor.pk)).status_code == 404
    assert EmissionFactor.objects.filter(pk=electricity_factor.pk).exists()


def test_delete(api, supplier):
    created = api.post(factors_url(supplier), widget_body(), format="json").json()
    assert api.delete(factor_url(supplier, created["id"])).status_code == 204
    assert not EmissionFactor.objects.filter(pk=created["id"]).exists()


def test_delete_of_a_factor_results_use_is_409(api, org, supplier):
    created = api.post(factors_url(supplier), widget_body(), format="json").json()
    EmissionFactory.create(organization=org, factor_id=created["id"], activity__supplier=supplier)
    response = api.delete(factor_url(supplier, created["id"]))
    assert response.status_code == 409
    assert response.json()["references"] == 1
    assert response.json()["referenced_by"] == {"emissions": 1}
    assert "is referenced by 1 emission;" in response.json()["detail"]
    assert "cannot be deleted" in response.json()["detail"]
    assert EmissionFactor.objects.filter(pk=created["id"]).exists()


def test_put_and_patch_not_allowed(api, supplier):
    created = api.post(factors_url(supplier), widget_body(), format="json").json()
    assert api.patch(factor_url(supplier, created["id"]), {"name": "x"}, format="json").status_code == 405
    assert api.put(factor_url(supplier, created["id"]), widget_body(), format="json").status_code == 405


def test_list_query_count_is_constant(api, supplier, django_assert_num_queries, cold_cache):
    api.post(factors_url(supplier), widget_body(), format="json")
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # token (user, membership, org joined), page (supplier's org checked in it)
        assert len(api.get(factors_url(supplier)).json()["results"]) == 1
    for n in range(99):
        api.post(factors_url(supplier), widget_body(name=f"Product {n}"), format="json")
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # a full default page
        assert len(api.get(factors_url(supplier)).json()["results"]) == 100


def test_empty_list_checks_the_supplier(api, supplier, other_api, django_assert_num_queries):
    with django_assert_num_queries(3):  # token (user, membership, org joined), empty page, supplier check
        response = api.get(factors_url(supplier))
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert other_api.get(factors_url(supplier)).status_code == 404


# -- precedence, end to end ----------------------------------------------------------------------


def supplier_specific(supplier: Supplier, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": 1,
        "method": "supplier_specific",
        "supplier": supplier.pk,
        "activity": "naics:331110",
        "amount": "1000",
        "unit": "USD",
        "spend_year": 2022,
    }
    body.update(overrides)
    return body


def test_posted_supplier_factor_takes_precedence(api, supplier, steel_factor):
    body = widget_body(activity="naics:331110", name="Steel, supplier's own", unit="USD", co2e_per_unit="0.5")
    created = api.post(factors_url(supplier), dict(body, year=2022), format="json").json()
    response = api.post(reverse("calculate"), supplier_specific(supplier), format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["factor"]["id"] == created["id"]
    assert data["factor"]["source"] == "supplier"
    assert data["co2e_kg"] == "500.000000"
    assert data["data_quality"]["reliability"] == 1
    assert "supplier_factor_missing" not in [note["code"] for note in data["fallbacks"]]


def test_without_a_supplier_factor_average_data_is_used_and_noted(api, supplier, steel_factor):
    response = api.post(reverse("calculate"), supplier_specific(supplier), format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["factor"]["id"] == steel_factor.pk
    assert data["co2e_kg"] == "787.000000"
    assert data["fallbacks"][0]["code"] == "supplier_factor_missing"
    assert data["data_quality"]["reliability"] > 1


def test_default_key_factor_is_used_without_an_activity(api, supplier):
    created = api.post(factors_url(supplier), widget_body(), format="json").json()
    body = supplier_specific(supplier, activity="", amount="2", unit="t", spend_year=None)
    data = api.post(reverse("calculate"), body, format="json").json()
    assert data["factor"]["id"] == created["id"]
    assert data["co2e_kg"] == "3700.000000"  # 2 t = 2000 kg x 1.85


def test_stored_activity_uses_the_supplier_factor(api, supplier, electricity_factor):
    created = api.post(
        factors_url(supplier),
        widget_body(activity="desnz:7_400_4000_5", name="Green tariff", unit="kWh", co2e_per_unit="0.01", year=2025),
        format="json",
    ).json()
    body = activity_input(method="supplier_specific", supplier=supplier.pk)
    response = api.post(reverse("activity-list"), body, format="json")
    assert response.status_code == 201, response.json()
    emission = response.json()["emission"]
    assert emission["factor"]["id"] == created["id"]
    assert emission["co2e_kg"] == "10.000000"  # 1 MWh x 0.01
