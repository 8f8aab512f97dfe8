"""The suite's N+1 guard (django-zeal, set up in vcci/settings_test.py and tests/conftest.py) is live.

Each test builds an N+1 on purpose and expects ``NPlusOneError``, then runs the fixed form, which
must not raise. Requests, management commands and service calls made by a test each get their own
detection context, so the same line running once per request, command or call is not reported;
test-data factories and the test client's login are not checked at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from io import StringIO
from typing import Any

import pytest
from django.core.management import BaseCommand, call_command
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import path
from zeal import NPlusOneError

from emissions.models import Emission, Organization, Supplier
from emissions.services.organizations import organization_get_or_create
from tests.conftest import unit_of_work_when_called_from_a_test
from tests.factories import EmissionFactory, SupplierFactory

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
        Client().get("/all/")


@pytest.mark.urls(__name__)
def test_each_request_is_checked_on_its_own(emissions):
    # Without the zeal middleware both requests would count against the test's context and raise.
    client = Client()
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


def first_supplier_name() -> str:
    first, *_ = Emission.objects.order_by("pk")  # a list query, so not exempt as a single-row load
    return supplier_name(first)


def test_a_service_called_from_a_test_is_checked_on_its_own(emissions):
    unit = unit_of_work_when_called_from_a_test(first_supplier_name)
    assert [unit(), unit()] == [supplier_name(emissions[0])] * 2
    # The same function called directly from the test, without its own context each time:
    with pytest.raises(NPlusOneError, match=r"emissions\.Emission\.supplier"):
        [first_supplier_name() for _ in range(2)]


def test_real_services_are_units_of_work():
    # Each call runs one get_or_create (a get()) on the same line; two calls from a test are fine.
    created = [organization_get_or_create(slug=slug)[1] for slug in ("initech", "hooli")]
    assert created == [True, True]


def test_factories_in_a_loop_are_not_checked():
    # Each SupplierFactory creates its organization through get_or_create: a get() per row, from
    # one line. Test data is not code under test, so that is not reported.
    suppliers = [SupplierFactory.create() for _ in range(3)]
    assert Organization.objects.filter(suppliers__in=suppliers).distinct().count() == 3
