"""Tests for emissions.admin: org scoping, read-only results, query counts and the category summary."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from zeal import zeal_ignore

from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    ExchangeRate,
    FactorDataset,
    Organization,
    PriceIndex,
    Supplier,
)
from emissions.services.organizations import org_user_create
from perf.admin import EstimatedCountPaginator
from tests.factories import (
    ActivityRecordFactory,
    EmissionFactorFactory,
    EmissionFactory,
    ExchangeRateFactory,
    FactorDatasetFactory,
    MembershipFactory,
    OrganizationFactory,
    PriceIndexFactory,
    SupplierFactory,
)
from tests.helpers import APIClient, Client

pytestmark = pytest.mark.django_db

MODELS = [
    "organization",
    "membership",
    "supplier",
    "factordataset",
    "emissionfactor",
    "exchangerate",
    "priceindex",
    "activityrecord",
    "emission",
]


@pytest.fixture
def superuser_client() -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(org) -> Client:
    """A staff user of ``org`` with the org-admin role, made the way operators make them."""
    user, _ = org_user_create(organization=org, username="orgadmin", role="admin")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tenants(org: Organization, other_org: Organization) -> dict[str, Any]:
    """One supplier, activity and emission per organization, plus public and private factors."""
    data: dict[str, Any] = {}
    for tenant in (org, other_org):
        supplier = SupplierFactory.create(organization=tenant, name=f"{tenant.slug} Steel Ltd")
        activity = ActivityRecordFactory.create(organization=tenant, supplier=supplier)
        emission = EmissionFactory.create(organization=tenant, activity=activity)
        private = FactorDatasetFactory.create(source=FactorDataset.Source.SUPPLIER, organization=tenant)
        factor = EmissionFactorFactory.create(dataset=private, activity=f"supplier:{tenant.slug}")
        MembershipFactory.create(organization=tenant)
        data[tenant.slug] = {
            "supplier": supplier,
            "activity": activity,
            "emission": emission,
            "dataset": private,
            "factor": factor,
        }
    data["public_factor"] = EmissionFactorFactory.create(activity="desnz:7_400_4000_5")
    ExchangeRateFactory.create()
    PriceIndexFactory.create()
    return data


def changelist(model: str) -> str:
    return reverse(f"admin:emissions_{model}_changelist")


def change(obj) -> str:
    return reverse(f"admin:emissions_{obj._meta.model_name}_change", args=[obj.pk])


def result_pks(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_loads_for_superuser(superuser_client, tenants, model):
    response = superuser_client.get(changelist(model))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 1


@pytest.mark.parametrize("model", MODELS)
def test_every_changelist_loads_for_org_staff(staff_client, tenants, model):
    response = staff_client.get(changelist(model))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 1


@pytest.mark.parametrize("model", ["supplier", "activityrecord", "emission", "emissionfactor", "factordataset"])
def test_change_and_add_pages_load_for_superuser(superuser_client, tenants, model):
    keys = {"activityrecord": "activity", "emissionfactor": "factor", "factordataset": "dataset"}
    obj = tenants["acme"][keys.get(model, model)]
    assert superuser_client.get(change(obj)).status_code == 200
    assert superuser_client.get(reverse(f"admin:emissions_{model}_add")).status_code == 200


@pytest.mark.parametrize(
    ("model", "key"),
    [("supplier", "supplier"), ("activityrecord", "activity"), ("emission", "emission"), ("emissionfactor", "factor")],
)
def test_org_staff_sees_only_own_rows(staff_client, tenants, model, key):
    response = staff_client.get(changelist(model))
    pks = result_pks(response)
    assert tenants["acme"][key].pk in pks
    assert tenants["globex"][key].pk not in pks


def test_org_staff_supplier_list_hides_other_org_name(staff_client, tenants):
    html = staff_client.get(changelist("supplier")).content.decode()
    assert "acme Steel Ltd" in html
    assert "globex Steel Ltd" not in html


def test_org_staff_sees_public_factors_but_not_other_orgs(staff_client, tenants):
    pks = result_pks(staff_client.get(changelist("emissionfactor")))
    assert tenants["public_factor"].pk in pks
    assert tenants["globex"]["factor"].pk not in pks
    datasets = result_pks(staff_client.get(changelist("factordataset")))
    assert tenants["public_factor"].dataset_id in datasets
    assert tenants["globex"]["dataset"].pk not in datasets


@pytest.mark.parametrize("key", ["supplier", "activity", "emission", "factor", "dataset"])
def test_org_staff_cannot_open_other_orgs_object(staff_client, tenants, key):
    response = staff_client.get(change(tenants["globex"][key]))
    # Django's admin answers a missing (here: out-of-scope) object with a redirect to the index.
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_org_staff_opens_own_object(staff_client, tenants):
    assert staff_client.get(change(tenants["acme"]["supplier"])).status_code == 200


def test_staff_without_membership_sees_nothing(tenants):
    user = get_user_model().objects.create_user("drifter", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="emissions"))
    client = Client()
    client.force_login(user)
    for model in ("supplier", "activityrecord", "emission", "organization"):
        response = client.get(changelist(model))
        assert response.status_code == 200
        assert result_pks(response) == set()


def test_supplier_add_form_offers_only_own_org(staff_client, org, tenants):
    response = staff_client.get(reverse("admin:emissions_supplier_add"))
    field = response.context["adminform"].form.fields["organization"]
    assert list(field.queryset) == [org]
    assert response.context["adminform"].form.initial["organization"] == org.pk


def test_supplier_add_forces_own_org(staff_client, org, other_org, tenants):
    url = reverse("admin:emissions_supplier_add")
    payload = {"external_id": "NEW-1", "name": "New Supplier", "country": "GB", "naics": "331110"}

    response = staff_client.post(url, {**payload, "organization": other_org.pk})
    assert response.status_code == 200  # form error: another org is not a valid choice
    assert "organization" in response.context["adminform"].form.errors
    assert not Supplier.objects.filter(external_id="NEW-1").exists()

    response = staff_client.post(url, {**payload, "organization": org.pk})
    assert response.status_code == 302
    assert Supplier.objects.get(external_id="NEW-1").organization == org


def test_supplier_duplicate_external_id_is_a_form_error(staff_client, org, tenants):
    existing = tenants["acme"]["supplier"]
    response = staff_client.post(
        reverse("admin:emissions_supplier_add"),
        {"organization": org.pk, "external_id": existing.external_id, "name": "Dup", "country": "GB", "naics": ""},
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Supplier.objects.filter(external_id=existing.external_id).count() == 1  # no duplicate written


def test_factor_choices_limited_for_org_staff(staff_client, org, tenants):
    response = staff_client.get(reverse("admin:emissions_emissionfactor_add"))
    form = response.context["adminform"].form
    assert list(form.fields["dataset"].queryset) == [tenants["acme"]["dataset"]]
    assert set(form.fields["supplier"].queryset) == {tenants["acme"]["supplier"]}


def test_only_superusers_change_public_factors(staff_client, superuser_client, tenants):
    public = tenants["public_factor"]
    assert staff_client.post(change(public), {"name": "hacked"}).status_code == 403
    response = staff_client.get(change(public))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    own = tenants["acme"]["factor"]
    assert staff_client.get(change(own)).context["has_change_permission"] is True
    assert superuser_client.get(change(public)).context["has_change_permission"] is True


@pytest.mark.parametrize("key", ["activity", "emission"])
def test_results_are_read_only_for_org_staff(staff_client, superuser_client, tenants, key):
    obj = tenants["acme"][key]
    model = obj._meta.model_name
    assert staff_client.get(reverse(f"admin:emissions_{model}_add")).status_code == 403
    assert staff_client.post(change(obj), {}).status_code == 403
    assert staff_client.get(change(obj)).context["has_change_permission"] is False
    assert superuser_client.get(change(obj)).context["has_change_permission"] is True


def _make_rows(org, n: int) -> None:
    supplier = SupplierFactory(organization=org)
    factor = EmissionFactorFactory()
    for _ in range(n):
        activity = ActivityRecordFactory(organization=org, supplier=supplier)
        EmissionFactory(organization=org, activity=activity, factor=factor)


# Queries for one changelist page holding every row, as (superuser, org staff). The same for 1 and
# for 100 rows: no row costs a query. A superuser's base is 5: session, user, the planner's row
# estimate, the capped count (a small table is counted exactly) and the page itself. Org staff's
# base is 7: session, user, user and group permissions, their membership (the org scope), the capped
# count and the page (an org-filtered list has no estimate to read). On top: a list_filter over a
# column's distinct values (factor year, set name, quote currency) is 1; a date_hierarchy is 2 (min/max, then
# the dates); the emission category summary is 1.
CHANGELIST_QUERIES: dict[str, tuple[int, int]] = {
    "organization": (5, 7),
    "membership": (5, 7),
    "supplier": (5, 7),
    "factordataset": (5, 7),
    "emissionfactor": (6, 8),
    "exchangerate": (7, 9),
    "priceindex": (6, 8),
    # Org staff's lists of activities and emissions offer their largest suppliers as a filter: one more query (the
    # yearly rollup's ranking), the same for 1 and 100 rows.
    "activityrecord": (7, 10),
    "emission": (8, 11),
}


def _add_rows(model: str, org: Organization, n: int) -> None:
    """Create ``n`` rows of ``model`` that both a superuser and ``org``'s staff can list, each with its
    own related rows (supplier, activity, factor, dataset, user), so a per-row lookup would show.

    New organizations are the exception: staff only ever see their own.
    """
    offset = {"exchangerate": ExchangeRate, "priceindex": PriceIndex}.get(model, Organization)._default_manager.count()
    for i in range(n):
        if model == "organization":
            OrganizationFactory.create()
        elif model == "membership":
            MembershipFactory.create(organization=org)
        elif model == "supplier":
            SupplierFactory.create(organization=org)
        elif model == "factordataset":
            FactorDatasetFactory.create(organization=org, source=FactorDataset.Source.SUPPLIER)
        elif model == "emissionfactor":
            dataset = FactorDatasetFactory.create(organization=org, source=FactorDataset.Source.SUPPLIER)
            EmissionFactorFactory.create(dataset=dataset)
        elif model == "exchangerate":
            ExchangeRateFactory.create(year=1900 + offset + i)
        elif model == "priceindex":
            PriceIndexFactory.create(year=1900 + offset + i)
        elif model == "activityrecord":
            ActivityRecordFactory.create(organization=org)
        elif model == "emission":
            EmissionFactory.create(organization=org)
        else:
            raise AssertionError(f"no row builder for {model}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("who", ["superuser", "staff"])
def test_changelist_query_count_is_the_same_for_1_and_100_rows(request, org, model, who):
    client = request.getfixturevalue(f"{who}_client")
    # Rows already listed before any are added: the org itself; the staff user's own membership.
    already = 1 if model == "organization" or (model == "membership" and who == "staff") else 0
    # ``all``: every row on one page (the default page holds 50), so 100 rows are really rendered.
    url = changelist(model) + "?all="
    counts, listed = [], []
    for new_rows in (1 - already, 99):
        _add_rows(model, org, new_rows)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200
        counts.append(len(ctx))
        listed.append(len(response.context["cl"].result_list))
    staff_sees_one = model == "organization" and who == "staff"
    assert listed == ([1, 1] if staff_sees_one else [1, 100])
    expected = CHANGELIST_QUERIES[model][0 if who == "superuser" else 1]
    assert counts == [expected, expected], [q["sql"] for q in ctx.captured_queries]


def test_category_summary_totals(staff_client, org, other_org):
    supplier = SupplierFactory(organization=org)
    factor = EmissionFactorFactory()
    for category, kg in [(1, "1000.5"), (1, "499.5"), (4, "500"), (6, "0.25")]:
        activity = ActivityRecordFactory(organization=org, supplier=supplier, category=category)
        EmissionFactory(organization=org, activity=activity, factor=factor, co2e_kg=Decimal(kg))
    EmissionFactory(organization=other_org, co2e_kg=Decimal("99999"))  # another tenant: not counted

    response = staff_client.get(changelist("emission"))
    summary = response.context["category_summary"]
    assert summary["total_t"] == Decimal("2.00025")
    assert summary["records"] == 4
    rows = {row["category"]: row for row in summary["rows"]}
    assert set(rows) == {1, 4, 6}
    assert rows[1]["tonnes"] == Decimal("1.5")
    assert rows[1]["records"] == 2
    assert rows[4]["tonnes"] == Decimal("0.5")
    assert rows[6]["records"] == 1
    assert rows[1]["share"].quantize(Decimal("0.01")) == Decimal("74.99")
    assert [row["category"] for row in summary["rows"]] == [1, 4, 6]  # largest first
    html = response.content.decode()
    assert "Emissions by category" in html
    assert "1 Purchased goods and services" in html
    assert "1.500" in html and "75.0%" in html and "2.000" in html

    filtered = staff_client.get(changelist("emission"), {"category__exact": "4"}).context["category_summary"]
    assert [(r["category"], r["tonnes"], r["share"]) for r in filtered["rows"]] == [(4, Decimal("0.5"), Decimal(100))]


def test_category_summary_is_one_query(staff_client, org):
    _make_rows(org, 3)
    with CaptureQueriesContext(connection) as ctx:
        staff_client.get(changelist("emission"))
    grouped = [q["sql"] for q in ctx.captured_queries if "GROUP BY" in q["sql"] and "emissions_emission" in q["sql"]]
    assert len(grouped) == 1


def test_unfiltered_emission_changelist_runs_no_count_on_postgresql(superuser_client, org, monkeypatch):
    _make_rows(org, 3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emissions_emission")  # refresh pg_class.reltuples, as autovacuum would
    # Treat this small table as "big" so the estimate path is taken.
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 1)
    with CaptureQueriesContext(connection) as ctx:
        response = superuser_client.get(changelist("emission"))
    assert response.status_code == 200
    sqls = [q["sql"] for q in ctx.captured_queries]
    assert not [sql for sql in sqls if re.search(r"COUNT\(\*\)", sql, re.IGNORECASE)], sqls
    assert any("reltuples" in sql for sql in sqls)
    assert response.context["cl"].result_count == 3  # ANALYZE of a small table counts it exactly


def test_filtered_changelist_counts_exactly_below_the_cap(superuser_client, org):
    _make_rows(org, 3)
    response = superuser_client.get(changelist("emission"), {"category__exact": "1"})
    assert response.context["cl"].result_count == 3
    assert Emission.objects.count() == 3
    assert ActivityRecord.objects.count() == 3
    assert EmissionFactor.objects.count() == 1


def _post_membership(client: Client, url: str, data: dict[str, Any]) -> Any:
    """POST a Membership admin form; the member, loaded afresh (permission caches are per instance), once saved.

    The form's raw-id user is a second single ``User`` get in the request after the session's user, which
    django-zeal reports as an N+1 (both run under the same middleware line): it is not one.
    """
    with zeal_ignore([{"model": "auth.User", "field": "get()"}]):
        response = client.post(url, data)
    assert response.status_code == 302, response.content
    return get_user_model().objects.get(pk=data["user"])


def _role_changed_in_admin(client: Client, user: Any, role: str) -> Any:
    membership = user.membership
    url = reverse("admin:emissions_membership_change", args=[membership.pk])
    return _post_membership(client, url, {"user": user.pk, "organization": membership.organization_id, "role": role})


def test_demoting_a_member_in_the_admin_takes_their_admin_writes_away(superuser_client, org):
    """The admin's permissions come from the role's group: a role edited in the Membership admin moves the user."""
    user, token = org_user_create(organization=org, username="demoted", role="admin")
    fresh = _role_changed_in_admin(superuser_client, user, "viewer")
    assert fresh.membership.role == "viewer"
    for action in ("add", "change", "delete"):
        assert not fresh.has_perm(f"emissions.{action}_supplier")
    assert fresh.has_perm("emissions.view_supplier")
    member_admin = Client()
    member_admin.force_login(fresh)
    assert member_admin.get(reverse("admin:emissions_supplier_add")).status_code == 403
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    refused = api.post("/api/v1/suppliers/", {"name": "Acme", "external_id": "ACME"}, format="json")
    assert refused.status_code == 403
    assert not Supplier.objects.exists()


def test_promoting_a_member_in_the_admin_gives_their_admin_writes(superuser_client, org):
    user, _ = org_user_create(organization=org, username="promoted", role="viewer")
    fresh = _role_changed_in_admin(superuser_client, user, "admin")
    assert fresh.has_perm("emissions.add_supplier") and fresh.has_perm("emissions.delete_emissionfactor")
    assert fresh.groups.filter(name__startswith="Organization ").count() == 1


def test_adding_a_membership_in_the_admin_gives_the_role_group(superuser_client, org):
    user = get_user_model().objects.create_user("newcomer", is_staff=True)
    url = reverse("admin:emissions_membership_add")
    fresh = _post_membership(superuser_client, url, {"user": user.pk, "organization": org.pk, "role": "analyst"})
    assert fresh.has_perm("emissions.add_activityrecord")
    assert not fresh.has_perm("emissions.add_supplier")
