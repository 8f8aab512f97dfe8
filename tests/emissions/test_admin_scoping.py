"""Tests for emissions.admin: a foreign key never shows or accepts another organization's row.

Every registered model with a foreign key is covered (``FOREIGN_KEYS``; the first test fails when a
model is registered without being added here): its form's raw-id labels and choices, the re-render
of a rejected form, list filters over its keys, and the autocomplete behind its autocomplete fields.
Superusers still see every organization's rows.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.test import RequestFactory
from django.urls import reverse
from django.utils.html import escape

from emissions.admin import EmissionFactorAdmin
from emissions.models import EmissionFactor, FactorDataset, Organization, Supplier
from emissions.services.organizations import org_user_create
from tests.factories import (
    ActivityRecordFactory,
    EmissionFactorFactory,
    EmissionFactory,
    ExchangeRateFactory,
    FactorDatasetFactory,
    MembershipFactory,
    PriceIndexFactory,
    SupplierFactory,
    UserFactory,
)
from tests.helpers import Client, unit_of_work

pytestmark = pytest.mark.django_db

# model name -> {foreign key: the tenant row it points to (a key of ``rows``)}.
FOREIGN_KEYS: dict[str, dict[str, str]] = {
    "membership": {"user": "user", "organization": "organization"},
    "supplier": {"organization": "organization"},
    "factordataset": {"organization": "organization"},
    "emissionfactor": {"dataset": "dataset", "supplier": "supplier"},
    "activityrecord": {"organization": "organization", "supplier": "supplier", "factor": "factor"},
    "emission": {"organization": "organization", "activity": "activity", "supplier": "supplier", "factor": "factor"},
    "exchangerate": {"organization": "organization"},
    "priceindex": {"organization": "organization"},
    "categoryexclusion": {"organization": "organization"},
}
# Read-only admins: no form, so no foreign key to pick (tests/emissions/test_admin_jobs.py covers their scoping).
READ_ONLY = {"job"}
# The models org staff may add (the others are superuser-only writes, answered 403).
STAFF_ADDS = ["supplier", "factordataset", "emissionfactor"]


@pytest.fixture
def staff_user(org: Organization) -> Any:
    user, _ = org_user_create(organization=org, username="orgadmin", role="admin")
    return user


@pytest.fixture
def staff_client(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.fixture
def superuser() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def rows(org: Organization, other_org: Organization) -> dict[str, dict[str, Model]]:
    """Per organization slug, one row of each kind a foreign key points to, named after the organization."""
    data: dict[str, dict[str, Model]] = {}
    for tenant in (org, other_org):
        supplier = SupplierFactory.create(organization=tenant, name=f"{tenant.slug} Steel Ltd")
        dataset = FactorDatasetFactory.create(
            source=FactorDataset.Source.SUPPLIER, organization=tenant, name=f"{tenant.slug} supplier data"
        )
        factor = EmissionFactorFactory.create(dataset=dataset, supplier=supplier, activity=f"supplier:{tenant.slug}")
        factor.refresh_from_db()  # its name shows the decimal as read back, with the column's places
        activity = ActivityRecordFactory.create(organization=tenant, supplier=supplier, factor=factor)
        activity.refresh_from_db()  # likewise for its amount
        EmissionFactory.create(organization=tenant, activity=activity, supplier=supplier, factor=factor)
        user = UserFactory.create(username=f"{tenant.slug}-member")
        MembershipFactory.create(organization=tenant, user=user)
        data[tenant.slug] = {
            "organization": tenant,
            "supplier": supplier,
            "dataset": dataset,
            "factor": factor,
            "activity": activity,
            "user": user,
        }
    return data


def model_admin(model: str) -> admin.ModelAdmin[Any]:
    return next(ma for m, ma in admin.site._registry.items() if m._meta.label_lower == f"emissions.{model}")


def traces(obj: Model) -> list[str]:
    """What would give ``obj`` away on a page: its name and its admin link (every related model has an admin)."""
    return [escape(str(obj)), reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])]


def ids(rows: dict[str, Model], model: str) -> dict[str, int]:
    return {name: rows[key].pk for name, key in FOREIGN_KEYS[model].items()}


def render_form(model: str, user: Any, **form_kwargs: Any) -> tuple[Any, str]:
    """The admin's add form of ``model`` for ``user``, built and rendered as its add view would."""
    request = RequestFactory().get("/")
    request.user = user
    with unit_of_work():
        form = model_admin(model).get_form(request, None, change=False)(**form_kwargs)
        return form, str(form)


def test_every_registered_model_with_a_foreign_key_is_covered():
    registered = {
        model._meta.model_name
        for model in admin.site._registry
        if model._meta.app_label == "emissions" and any(f.is_relation and f.editable for f in model._meta.fields)
    }
    assert registered == set(FOREIGN_KEYS) | READ_ONLY


@pytest.mark.parametrize("model", FOREIGN_KEYS)
def test_admin_form_names_no_other_organizations_row(model, rows, staff_user):
    """Raw-id labels, autocomplete selections and choices: nothing of another organization, by id in
    the initial data (an add form's URL parameters) or in a submission, which is rejected."""
    own, other = rows["acme"], rows["globex"]
    _, own_html = render_form(model, staff_user, initial=ids(own, model))
    for key in FOREIGN_KEYS[model].values():
        assert escape(str(own[key])) in own_html  # the check below would see a leak

    _, initial_html = render_form(model, staff_user, initial=ids(other, model))
    form, rejected_html = render_form(model, staff_user, data=ids(other, model))
    assert not form.is_valid()
    for field in FOREIGN_KEYS[model]:
        assert "Select a valid choice" in str(form.errors[field])
    for key in FOREIGN_KEYS[model].values():
        for trace in traces(other[key]):
            assert trace not in initial_html
            assert trace not in rejected_html


@pytest.mark.parametrize("model", FOREIGN_KEYS)
def test_superuser_form_names_any_organizations_row(model, rows, superuser):
    _, html = render_form(model, superuser, initial=ids(rows["globex"], model))
    for key in FOREIGN_KEYS[model].values():
        assert escape(str(rows["globex"][key])) in html


@pytest.mark.parametrize("model", STAFF_ADDS)
def test_add_page_and_rejected_post_name_no_other_organizations_row(model, rows, staff_client):
    """The reported leak, end to end: ``GET .../add/?supplier=<another org's id>``, then the POST."""
    url = reverse(f"admin:emissions_{model}_add")
    other = ids(rows["globex"], model)
    page = staff_client.get(url, other)
    assert page.status_code == 200
    model_class = model_admin(model).model
    before = model_class._default_manager.count()
    rejected = staff_client.post(url, other)
    assert rejected.status_code == 200  # the form again, with errors
    assert set(FOREIGN_KEYS[model]) - {"organization"} <= set(rejected.context["adminform"].form.errors)
    assert model_class._default_manager.count() == before
    for key in FOREIGN_KEYS[model].values():
        for trace in traces(rows["globex"][key]):
            assert trace not in page.content.decode()
            assert trace not in rejected.content.decode()


def test_emission_factor_with_another_organizations_supplier_is_not_saved(rows, staff_client):
    own = rows["acme"]
    payload = {
        "dataset": own["dataset"].pk,
        "activity": "supplier:acme:plate",
        "name": "Plate",
        "region": "GB",
        "year": 2024,
        "unit": "t",
        "co2e_per_unit": "1900",
        "gases": "{}",
    }
    response = staff_client.post(
        reverse("admin:emissions_emissionfactor_add"), {**payload, "supplier": rows["globex"]["supplier"].pk}
    )
    assert response.status_code == 200
    assert "supplier" in response.context["adminform"].form.errors
    assert not EmissionFactor.objects.filter(activity="supplier:acme:plate").exists()
    # The same with the organization's own supplier is saved: the refusal above was the supplier's.
    response = staff_client.post(
        reverse("admin:emissions_emissionfactor_add"), {**payload, "supplier": own["supplier"].pk}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert EmissionFactor.objects.get(activity="supplier:acme:plate").supplier == own["supplier"]


def _filter_choices(client: Client, model: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, set[Any]], str]:
    """The choices of the list filters over each foreign key of ``model``, as its changelist offers them
    (a filter with a single choice is not shown), and the page."""
    monkeypatch.setattr(type(model_admin(model)), "list_filter", tuple(FOREIGN_KEYS[model]))
    response = client.get(reverse(f"admin:emissions_{model}_changelist"))
    assert response.status_code == 200
    specs = response.context["cl"].filter_specs
    return {spec.field_path: {pk for pk, _ in spec.lookup_choices} for spec in specs}, response.content.decode()


def _second_rows(org: Organization) -> None:
    """One more row of each kind for ``org``: a filter with two choices is shown."""
    supplier = SupplierFactory.create(organization=org)
    dataset = FactorDatasetFactory.create(source=FactorDataset.Source.SUPPLIER, organization=org)
    factor = EmissionFactorFactory.create(dataset=dataset, supplier=supplier)
    activity = ActivityRecordFactory.create(organization=org, supplier=supplier, factor=factor)
    EmissionFactory.create(organization=org, activity=activity, supplier=supplier, factor=factor)
    MembershipFactory.create(organization=org)


@pytest.mark.parametrize("model", FOREIGN_KEYS)
def test_list_filters_over_foreign_keys_offer_only_own_rows(model, org, rows, staff_client, monkeypatch):
    _second_rows(org)
    choices, page = _filter_choices(staff_client, model, monkeypatch)
    for field, key in FOREIGN_KEYS[model].items():
        assert rows["globex"][key].pk not in choices.get(field, set())
        assert f"{field}__{rows['globex'][key]._meta.pk.name}__exact={rows['globex'][key].pk}" not in page
        if key == "organization":
            # The organization's own is the only choice: no filter to show, unless the key may be empty.
            assert choices.get(field, set()) <= {rows["acme"][key].pk}
        else:
            assert rows["acme"][key].pk in choices[field]


@pytest.mark.parametrize("model", ["emissionfactor", "membership"])
def test_superuser_list_filters_offer_every_organizations_rows(model, rows, superuser, monkeypatch):
    client = Client()
    client.force_login(superuser)
    choices, _ = _filter_choices(client, model, monkeypatch)
    for field, key in FOREIGN_KEYS[model].items():
        assert {rows["acme"][key].pk, rows["globex"][key].pk} <= choices[field]


def test_declared_list_filters_stay_as_designed(rows, staff_user):
    """Scoping adds no filter and changes none that is not over a foreign key."""
    request = RequestFactory().get("/")
    request.user = staff_user
    assert list(model_admin("emissionfactor").get_list_filter(request)) == ["dataset__source", "year"]
    assert EmissionFactorAdmin.list_filter == ("dataset__source", "year")


@pytest.mark.parametrize(
    "model", [model for model, admin_ in admin.site._registry.items() if "organization" in admin_.autocomplete_fields]
)
def test_autocomplete_offers_only_own_organization(model, rows, staff_client):
    response = staff_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "emissions", "model_name": model._meta.model_name, "field_name": "organization", "term": ""},
    )
    assert response.status_code == 200
    assert [int(result["id"]) for result in response.json()["results"]] == [rows["acme"]["organization"].pk]


def test_raw_id_lookup_popup_lists_only_own_rows(rows, staff_client):
    """The raw-id widget's magnifier opens the related changelist as a popup: scoped like the list."""
    response = staff_client.get(reverse("admin:emissions_supplier_changelist"), {"_to_field": "id", "_popup": "1"})
    assert response.status_code == 200
    listed = {obj.pk for obj in response.context["cl"].result_list}
    assert listed == {rows["acme"]["supplier"].pk}
    assert Supplier.objects.count() == 2


@pytest.mark.parametrize("model", ["exchangerate", "priceindex"])
def test_reference_set_lists_show_public_sets_and_only_the_own_organizations(
    model, org, other_org, staff_client, superuser
):
    factory = ExchangeRateFactory if model == "exchangerate" else PriceIndexFactory
    factory.create(set_name="public-set", year=2020)
    factory.create(set_name="own-budget", organization=org, year=2021)
    factory.create(set_name="their-budget", organization=other_org, year=2022)
    url = reverse(f"admin:emissions_{model}_changelist")
    page = staff_client.get(url).content.decode()
    assert "public-set" in page and "own-budget" in page
    assert "their-budget" not in page  # neither as a row nor as a set-name filter choice
    root = Client()
    root.force_login(superuser)
    assert "their-budget" in root.get(url).content.decode()
