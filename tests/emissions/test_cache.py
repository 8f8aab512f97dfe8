"""emissions.cache: each write invalidates the namespaces whose cached values it can change."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from emissions.cache import (
    GLOBAL_FACTORS,
    MAX_MONTH_NAMESPACES,
    MAX_YEAR_NAMESPACES,
    emission_list_namespaces,
    emission_namespaces,
    factor_namespaces,
    supplier_id_namespaces,
    supplier_namespaces,
)
from emissions.models import ExchangeRate, Membership, Supplier
from emissions.services.activities import activities_create
from emissions.services.bulk import activities_delete_for_org
from emissions.services.reference import exchange_rates_load
from emissions.services.supplier_factors import supplier_factor_create, supplier_factor_delete
from emissions.services.suppliers import supplier_create, supplier_delete, supplier_update
from perf.cache import GLOBAL_AUTH, Namespace, org_ns, tiered
from tests.emissions.api.payloads import activity_input
from tests.emissions.services.test_activities import item as electricity_item
from tests.factories import SupplierFactory

pytestmark = pytest.mark.django_db


def bumped(action: Callable[[], object], namespaces: list[Namespace], capture) -> set[str]:
    """The namespaces among ``namespaces`` whose version ``action`` changed, after commit."""
    before = {ns: v.value for ns, v in zip(namespaces, tiered().versions(namespaces), strict=True)}
    with capture(execute=True):
        action()
    tiered().clear_local()
    after = {ns: v.value for ns, v in zip(namespaces, tiered().versions(namespaces), strict=True)}
    return {ns.key for ns in namespaces if before[ns] != after[ns]}


@pytest.fixture
def all_ns(org, other_org) -> list[Namespace]:
    return [
        *emission_list_namespaces(org.pk),
        *emission_list_namespaces(org.pk, dt.date(2025, 1, 1), dt.date(2025, 12, 31)),
        *emission_list_namespaces(org.pk, dt.date(2024, 1, 1), dt.date(2024, 12, 31)),
        *emission_list_namespaces(org.pk, dt.date(2025, 1, 1), dt.date(2025, 1, 31)),
        *emission_list_namespaces(org.pk, dt.date(2025, 2, 1), dt.date(2025, 2, 28)),
        *supplier_namespaces(org.pk),
        *supplier_id_namespaces(org.pk),
        *emission_namespaces(other_org.pk),
        *supplier_namespaces(other_org.pk),
        *supplier_id_namespaces(other_org.pk),
        GLOBAL_AUTH,
    ]


def test_activity_create_and_delete_bump_the_organizations_emissions(
    org, all_ns, electricity_factor, django_capture_on_commit_callbacks
) -> None:
    create = bumped(
        lambda: activities_create(organization=org, items=[electricity_item()]),
        all_ns,
        django_capture_on_commit_callbacks,
    )
    # New rows: the lists and summaries that can show them (any year, the year and the month they start in), not the
    # details, nor February's.
    assert create == {
        f"org{org.pk}:emissions:added",
        f"org{org.pk}:emissions:added:2025",
        f"org{org.pk}:emissions:added:2025-01",
    }
    delete = bumped(lambda: activities_delete_for_org(organization=org), all_ns, django_capture_on_commit_callbacks)
    assert delete == {f"org{org.pk}:emissions"}


def test_writes_to_an_unreferenced_supplier_leave_emissions_cached(
    org, all_ns, django_capture_on_commit_callbacks
) -> None:
    supplier: list[Supplier] = []
    created = bumped(
        lambda: supplier.append(supplier_create(organization=org, data={"name": "Acme", "external_id": "A"})),
        all_ns,
        django_capture_on_commit_callbacks,
    )
    # "Unknown supplier" answers are never cached across requests, so the supplier lookups stay valid.
    assert created == {f"org{org.pk}:suppliers"}
    # No activity references it: emission responses cannot name it, and its id is unchanged.
    assert bumped(
        lambda: supplier_update(supplier=supplier[0], data={"name": "Acme 2"}),
        all_ns,
        django_capture_on_commit_callbacks,
    ) == {f"org{org.pk}:suppliers"}
    assert bumped(lambda: supplier_delete(supplier=supplier[0]), all_ns, django_capture_on_commit_callbacks) == {
        f"org{org.pk}:suppliers",
        f"org{org.pk}:supplier-ids",
    }


def test_editing_a_referenced_supplier_bumps_the_organizations_emissions(
    org, all_ns, electricity_factor, django_capture_on_commit_callbacks
) -> None:
    supplier = SupplierFactory.create(organization=org)
    with django_capture_on_commit_callbacks(execute=True):
        activities_create(organization=org, items=[electricity_item(supplier_id=supplier.pk)])
    assert bumped(
        lambda: supplier_update(supplier=supplier, data={"name": "Renamed"}),
        all_ns,
        django_capture_on_commit_callbacks,
    ) == {f"org{org.pk}:suppliers", f"org{org.pk}:emissions"}


def test_the_reference_check_runs_after_commit(org, electricity_factor, django_capture_on_commit_callbacks) -> None:
    """An activity committed after the edit's own check but before its commit must still be seen."""
    supplier = SupplierFactory.create(organization=org)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        supplier_update(supplier=supplier, data={"name": "Renamed"})
    # The edit's transaction has not committed yet; meanwhile an activity batch referencing the supplier lands.
    with django_capture_on_commit_callbacks(execute=True):
        activities_create(organization=org, items=[electricity_item(supplier_id=supplier.pk)])
    (before,) = tiered().versions(emission_namespaces(org.pk)[:1])
    for callback in callbacks:  # the edit commits now
        callback()
    tiered().clear_local()
    assert tiered().versions(emission_namespaces(org.pk)[:1])[0].value != before.value


def test_a_supplier_moved_to_another_organization_bumps_both(
    org, other_org, all_ns, django_capture_on_commit_callbacks
) -> None:
    supplier = Supplier.objects.get(pk=SupplierFactory.create(organization=org).pk)

    def move() -> None:
        supplier.organization = other_org
        supplier.save()

    assert bumped(move, all_ns, django_capture_on_commit_callbacks) == {
        f"org{o.pk}:{resource}" for o in (org, other_org) for resource in ("suppliers", "supplier-ids", "emissions")
    }


def test_a_cached_emission_list_survives_a_new_supplier_and_follows_a_renamed_one(
    api, org, electricity_factor, django_assert_num_queries, django_capture_on_commit_callbacks
) -> None:
    supplier = SupplierFactory.create(organization=org, name="Before")
    with django_capture_on_commit_callbacks(execute=True):
        activities_create(organization=org, items=[electricity_item(supplier_id=supplier.pk)])
    url = "/api/v1/emissions/"
    assert api.get(url).json()["results"][0]["supplier"]["name"] == "Before"
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/suppliers/", {"name": "New", "external_id": "N-1"}, format="json")
    assert created.status_code == 201
    tiered().clear_local()  # as another worker would: only Redis and the versions there
    with django_assert_num_queries(0):
        assert api.get(url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        renamed = api.patch(f"/api/v1/suppliers/{supplier.pk}/", {"name": "After"}, format="json")
    assert renamed.status_code == 200
    assert api.get(url).json()["results"][0]["supplier"]["name"] == "After"


def test_supplier_factor_writes_bump_the_organizations_factors(org, all_ns, django_capture_on_commit_callbacks) -> None:
    supplier = SupplierFactory.create(organization=org)
    made = []
    body = {"name": "Steel", "unit": "kg", "co2e_per_unit": Decimal("1.5"), "year": 2025}
    assert bumped(
        lambda: made.append(supplier_factor_create(supplier=supplier, data=body)),
        all_ns,
        django_capture_on_commit_callbacks,
    ) == {f"org{org.pk}:factors"}
    assert bumped(lambda: supplier_factor_delete(factor=made[0]), all_ns, django_capture_on_commit_callbacks) == {
        f"org{org.pk}:factors"
    }


def test_reference_and_factor_imports_bump_the_catalogue(tmp_path, all_ns, django_capture_on_commit_callbacks) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("currency,quote_currency,year,rate,source\nEUR,USD,2024,1.08,test\n")
    assert bumped(
        lambda: exchange_rates_load(path=path, set_name="ecb"), all_ns, django_capture_on_commit_callbacks
    ) == {"factors"}
    assert ExchangeRate.objects.count() == 1


def test_admin_style_saves_invalidate_through_signals(org, all_ns, django_capture_on_commit_callbacks) -> None:
    supplier = SupplierFactory.create(organization=org)

    def edit() -> None:
        supplier.name = "Edited in the admin"
        supplier.save()

    assert bumped(edit, all_ns, django_capture_on_commit_callbacks) == {f"org{org.pk}:suppliers"}

    def delete() -> None:
        supplier.delete()

    assert bumped(delete, all_ns, django_capture_on_commit_callbacks) == {
        f"org{org.pk}:suppliers",
        f"org{org.pk}:supplier-ids",
    }


# -- authentication -------------------------------------------------------------------------------


def test_a_deleted_token_is_refused_at_once(api, django_capture_on_commit_callbacks) -> None:
    assert api.get("/api/v1/suppliers/").status_code == 200  # token cached
    with django_capture_on_commit_callbacks(execute=True):
        Token.objects.filter(user=api.user).delete()  # a queryset delete still sends per-object signals
    assert api.get("/api/v1/suppliers/").status_code == 401


def test_a_deactivated_user_is_refused_at_once(api, django_capture_on_commit_callbacks) -> None:
    assert api.get("/api/v1/suppliers/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        user = User.objects.get(pk=api.user.pk)
        user.is_active = False
        user.save()
    assert api.get("/api/v1/suppliers/").status_code == 401


def test_a_moved_member_sees_the_new_organization_at_once(
    api, org, other_org, django_capture_on_commit_callbacks
) -> None:
    SupplierFactory(organization=other_org, name="Theirs")
    assert api.get("/api/v1/suppliers/").json()["results"] == []
    with django_capture_on_commit_callbacks(execute=True):
        Membership.objects.filter(user=api.user).update(organization=other_org)
        # A queryset update sends no signal; whoever writes that way must invalidate (as the services do).
        from emissions.cache import auth_changed

        auth_changed()
    assert [s["name"] for s in api.get("/api/v1/suppliers/").json()["results"]] == ["Theirs"]


def test_a_login_does_not_drop_cached_authentications(api, django_capture_on_commit_callbacks) -> None:
    api.get("/api/v1/suppliers/")
    (before,) = tiered().versions([GLOBAL_AUTH])
    user = User.objects.get(pk=api.user.pk)
    user.last_login = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        user.save(update_fields=["last_login"])
    tiered().clear_local()
    assert tiered().versions([GLOBAL_AUTH])[0].value == before.value


def test_an_unknown_token_is_refused_and_a_new_one_accepted(api, django_capture_on_commit_callbacks) -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert client.get("/api/v1/suppliers/").status_code == 401
    assert client.get("/api/v1/suppliers/").status_code == 401  # cached as unknown
    with django_capture_on_commit_callbacks(execute=True):
        Token.objects.filter(user=api.user).update(key="0" * 40)
        Token.objects.get(key="0" * 40).save()  # the save is what a real token creation sends
    assert client.get("/api/v1/suppliers/").status_code == 200


def test_the_cached_user_holds_no_password_and_defers_it(api) -> None:
    from emissions.api.authentication import USER_FIELDS

    assert "password" not in USER_FIELDS
    api.get("/api/v1/suppliers/")
    raw = b"".join(
        v or b""
        for v in [tiered()._client.get(k) for k in tiered()._client.keys(f"vcci:c:{tiered().key_version}:auth*")]
    )
    assert raw
    assert User.objects.get(pk=api.user.pk).password.encode() not in raw


def test_namespaces() -> None:
    assert factor_namespaces(3) == [GLOBAL_FACTORS, org_ns(3, "factors")]
    assert supplier_namespaces(3) == [org_ns(3, "suppliers")]
    assert supplier_id_namespaces(3) == [org_ns(3, "supplier-ids")]
    assert emission_namespaces(3) == [org_ns(3, "emissions"), *factor_namespaces(3)]


def test_list_namespaces_follow_the_period_filter() -> None:
    details = emission_namespaces(3)
    assert emission_list_namespaces(3) == [*details, org_ns(3, "emissions", "added")]
    assert emission_list_namespaces(3, dt.date(2025, 1, 1), None) == [*details, org_ns(3, "emissions", "added")]
    assert emission_list_namespaces(3, None, dt.date(2025, 1, 1)) == [*details, org_ns(3, "emissions", "added")]
    assert emission_list_namespaces(3, dt.date(2024, 7, 1), dt.date(2025, 6, 30)) == [
        *details,
        org_ns(3, "emissions", "added:2024"),
        org_ns(3, "emissions", "added:2025"),
    ]
    # Within MAX_MONTH_NAMESPACES calendar months (days inside them do not matter): one namespace per month.
    assert MAX_MONTH_NAMESPACES == 3
    assert emission_list_namespaces(3, dt.date(2025, 3, 1), dt.date(2025, 3, 31)) == [
        *details,
        org_ns(3, "emissions", "added:2025-03"),
    ]
    assert emission_list_namespaces(3, dt.date(2024, 11, 15), dt.date(2025, 1, 2)) == [
        *details,
        org_ns(3, "emissions", "added:2024-11"),
        org_ns(3, "emissions", "added:2024-12"),
        org_ns(3, "emissions", "added:2025-01"),
    ]
    assert emission_list_namespaces(3, dt.date(2025, 1, 31), dt.date(2025, 4, 1)) == [
        *details,
        org_ns(3, "emissions", "added:2025"),
    ]
    many = emission_list_namespaces(3, dt.date(2000, 1, 1), dt.date(2000 + MAX_YEAR_NAMESPACES, 1, 1))
    assert many == [*details, org_ns(3, "emissions", "added")]
    # An empty window: no addition can enter it.
    assert emission_list_namespaces(3, dt.date(2025, 2, 1), dt.date(2025, 1, 1)) == details
    assert org_ns(3, "emissions", "added:2025").key == "org3:emissions:added:2025"


def test_an_erp_batch_recomputes_only_what_it_can_change(
    api, org, electricity_factor, django_assert_num_queries, django_capture_on_commit_callbacks
) -> None:
    """Activities added for 2025: last year's summary and list, and every detail, stay cached (served without a
    query, same ETag); this year's and the unfiltered ones are recomputed and show the new rows."""
    with django_capture_on_commit_callbacks(execute=True):
        [old] = activities_create(
            organization=org, items=[electricity_item(period=(dt.date(2024, 3, 1), dt.date(2024, 3, 31)))]
        )
        activities_create(organization=org, items=[electricity_item()])
    year_2024 = "period_from=2024-01-01&period_to=2024-12-31"
    year_2025 = "period_from=2025-01-01&period_to=2025-12-31"
    urls = {
        "detail": f"/api/v1/emissions/{old.emission.pk}/",
        "activity": f"/api/v1/activities/{old.pk}/",
        "summary 2024": f"/api/v1/emissions/summary/?group_by=month&{year_2024}",
        "list 2024": f"/api/v1/emissions/?{year_2024}",
        "activities 2024": f"/api/v1/activities/?{year_2024}",
        "summary 2025": f"/api/v1/emissions/summary/?group_by=month&{year_2025}",
        "list 2025": f"/api/v1/emissions/?{year_2025}",
        "summary": "/api/v1/emissions/summary/?group_by=category",
        "list": "/api/v1/emissions/",
    }
    etags = {}
    for name, url in urls.items():
        response = api.get(url)
        assert response.status_code == 200, (name, response.content)
        etags[name] = response["ETag"]
    with django_capture_on_commit_callbacks(execute=True):
        posted = api.post("/api/v1/activities/", [{**activity_input(), "amount": "2"}], format="json")
    assert posted.status_code == 201, posted.content
    tiered().clear_local()  # as another worker would see it: Redis and the versions there
    kept = ("detail", "activity", "summary 2024", "list 2024", "activities 2024")
    for name in kept:
        with django_assert_num_queries(0):
            response = api.get(urls[name])
        assert response["ETag"] == etags[name], name
    for name in ("summary 2025", "list 2025", "summary", "list"):
        response = api.get(urls[name])
        assert response["ETag"] != etags[name], name
    assert api.get(urls["list 2025"]).json()["results"][0]["co2e_kg"] == "354.000000"
    assert api.get(urls["summary"]).json()["count"] == 3
