"""PATCH and DELETE /api/v1/activities/<id>/: an edit recalculates the emission, a delete removes both rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from calculator.types import CalculationInput
from emissions.calculation import calculate_in_period
from emissions.models import ID_MAX, ActivityRecord, Emission, Membership, Organization
from tests.emissions.api.payloads import activity_input
from tests.emissions.api.test_permissions import member_api
from tests.factories import SupplierFactory

pytestmark = pytest.mark.django_db

LIST = reverse("activity-list")
SUMMARY = reverse("emission-summary")


def detail(pk: int) -> str:
    return reverse("activity-detail", args=[pk])


def create(api: Any, **overrides: Any) -> dict[str, Any]:
    response = api.post(LIST, activity_input(**overrides), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def stored_rows() -> list[tuple[Any, ...]]:
    """Every activity and emission column, to tell that a refused request wrote nothing."""
    return [*ActivityRecord.objects.order_by("pk").values_list(), *Emission.objects.order_by("pk").values_list()]


def test_patch_recalculates_the_emission_and_answers_as_get(api, org, electricity_factor):
    created = create(api, external_ref="INV-1")
    response = api.patch(detail(created["id"]), {"amount": "2.5"}, format="json")
    assert response.status_code == 200, response.content
    data = response.json()

    new_input = CalculationInput(
        category=3, method="activity", activity="desnz:7_400_4000_5", amount=Decimal("2.5"), unit="MWh"
    )
    expected = calculate_in_period(new_input, period_year=2025, organization=org)
    assert data["emission"]["co2e_kg"] == f"{expected.co2e_kg:.6f}" != created["emission"]["co2e_kg"]
    assert data["amount"] == "2.500000"
    assert data["external_ref"] == "INV-1"
    assert (data["id"], data["emission"]["id"]) == (created["id"], created["emission"]["id"])
    assert data["emission"]["calculated_at"] > created["emission"]["calculated_at"]
    assert data == api.get(detail(created["id"])).json()  # the activity as GET shows it


def test_patch_takes_the_create_bodys_field_names(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    created = create(api)
    response = api.patch(detail(created["id"]), {"supplier": supplier.pk, "year": 2025}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["supplier"] == {"id": supplier.pk, "name": supplier.name}
    assert Emission.objects.get().supplier_id == supplier.pk


def test_changing_the_period_moves_the_emission_between_cached_summaries(api, electricity_factor):
    created = create(api)
    create(api, amount="3")
    year_2025 = {"group_by": "month", "period_from": "2025-01-01", "period_to": "2025-12-31"}
    year_2024 = {"group_by": "month", "period_from": "2024-01-01", "period_to": "2024-12-31"}
    everything = {"group_by": "month"}
    before = {name: api.get(SUMMARY, query).json() for name, query in [("2025", year_2025), ("2024", year_2024)]}
    before["all"] = api.get(SUMMARY, everything).json()
    assert [(g["key"], g["count"]) for g in before["all"]["groups"]] == [("2025-01", 2)]
    with CaptureQueriesContext(connection) as captured:  # served from the cache from now on
        assert api.get(SUMMARY, year_2025).json() == before["2025"]
        assert api.get(SUMMARY, everything).json() == before["all"]
    assert captured.captured_queries == []

    response = api.patch(
        detail(created["id"]), {"period_start": "2024-06-01", "period_end": "2024-06-30"}, format="json"
    )
    assert response.status_code == 200, response.content

    moved = created["emission"]["co2e_kg"]
    after_2025, after_2024 = api.get(SUMMARY, year_2025).json(), api.get(SUMMARY, year_2024).json()
    assert (before["2025"]["count"], after_2025["count"]) == (2, 1)
    assert (before["2024"]["count"], after_2024["count"]) == (0, 1)
    assert after_2024["total_co2e_kg"] == moved
    assert [(g["key"], g["count"]) for g in api.get(SUMMARY, everything).json()["groups"]] == [
        ("2024-06", 1),
        ("2025-01", 1),
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "-1"}, "amount"),
        ({"unit": "kg"}, "unit"),
        ({"period_end": "2024-01-01"}, "period_end"),
        ({"category": 99}, "category"),
        ({"activity": "no-such-factor"}, "activity"),
    ],
)
def test_an_invalid_patch_is_a_400_naming_the_field_and_writes_nothing(api, electricity_factor, body, field):
    created = create(api)
    before = stored_rows()
    response = api.patch(detail(created["id"]), body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert stored_rows() == before


def test_unknown_fields_are_a_400_naming_them(api, electricity_factor):
    created = create(api)
    before = stored_rows()
    response = api.patch(detail(created["id"]), {"amout": "2", "co2e_kg": "0"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"amout": ["Unknown field."], "co2e_kg": ["Unknown field."]}
    assert stored_rows() == before


def test_a_body_that_is_no_object_is_a_400(api, electricity_factor):
    created = create(api)
    response = api.patch(detail(created["id"]), [{"amount": "2"}], format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["non_field_errors"]


def test_a_supplier_of_another_organization_is_refused(api, other_org, electricity_factor):
    created = create(api)
    theirs = SupplierFactory.create(organization=other_org)
    before = stored_rows()
    response = api.patch(detail(created["id"]), {"supplier": theirs.pk}, format="json")
    assert response.status_code == 400
    assert response.json() == {"supplier": [f"Unknown supplier id {theirs.pk}."]}
    assert stored_rows() == before


def test_another_organizations_activity_is_not_found(api, other_api, electricity_factor):
    theirs = create(other_api)
    before = stored_rows()
    unknown = api.get(detail(theirs["id"] + 1000))
    assert unknown.status_code == 404
    for response in (
        api.patch(detail(theirs["id"]), {"amount": "2"}, format="json"),
        api.delete(detail(theirs["id"])),
        api.patch(detail(theirs["id"] + 1000), {"amount": "2"}, format="json"),
        api.delete(detail(theirs["id"] + 1000)),
    ):
        assert response.status_code == 404
        assert response.json() == unknown.json()  # the same answer as an id that does not exist
    assert stored_rows() == before


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_an_id_that_is_no_number_is_not_found(api, method):
    assert getattr(api, method)(detail(1).replace("1", "x1"), {}, format="json").status_code == 404


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_an_id_beyond_any_primary_key_is_not_found_as_get_answers(api, method):
    # One past the largest bigint: the database would refuse the query (a 500) if the id reached it.
    unknown = api.get(detail(ID_MAX + 1))
    assert unknown.status_code == 404
    response = getattr(api, method)(detail(ID_MAX + 1), {"amount": "1"}, format="json")
    assert response.status_code == 404
    assert response.json() == unknown.json()


@pytest.mark.parametrize("role", [Membership.Role.ANALYST, Membership.Role.ADMIN])
def test_analysts_and_admins_edit_and_delete(api, org, electricity_factor, role):
    created = create(api)
    client = member_api(org, role)
    assert client.patch(detail(created["id"]), {"amount": "2"}, format="json").status_code == 200
    assert client.delete(detail(created["id"])).status_code == 204


@pytest.mark.parametrize(
    ("method", "permission"), [("patch", "change_activityrecord"), ("delete", "delete_activityrecord")]
)
def test_a_viewer_may_neither_edit_nor_delete(api, org, electricity_factor, method, permission):
    created = create(api)
    before = stored_rows()
    response = getattr(member_api(org, Membership.Role.VIEWER), method)(
        detail(created["id"]), {"amount": "2"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["detail"] == (
        f"Your role 'viewer' may not {'change' if method == 'patch' else 'delete'} activity records: "
        f"it lacks the '{permission}' permission."
    )
    assert stored_rows() == before


def test_put_is_not_allowed(api, electricity_factor):
    created = create(api)
    response = api.put(detail(created["id"]), activity_input(), format="json")
    assert response.status_code == 405
    assert "PUT" not in response["Allow"] and "PATCH" in response["Allow"]


def test_delete_removes_both_rows_and_the_summary_shows_it(api, electricity_factor):
    deleted, kept = create(api), create(api, amount="3")
    before = api.get(SUMMARY, {"group_by": "category"}).json()
    assert before["count"] == 2

    response = api.delete(detail(deleted["id"]))
    assert response.status_code == 204
    assert response.content == b""

    assert list(ActivityRecord.objects.values_list("pk", flat=True)) == [kept["id"]]
    assert list(Emission.objects.values_list("pk", flat=True)) == [kept["emission"]["id"]]
    after = api.get(SUMMARY, {"group_by": "category"}).json()
    assert (after["count"], after["total_co2e_kg"]) == (1, kept["emission"]["co2e_kg"])
    assert api.get(detail(deleted["id"])).status_code == 404
    assert api.delete(detail(deleted["id"])).status_code == 404


def _patch_queries(api: Any, organization: Organization, activities: int, cold_cache: Any) -> int:
    ids = [create(api, amount=str(n + 1))["id"] for n in range(activities)]
    cold_cache()
    with CaptureQueriesContext(connection) as captured:
        response = api.patch(detail(ids[0]), {"amount": "7", "external_ref": "X"}, format="json")
    assert response.status_code == 200, response.content
    return len(captured.captured_queries)


def test_patch_query_count_does_not_grow_with_the_organization(org, other_org, electricity_factor, cold_cache):
    small = _patch_queries(member_api(org, Membership.Role.ANALYST), org, 1, cold_cache)
    large = _patch_queries(member_api(other_org, Membership.Role.ANALYST), other_org, 25, cold_cache)
    assert small == large


def test_delete_query_count_does_not_grow_with_the_organization(org, other_org, electricity_factor, cold_cache):
    counts = []
    for organization, activities in ((org, 1), (other_org, 25)):
        client = member_api(organization, Membership.Role.ANALYST)
        ids = [create(client)["id"] for _ in range(activities)]
        cold_cache()
        with CaptureQueriesContext(connection) as captured:
            assert client.delete(detail(ids[0])).status_code == 204
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1]


def test_recorded_in_place_so_the_period_fields_of_both_rows_agree(api, electricity_factor):
    created = create(api)
    api.patch(detail(created["id"]), {"period_start": "2025-02-01", "period_end": "2025-02-28"}, format="json")
    activity = ActivityRecord.objects.select_related("emission").get()
    assert (activity.emission.period_start, activity.emission.period_end) == (
        dt.date(2025, 2, 1),
        dt.date(2025, 2, 28),
    )
