"""/api/v1/factors/: visible factors, filters, detail."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from emissions.models import FactorDataset
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, SupplierFactory

pytestmark = pytest.mark.django_db

LIST = reverse("factor-list")


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_list_shows_factor_fields(api, electricity_factor):
    response = api.get(LIST)
    assert ids(response) == [electricity_factor.pk]
    row = response.json()["results"][0]
    assert row["activity"] == "desnz:7_400_4000_5"
    assert row["source"] == "desnz"
    assert row["dataset_version"] == "2025"
    assert row["co2e_per_unit"] == "0.177000000000000"
    assert row["unit"] == "kWh"


def test_detail(api, steel_factor):
    response = api.get(reverse("factor-detail", args=[steel_factor.pk]))
    assert response.status_code == 200
    assert response.json()["currency"] == "USD"
    assert response.json()["basis_year"] == 2022


def test_filters(api, electricity_factor, diesel_factor, steel_factor):
    assert ids(api.get(LIST, {"search": "DIESEL"})) == [diesel_factor.pk]
    assert ids(api.get(LIST, {"search": "331110"})) == [steel_factor.pk]
    assert ids(api.get(LIST, {"source": "epa_supply_chain"})) == [steel_factor.pk]
    assert ids(api.get(LIST, {"region": "gb"})) == [diesel_factor.pk, electricity_factor.pk]
    assert ids(api.get(LIST, {"year": 2022})) == [steel_factor.pk]
    assert ids(api.get(LIST, {"unit": "L"})) == [diesel_factor.pk]
    assert ids(api.get(LIST, {"activity": "desnz:7_400_4000_5"})) == [electricity_factor.pk]
    assert ids(api.get(LIST, {"dataset_version": "v1.3.0"})) == [steel_factor.pk]


@pytest.mark.parametrize(
    ("param", "value"), [("year", "abc"), ("source", "made_up"), ("year", "2025.7"), ("year", "2025.0"), ("year", "0")]
)
def test_bad_filter_value(api, param, value):
    response = api.get(LIST, {param: value})
    assert response.status_code == 400
    assert param in response.json()


def test_supplier_specific_factors_only_for_their_org(api, other_api, org, other_org):
    dataset = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org)
    mine = EmissionFactorFactory(dataset=dataset, supplier=SupplierFactory(organization=org), co2e_per_unit=Decimal(1))
    public = EmissionFactorFactory()
    assert set(ids(api.get(LIST))) == {mine.pk, public.pk}
    assert ids(other_api.get(LIST)) == [public.pk]
    assert other_api.get(reverse("factor-detail", args=[mine.pk])).status_code == 404


def test_query_count_is_constant(api, django_assert_num_queries, cold_cache):
    EmissionFactorFactory()
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # token (user, membership, org joined), page (dataset joined)
        assert len(api.get(LIST).json()["results"]) == 1
    EmissionFactorFactory.create_batch(99)
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # a full default page
        assert len(api.get(LIST).json()["results"]) == 100
