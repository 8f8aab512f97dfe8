"""Suite-wide fixtures. The suite runs against real PostgreSQL and Redis and fails, not skips,
when either is missing: behaviour that needs PostgreSQL must be tested on PostgreSQL."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pkgutil
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import BaseCommand
from django.test.client import ClientMixin
from factory.django import DjangoModelFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from zeal import zeal_context, zeal_ignore

import emissions.services as services_package
from emissions.models import EmissionFactor, FactorDataset, Organization
from perf import cache as perf_cache
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, MembershipFactory, OrganizationFactory


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.postgresql":
        raise pytest.UsageError(f"The test suite needs PostgreSQL (DATABASE_URL); got {engine}.")
    if not settings.CACHES["default"]["BACKEND"].startswith("django_redis"):
        raise pytest.UsageError("The test suite needs Redis (REDIS_URL).")
    if not settings.FACTOR_DATA_DIR or not Path(settings.FACTOR_DATA_DIR).is_dir():
        # The importer and headline-number tests read the publishers' real files; say so up front
        # instead of failing dozens of tests one by one.
        raise pytest.UsageError(
            "The test suite needs the official emission-factor files: set FACTOR_DATA_DIR "
            "(README, 'Emission-factor data')."
        )
    zeal_on = "zeal" in settings.INSTALLED_APPS and "zeal.middleware.zeal_middleware" in settings.MIDDLEWARE
    if not zeal_on or not getattr(settings, "ZEAL_RAISE", False):
        # Without the app its patches are not installed and zeal_context() would detect nothing.
        raise pytest.UsageError("The suite needs django-zeal's app, middleware and ZEAL_RAISE = True (settings_test).")
    # Before collection, so test modules import the wrapped service functions.
    _service_calls_from_tests_are_units()


TESTS_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def unit_of_work_when_called_from_a_test(service: Callable[..., Any]) -> Callable[..., Any]:
    """``service``, run in its own zeal context when a test (or test fixture) calls it directly.

    A service call is one unit of work, like a request: a test that calls a single-row service
    three times has not found an N+1 because the service's one ``get()`` ran three times. Calls
    from anywhere else (a view, a command, another service) share their caller's context, so a
    service called per row from a loop is still reported.
    """

    @functools.wraps(service)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        caller = os.path.abspath(sys._getframe(1).f_code.co_filename)
        if not caller.startswith(TESTS_DIR):
            return service(*args, **kwargs)
        with zeal_context():
            return service(*args, **kwargs)

    return wrapper


def _service_calls_from_tests_are_units() -> None:
    """Wrap every public function of the ``emissions.services`` modules (the write API) in place."""
    for module_info in pkgutil.iter_modules(services_package.__path__):
        module = importlib.import_module(f"{services_package.__name__}.{module_info.name}")
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and value.__module__ == module.__name__ and not name.startswith("_"):
                setattr(module, name, unit_of_work_when_called_from_a_test(value))


@pytest.fixture(scope="session", autouse=True)
def _services_reachable(django_db_blocker: object) -> None:
    """Fail loudly when Redis is down (PostgreSQL failures surface in test DB creation)."""
    from django_redis import get_redis_connection

    try:
        get_redis_connection("default").ping()
    except Exception as exc:
        pytest.exit(f"Redis is unreachable at {settings.REDIS_URL}: {exc}", returncode=3)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Each test starts with both tiers empty: Redis (its test database) and this process's L1."""
    cache.clear()
    perf_cache.reset()


@pytest.fixture
def cold_cache() -> Callable[[], None]:
    """Call it to empty both cache tiers mid-test: the next request then takes the uncached path
    (query-count tests measure that path; the warm one is measured in tests/emissions/api/test_cache.py)."""

    def cold() -> None:
        cache.clear()
        perf_cache.reset()

    return cold


@pytest.fixture(scope="session", autouse=True)
def _n_plus_one_scopes() -> Iterator[None]:
    """Give each management command its own zeal context and keep test-data builders out of detection.

    (Service calls from tests get theirs from ``_service_calls_from_tests_are_units``.)

    A command, like a request (the zeal middleware), is one unit of work: the same line running once
    in each of two ``call_command`` runs of one test is not an N+1. Factories are not code under test:
    ``OrganizationFactory`` (``django_get_or_create``) called in a loop would otherwise read as a
    ``get()`` N+1 at the test's line. Nor is the test client's login, which loads the new session
    twice from one call (``Client.session`` is read twice in ``_login``).
    """
    original_execute = BaseCommand.execute
    original_create = DjangoModelFactory._create.__func__  # type: ignore[attr-defined]

    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        with zeal_context():
            return original_execute(self, *args, **options)

    def create(cls: type[DjangoModelFactory[Any]], model_class: type[Any], *args: Any, **kwargs: Any) -> Any:
        with zeal_ignore():
            return original_create(cls, model_class, *args, **kwargs)

    def harness(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def unchecked(*args: Any, **kwargs: Any) -> Any:
            with zeal_ignore():
                return method(*args, **kwargs)

        return unchecked

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseCommand, "execute", execute)
        patch.setattr(DjangoModelFactory, "_create", classmethod(create))
        patch.setattr(ClientMixin, "login", harness(ClientMixin.login))
        patch.setattr(ClientMixin, "force_login", harness(ClientMixin.force_login))
        yield


@pytest.fixture(autouse=True)
def _no_n_plus_one() -> Iterator[None]:
    """Every test runs inside a zeal context: an N+1 in it (service, queryset, test code) raises
    ``zeal.NPlusOneError``. Requests, commands and services called by the test get their own nested
    contexts (above)."""
    with zeal_context():
        yield


class MemberAPIClient(APIClient):
    """An ``APIClient`` that remembers the member it authenticates as, for tests that need ``api.user``."""

    user: User


@pytest.fixture
def org() -> Organization:
    return OrganizationFactory.create(slug="acme", name="Acme Corp")


@pytest.fixture
def other_org() -> Organization:
    return OrganizationFactory.create(slug="globex", name="Globex")


def _client_for(organization: Organization) -> MemberAPIClient:
    membership = MembershipFactory.create(organization=organization)
    token = Token.objects.create(user=membership.user)  # a new user: no token yet
    client = MemberAPIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    client.user = membership.user
    return client


@pytest.fixture
def api(org: Organization) -> MemberAPIClient:
    """An API client authenticated as a member of ``org``."""
    return _client_for(org)


@pytest.fixture
def other_api(other_org: Organization) -> MemberAPIClient:
    """An API client authenticated as a member of ``other_org``."""
    return _client_for(other_org)


# Factors at their published values, shared by the calculator and API suites so that both check the same numbers.


@pytest.fixture
def epa_2022() -> FactorDataset:
    return FactorDatasetFactory.create(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="v1.3.0", basis_year=2022)


@pytest.fixture
def desnz_2025() -> FactorDataset:
    return FactorDatasetFactory.create(source=FactorDataset.Source.DESNZ, version="2025", basis_year=2025)


@pytest.fixture
def steel_factor(epa_2022: FactorDataset) -> EmissionFactor:
    """EPA Supply Chain v1.3.0, NAICS 331110 (iron and steel mills), with margins: 0.787 kg CO2e per 2022 USD."""
    return EmissionFactorFactory.create(
        dataset=epa_2022,
        activity="naics:331110",
        name="Iron and steel mills and ferroalloy manufacturing",
        region="US",
        year=2022,
        unit="USD",
        unit_label="kg CO2e/2022 USD, purchaser price",
        currency="USD",
        co2e_per_unit=Decimal("0.787"),
    )


@pytest.fixture
def electricity_factor(desnz_2025: FactorDataset) -> EmissionFactor:
    """DESNZ 2025, UK electricity generated: 0.17700 kg CO2e per kWh."""
    return EmissionFactorFactory.create(
        dataset=desnz_2025,
        activity="desnz:7_400_4000_5",
        name="Electricity generated, UK",
        region="GB",
        year=2025,
        unit="kWh",
        unit_label="kWh",
        co2e_per_unit=Decimal("0.17700"),
        gases={"CO2": "0.17489", "CH4": "0.00089", "N2O": "0.00122"},
    )


@pytest.fixture
def diesel_factor(desnz_2025: FactorDataset) -> EmissionFactor:
    """DESNZ 2025, diesel (average biofuel blend): 2.57082 kg CO2e per litre."""
    return EmissionFactorFactory.create(
        dataset=desnz_2025,
        activity="desnz:1_101_1011_8",
        name="Diesel (average biofuel blend)",
        region="GB",
        year=2025,
        unit="L",
        unit_label="litres",
        co2e_per_unit=Decimal("2.57082"),
    )
