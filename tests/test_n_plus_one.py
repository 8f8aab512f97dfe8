"""The suite's N+1 guard (django-zeal, set up in vcci/settings_test.py, tests/conftest.py and tests/helpers.py) is live.

Each test builds an N+1 on purpose and expects ``NPlusOneError``, then runs the fixed form, which
must not raise. Requests, ``tests.helpers.call_command`` runs and ``tests.helpers.unit_of_work()``
blocks each get their own detection context, so the same line running once per request, command or
unit is not reported, while a loop within one still is. Test-data factories (``ModelFactory``) and
the suite's test clients' logins are not checked. Nothing is patched: Django's own
``call_command``, test client and ``DjangoModelFactory`` stay checked in the test's context.
"""

from __future__ import annotations

from collections.abc import Iterable
from io import StringIO
from typing import Any

import django.test
import factory
import pytest
from django.core import management
from django.core.management import BaseCommand
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import path
from factory.django import DjangoModelFactory
from zeal import NPlusOneError

from emissions.models import Emission, Organization, Supplier
from emissions.services.organizations import organization_get_or_create
from tests.factories import EmissionFactory, SupplierFactory, UserFactory
from tests.helpers import APIClient, Client, call_command, unit_of_work

pytestmark = pytest.mark.django_db


def supplier_name(emission: Emission) -> str:
    """The emission's supplier's name: a lazy load unless the supplier was selected with the emission."""
    assert emission.supplier is not None  # the factories always give an emission a supplier
    return emission.supplier.name


def supplier_names(emissions: Iterable[Emission]) -> list[str]:
    return [supplier_name(emission) for emission in emissions]


@pytest.fixture
def emissions(org: Organization) -> list[Emission]:
    """Three emissions, each with its own supplier."""
    return [EmissionFactory.create(organization=org) for _ in range(3)]


def test_lazy_relation_in_a_loop_raises(emissions):
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        supplier_names(Emission.objects.order_by("pk"))


def test_select_related_form_does_not_raise(emissions):
    with CaptureQueriesContext(connection) as ctx:
        names = supplier_names(Emission.objects.select_related("supplier").order_by("pk"))
    assert names == [emission.supplier.name for emission in emissions]
    assert len(ctx) == 1


def test_get_in_a_loop_raises(emissions):
    pks = [emission.supplier_id for emission in emissions]
    with pytest.raises(NPlusOneError, match=r"emissions\.Supplier\.get\(\)"):
        [Supplier.objects.get(pk=pk) for pk in pks]


def test_in_bulk_form_does_not_raise(emissions):
    pks = [emission.supplier_id for emission in emissions]
    with CaptureQueriesContext(connection) as ctx:
        suppliers = Supplier.objects.in_bulk(pks)
    assert sorted(suppliers) == sorted(pks)
    assert len(ctx) == 1


def first_supplier_view(request: HttpRequest) -> HttpResponse:
    """Touches one lazy relation per request: harmless once, an N+1 only if the requests were pooled."""
    first, *_ = Emission.objects.order_by("pk")  # a list query, so not exempt as a single-row load
    return HttpResponse(supplier_name(first))


def all_suppliers_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(", ".join(supplier_names(Emission.objects.order_by("pk"))))


urlpatterns = [path("first/", first_supplier_view), path("all/", all_suppliers_view)]


@pytest.mark.urls(__name__)
def test_n_plus_one_in_a_request_raises(emissions):
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        django.test.Client().get("/all/")


@pytest.mark.urls(__name__)
def test_each_request_is_checked_on_its_own(emissions):
    # Without the zeal middleware both requests would count against the test's context and raise.
    client = django.test.Client()
    assert client.get("/first/").content.decode() == emissions[0].supplier.name
    assert client.get("/first/").content.decode() == emissions[0].supplier.name


class SupplierNamesCommand(BaseCommand):
    """A command that lists supplier names, with or without the N+1."""

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--fixed", action="store_true")
        parser.add_argument("--first", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        queryset = Emission.objects.order_by("pk")
        if options["fixed"]:
            queryset = queryset.select_related("supplier")
        if options["first"]:
            first, *_ = queryset[:2]  # a list query, so not exempt as a single-row load
            self.stdout.write(supplier_name(first))
            return
        self.stdout.write(", ".join(supplier_names(queryset)))


def test_n_plus_one_in_a_command_raises(emissions):
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        call_command(SupplierNamesCommand(), stdout=StringIO())
    out = StringIO()
    call_command(SupplierNamesCommand(), "--fixed", stdout=out)
    assert out.getvalue().strip() == ", ".join(emission.supplier.name for emission in emissions)


def test_each_command_run_is_checked_on_its_own(emissions):
    # The same line once per run: two runs in one test are not an N+1.
    for _ in range(2):
        out = StringIO()
        call_command(SupplierNamesCommand(), "--first", stdout=out)
        assert out.getvalue().strip() == emissions[0].supplier.name


def test_django_s_call_command_shares_the_test_s_context(emissions):
    # The helper draws the boundary; Django's own call_command is not patched to.
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        for _ in range(2):
            management.call_command(SupplierNamesCommand(), "--first", stdout=StringIO())


def first_supplier_name() -> str:
    first, *_ = Emission.objects.order_by("pk")  # a list query, so not exempt as a single-row load
    return supplier_name(first)


def test_each_unit_of_work_is_checked_on_its_own(emissions):
    names = []
    for _ in range(2):
        with unit_of_work():
            names.append(first_supplier_name())
    assert names == [supplier_name(emissions[0])] * 2
    # The same calls without a unit of work each are one context, as a loop in code under test is:
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        [first_supplier_name() for _ in range(2)]


def test_an_n_plus_one_inside_a_unit_of_work_raises(emissions):
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"), unit_of_work():
        supplier_names(Emission.objects.order_by("pk"))


def test_a_service_called_per_row_raises_unless_each_call_is_a_unit():
    # organization_get_or_create runs one get() on one line of the service. Called from a loop (as
    # the test does here, or as code under test might) that get() is an N+1, and is reported:
    with pytest.raises(NPlusOneError, match=r"emissions\.Organization\.get\(\)"):
        [organization_get_or_create(slug=slug) for slug in ("initech", "hooli")]
    # Two independent calls, each a unit of work of its own, are not.
    created = []
    for slug in ("umbrella", "cyberdyne"):
        with unit_of_work():
            created.append(organization_get_or_create(slug=slug)[1])
    assert created == [True, True]


def test_factories_in_a_loop_are_not_checked():
    # Each SupplierFactory creates its organization through get_or_create: a get() per row, from
    # one line. Test data is not code under test, so that is not reported.
    suppliers = [SupplierFactory.create() for _ in range(3)]
    assert Organization.objects.filter(suppliers__in=suppliers).distinct().count() == 3


class UncheckedOrganizationFactory(DjangoModelFactory[Organization]):
    """OrganizationFactory's get-or-create, on factory_boy's base class instead of the suite's."""

    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"unchecked-{n}")
    name = factory.Sequence(lambda n: f"Unchecked {n}")


def test_only_the_suite_s_factories_are_exempt():
    # The exemption is ModelFactory's, not a patch of factory_boy: a factory on its base is checked.
    with pytest.raises(NPlusOneError, match=r"emissions\.Organization\.get\(\)"):
        [UncheckedOrganizationFactory.create() for _ in range(2)]


@pytest.mark.parametrize("client_class", [Client, APIClient])
def test_the_suite_s_clients_log_in_unchecked(client_class):
    user = UserFactory.create()
    client_class().force_login(user)
    assert client_class().login(username=user.username, password="pw-for-tests")


def test_django_s_client_login_is_checked():
    # Logging in reads the new session twice from one call: the reason the suite's clients exist.
    user = UserFactory.create()
    with pytest.raises(NPlusOneError, match=r"sessions\.Session\.get\(\)"):
        django.test.Client().force_login(user)


def test_the_client_fixtures_are_the_suite_s(client, admin_client, admin_user):
    assert type(client) is Client
    assert type(admin_client) is Client
    assert admin_client.session["_auth_user_id"] == str(admin_user.pk)
