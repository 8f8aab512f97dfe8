"""emissions.api.permissions: each membership role may do through the API what the admin's role table allows it."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.views import APIView

from emissions.api.permissions import RoleAllows
from emissions.inputs import activity_inputs
from emissions.models import FactorDataset, Membership, Organization, Supplier
from emissions.services.activities import ActivityInput, activities_create
from emissions.services.organizations import ROLE_PERMISSIONS
from emissions.services.supplier_factors import supplier_factor_create
from tests.emissions.api.payloads import activity_input, electricity_input
from tests.factories import MembershipFactory, SupplierFactory
from tests.helpers import APIClient

pytestmark = pytest.mark.django_db


def member_api(organization: Organization, role: str) -> APIClient:
    """An API client authenticated as a member of ``organization`` with ``role``."""
    membership = MembershipFactory.create(organization=organization, role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    return client


FACTOR_BODY = {"name": "Hot-rolled coil", "unit": "kg", "co2e_per_unit": "1.85", "year": 2024}


def supplier_factor(supplier: Supplier) -> int:
    return supplier_factor_create(supplier=supplier, data={**FACTOR_BODY, "co2e_per_unit": Decimal("1.85")}).pk


def stored_activity(supplier: Supplier) -> int:
    """An activity of the supplier's organization, stored as POST /activities/ stores one."""
    [item] = activity_inputs(activity_input(), organization_id=supplier.organization_id)
    assert isinstance(item, ActivityInput)
    return activities_create(organization=supplier.organization, items=[item])[0].pk


# Every write endpoint: (request it makes, its success status, the permission it needs).
WRITES: dict[str, tuple[Callable[[APIClient, Supplier], Any], int, str]] = {
    "POST suppliers": (
        lambda api, sup: api.post(reverse("supplier-list"), {"external_id": "V-9", "name": "New"}, format="json"),
        201,
        "add_supplier",
    ),
    "PATCH supplier": (
        lambda api, sup: api.patch(reverse("supplier-detail", args=[sup.pk]), {"name": "Renamed"}, format="json"),
        200,
        "change_supplier",
    ),
    "DELETE supplier": (lambda api, sup: api.delete(reverse("supplier-detail", args=[sup.pk])), 204, "delete_supplier"),
    "POST supplier factors": (
        lambda api, sup: api.post(reverse("supplier-factor-list", args=[sup.pk]), FACTOR_BODY, format="json"),
        201,
        "add_emissionfactor",
    ),
    "DELETE supplier factor": (
        lambda api, sup: api.delete(reverse("supplier-factor-detail", args=[sup.pk, supplier_factor(sup)])),
        204,
        "delete_emissionfactor",
    ),
    "POST activities": (
        lambda api, sup: api.post(reverse("activity-list"), activity_input(), format="json"),
        201,
        "add_activityrecord",
    ),
    "PATCH activity": (
        lambda api, sup: api.patch(
            reverse("activity-detail", args=[stored_activity(sup)]), {"amount": "2"}, format="json"
        ),
        200,
        "change_activityrecord",
    ),
    "DELETE activity": (
        lambda api, sup: api.delete(reverse("activity-detail", args=[stored_activity(sup)])),
        204,
        "delete_activityrecord",
    ),
    "POST recalculations": (
        lambda api, sup: api.post(
            reverse("recalculation-list"), {"dataset": FactorDataset.objects.get().pk}, format="json"
        ),
        202,
        "add_restatement",
    ),
}
ALLOWED = {
    Membership.Role.ADMIN: set(WRITES),
    Membership.Role.ANALYST: {"POST activities", "PATCH activity", "DELETE activity", "POST recalculations"},
    Membership.Role.VIEWER: set(),
}


@pytest.mark.parametrize("role", list(Membership.Role))
@pytest.mark.parametrize("endpoint", list(WRITES))
def test_each_role_writes_what_its_permissions_allow(org, electricity_factor, role, endpoint) -> None:
    call, success, permission = WRITES[endpoint]
    supplier = SupplierFactory.create(organization=org)
    before = (Supplier.objects.count(), Supplier.objects.filter(name="Renamed").count())
    response = call(member_api(org, role), supplier)
    if endpoint in ALLOWED[role]:
        assert response.status_code == success, response.content
    else:
        assert response.status_code == 403
        detail = response.json()["detail"]
        assert detail.startswith(f"Your role '{role}' may not ") and detail.endswith(
            f"lacks the '{permission}' permission."
        )
        assert (Supplier.objects.count(), Supplier.objects.filter(name="Renamed").count()) == before


def test_the_allowed_writes_are_the_role_table() -> None:
    """The expectations above are the admin's role table read per endpoint, not a second table."""
    for role, allowed in ALLOWED.items():
        assert allowed == {name for name, (_, _, permission) in WRITES.items() if permission in ROLE_PERMISSIONS[role]}


def test_a_refusal_names_the_role_and_what_it_lacks(org) -> None:
    response = member_api(org, Membership.Role.VIEWER).post(
        reverse("supplier-list"), {"external_id": "V-1", "name": "Sheffield Steel"}, format="json"
    )
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Your role 'viewer' may not create suppliers: it lacks the 'add_supplier' permission."
    }
    assert not Supplier.objects.exists()


@pytest.mark.parametrize("role", list(Membership.Role))
def test_every_role_reads_and_calculates(org, electricity_factor, role) -> None:
    api = member_api(org, role)
    SupplierFactory.create(organization=org)
    for name in ("supplier-list", "emission-list", "activity-list", "factor-list", "restatement-list"):
        assert api.get(reverse(name)).status_code == 200, name
    assert api.get(reverse("emission-summary"), {"group_by": "category"}).status_code == 200
    export = api.get(reverse("emission-export"))
    assert export.status_code == 200
    assert b"".join(cast(Any, export).streaming_content).startswith(b"id,")  # read to the end: gives its bulk slot back
    # A calculation stores nothing: a read of factors.
    assert api.post(reverse("calculate"), electricity_input(), format="json").status_code == 200
    batch = api.post(reverse("calculate-batch"), {"items": [electricity_input()]}, format="json")
    assert batch.status_code == 200
    assert "error" not in batch.json()["results"][0]


def test_a_role_change_applies_to_the_next_request(org) -> None:
    """The role is part of the membership row the token authentication caches; changing it invalidates that row."""
    membership = MembershipFactory.create(organization=org, role=Membership.Role.ADMIN)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    body = {"external_id": "V-1", "name": "Sheffield Steel"}
    assert api.post(reverse("supplier-list"), body, format="json").status_code == 201
    assert api.get(reverse("supplier-list")).status_code == 200  # the caller's row is cached now
    membership.role = Membership.Role.VIEWER
    membership.save()
    response = api.post(reverse("supplier-list"), {**body, "external_id": "V-2"}, format="json")
    assert response.status_code == 403
    assert "'viewer'" in response.json()["detail"]


def test_a_superuser_member_may_do_anything(org) -> None:
    membership = MembershipFactory.create(organization=org, role=Membership.Role.VIEWER, user__is_superuser=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    assert api.post(reverse("supplier-list"), {"external_id": "V-1", "name": "S"}, format="json").status_code == 201


def api_views() -> list[tuple[str, type[APIView]]]:
    """``(route, view class)`` of every route under the API."""

    def walk(patterns: list[Any], prefix: str) -> list[tuple[str, type[APIView]]]:
        found = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                cls = getattr(pattern.callback, "cls", None)
                if (
                    cls is not None
                    and issubclass(cls, APIView)
                    and (prefix + str(pattern.pattern)).startswith("api/v1/")
                ):
                    found.append((prefix + str(pattern.pattern), cls))
        return found

    return walk(get_resolver().url_patterns, "")


def test_every_api_view_checks_the_role() -> None:
    views = api_views()
    assert len(views) > 10
    for route, cls in views:
        if cls.__name__ == "APIRootView":
            continue  # the router's index of links
        assert any(isinstance(p, type) and issubclass(p, RoleAllows) for p in cls.permission_classes), route
