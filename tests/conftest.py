"""Suite-wide fixtures. The suite runs against real PostgreSQL and Redis and fails, not skips,
when either is missing: behaviour that needs PostgreSQL must be tested on PostgreSQL."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.models import Organization
from tests.factories import MembershipFactory, OrganizationFactory


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
