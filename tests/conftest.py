"""Suite-wide fixtures. The suite runs against real PostgreSQL and Redis and fails, not skips,
when either is missing: behaviour that needs PostgreSQL must be tested on PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.models import EmissionFactor, FactorDataset, Organization
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, MembershipFactory, OrganizationFactory


def pytest_configure(config: pytest.Config) -> None:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine != "django.db.backends.postgresql":
        raise pytest.UsageError(f"The test suite needs PostgreSQL (DATABASE_URL); got {engine}.")
    if not settings.CACHES["default"]["BACKEND"].startswith("django_redis"):
        raise pytest.UsageError("The test suite needs Redis (REDIS_URL).")


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
    cache.clear()


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
    token, _ = Token.objects.get_or_create(user=membership.user)
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
