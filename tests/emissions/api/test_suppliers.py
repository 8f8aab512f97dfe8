"""/api/v1/suppliers/: list, create, retrieve, partial update, delete."""

from __future__ import annotations

import pytest
from django.urls import reverse

from emissions.models import Supplier
from emissions.services.suppliers import EXTERNAL_ID_TAKEN
from tests.factories import EmissionFactorFactory, EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db

LIST = reverse("supplier-list")


def detail(pk: int) -> str:
    return reverse("supplier-detail", args=[pk])


def test_create(api, org):
    body = {"external_id": "ERP-1", "name": "Steelworks", "country": "de", "naics": "331110"}
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == {"id", "external_id", "name", "country", "naics", "created_at", "updated_at"}
    assert data["country"] == "DE"
    supplier = Supplier.objects.get(pk=data["id"])
    assert supplier.organization == org
    assert supplier.naics == "331110"


def test_create_refuses_organization_in_body(api, org, other_org):
    body = {"external_id": "ERP-1", "name": "X", "organization": other_org.pk}
    response = api.post(LIST, body, format="json")
    assert response.status_code == 400
    assert response.json() == {"organization": ["Unknown field."]}
    assert not Supplier.objects.exists()


def test_unknown_fields_are_a_400_naming_them(api, org):
    supplier = SupplierFactory(organization=org, name="Before")
    response = api.post(LIST, {"external_id": "E", "name": "X", "nmae": "Y", "vat": "1"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"nmae": ["Unknown field."], "vat": ["Unknown field."]}
    response = api.patch(detail(supplier.pk), {"nmae": "After"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"nmae": ["Unknown field."]}
    supplier.refresh_from_db()
    assert supplier.name == "Before"


def test_read_only_fields_sent_back_are_accepted_and_ignored(api, org):
    supplier = SupplierFactory(organization=org, name="Before")
    read = api.get(detail(supplier.pk)).json()
    response = api.patch(detail(supplier.pk), {**read, "id": supplier.pk + 1000, "name": "After"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["id"] == supplier.pk
    supplier.refresh_from_db()
    assert supplier.name == "After"


@pytest.mark.parametrize("field", ["external_id", "name"])
@pytest.mark.parametrize("text", ['=HYPERLINK("http://evil","x")', "+1", "-1+1", "@SUM(A1)", "\t=1"])
def test_text_a_spreadsheet_would_run_is_refused(api, org, field, text):
    body = {"external_id": "ERP-1", "name": "X", field: text}
    response = api.post(LIST, body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert "Must not start with" in response.json()[field][0]
    supplier = SupplierFactory(organization=org)
    response = api.patch(detail(supplier.pk), {field: text}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Supplier.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"external_id": "E", "name": "X", "country": "XX"}, "country"),
        ({"external_id": "E", "name": "X", "country": "USA"}, "country"),
        ({"external_id": "E", "name": "X", "country": "Germany"}, "country"),
        ({"external_id": "E", "name": "X", "naics": "3311"}, "naics"),
        ({"external_id": "E", "name": "X", "naics": "33111A"}, "naics"),
        ({"name": "X"}, "external_id"),
        ({"external_id": "E"}, "name"),
    ],
)
def test_create_validation(api, body, field):
    response = api.post(LIST, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert Supplier.objects.count() == 0


def test_duplicate_external_id_in_same_org(api, org):
    SupplierFactory(organization=org, external_id="ERP-1")
    response = api.post(LIST, {"external_id": "ERP-1", "name": "Again"}, format="json")
    assert response.status_code == 400
    # The service maps the database's unique constraint to the field error (no pre-check query).
    assert response.json() == {"external_id": [EXTERNAL_ID_TAKEN]}
    assert Supplier.objects.for_org(org).count() == 1


def test_same_external_id_in_another_org_is_fine(api, other_org):
    SupplierFactory(organization=other_org, external_id="ERP-1")
    response = api.post(LIST, {"external_id": "ERP-1", "name": "Mine"}, format="json")
    assert response.status_code == 201


def test_list_ordered_by_name(api, org):
    for name in ["Charlie", "Alpha", "Bravo"]:
        SupplierFactory(organization=org, name=name)
    response = api.get(LIST)
    assert response.status_code == 200
    body = response.json()
    assert [s["name"] for s in body["results"]] == ["Alpha", "Bravo", "Charlie"]
    assert body["next"] is None
    assert body["previous"] is None


def test_retrieve(api, org):
    supplier = SupplierFactory(organization=org, country="GB")
    response = api.get(detail(supplier.pk))
    assert response.status_code == 200
    assert response.json()["country"] == "GB"
    assert response.json()["external_id"] == supplier.external_id


def test_patch(api, org):
    supplier = SupplierFactory(organization=org, name="Old")
    response = api.patch(detail(supplier.pk), {"name": "New", "country": "fr"}, format="json")
    assert response.status_code == 200, response.json()
    supplier.refresh_from_db()
    assert supplier.name == "New"
    assert supplier.country == "FR"


def test_patch_to_taken_external_id(api, org):
    SupplierFactory(organization=org, external_id="TAKEN")
    supplier = SupplierFactory(organization=org, external_id="MINE")
    response = api.patch(detail(supplier.pk), {"external_id": "TAKEN"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"external_id": [EXTERNAL_ID_TAKEN]}
    supplier.refresh_from_db()
    assert supplier.external_id == "MINE"


def test_patch_keeping_own_external_id(api, org):
    supplier = SupplierFactory(organization=org, external_id="MINE")
    response = api.patch(detail(supplier.pk), {"external_id": "MINE", "name": "Renamed"}, format="json")
    assert response.status_code == 200


def test_put_not_allowed(api, org):
    supplier = SupplierFactory(organization=org)
    response = api.put(detail(supplier.pk), {"external_id": "X", "name": "Y"}, format="json")
    assert response.status_code == 405


def test_delete(api, org):
    supplier = SupplierFactory(organization=org)
    response = api.delete(detail(supplier.pk))
    assert response.status_code == 204
    assert not Supplier.objects.filter(pk=supplier.pk).exists()


def test_delete_with_activities_is_409(api, org):
    emission = EmissionFactory(organization=org)
    supplier = emission.supplier
    response = api.delete(detail(supplier.pk))
    assert response.status_code == 409
    body = response.json()
    assert "reassign" in body["detail"]
    assert (body["references"], body["referenced_by"]) == (2, {"activities": 1, "emissions": 1})
    assert Supplier.objects.filter(pk=supplier.pk).exists()


def test_delete_with_only_its_own_factors_is_409_naming_them(api, org):
    supplier = SupplierFactory(organization=org)
    EmissionFactorFactory.create(supplier=supplier)
    response = api.delete(detail(supplier.pk))
    assert response.status_code == 409
    assert response.json()["referenced_by"] == {"supplier_factors": 1}
    assert "is referenced by 1 supplier factor;" in response.json()["detail"]


def test_query_count_is_constant(api, org, django_assert_num_queries, cold_cache):
    SupplierFactory(organization=org)
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # token (user, membership, org joined), page
        assert len(api.get(LIST).json()["results"]) == 1
    SupplierFactory.create_batch(99, organization=org)
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # a full default page
        assert len(api.get(LIST).json()["results"]) == 100
