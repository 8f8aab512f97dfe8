"""Suite-wide fixtures.

**Services.** The suite runs against real PostgreSQL and Redis and the publishers' factor files, and
fails, never skips, when one is missing: behaviour that needs PostgreSQL must be tested on PostgreSQL.
The settings are checked at start-up (``pytest_configure``); the services and files themselves are
checked once, by ``_services_reachable``, just before the first test that needs them, which stops
the run with a message naming what is missing.

A test needs the services unless it is *pure*: under ``tests/calculator/`` (the calculation core)
and using no database, that is with no ``django_db`` marker, no database fixture (``db``,
``transactional_db``, ``live_server``, ..., requested directly or through another fixture) and not a
Django ``TestCase`` with databases. The rule is applied at collection as the ``needs_services``
marker (``pytest -m "not needs_services"`` runs the pure tests alone). A pure test gets neither the
service check nor the cache flush, so it runs with PostgreSQL and Redis stopped; it must not touch
the cache either. Every other test, the calculator's database tests included, gets both.

**N+1 queries.** Every test runs inside a django-zeal context, so an N+1 in the test, in the code it
calls, or in a request (which the zeal middleware gives a context of its own) raises
``zeal.NPlusOneError``. Nothing in Django, factory_boy or the app is patched to draw further
boundaries; the suite draws them where they apply: ``tests.helpers.call_command`` runs each command,
and ``tests.helpers.unit_of_work()`` a unit of work a test performs itself, in a context of its own;
the factories (``tests.factories.ModelFactory``) and the test clients' logins
(``tests.helpers.Client`` / ``APIClient``, also behind the ``client`` and ``admin_client`` fixtures)
are not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import SimpleTestCase
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token
from zeal import zeal_context

from emissions.models import EmissionFactor, FactorDataset, Organization
from emissions.rollups import rollup_differences
from perf import cache as perf_cache
from perf.throttle import counters as throttle_counters
from tests import published
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, MembershipFactory, OrganizationFactory
from tests.helpers import APIClient, Client, Clock
from tests.workers import Worker

SETUP_HELP = "README, 'Two commands on a fresh machine' and 'Emission-factor data'"


def pytest_configure(config: pytest.Config) -> None:
    """Check the settings, which needs no running service: a wrong one stops the run before collection."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine not in ("django.db.backends.postgresql", "perf.postgresql"):
        raise pytest.UsageError(f"The test suite needs PostgreSQL (DATABASE_URL); got {engine}.")
    if not settings.CACHES["default"]["BACKEND"].startswith("django_redis"):
        raise pytest.UsageError("The test suite needs Redis (REDIS_URL).")
    zeal_on = "zeal" in settings.INSTALLED_APPS and "zeal.middleware.zeal_middleware" in settings.MIDDLEWARE
    if not zeal_on or not getattr(settings, "ZEAL_RAISE", False):
        # Without the app its patches are not installed and zeal_context() would detect nothing.
        raise pytest.UsageError("The suite needs django-zeal's app, middleware and ZEAL_RAISE = True (settings_test).")
    config.addinivalue_line(
        "markers", "needs_services: set at collection on every test that is not pure (tests/conftest.py)"
    )
    config.addinivalue_line(
        "markers", "rollups_unchecked: the test leaves the rollups unequal to the emissions on purpose (_rollups_exact)"
    )


PURE_TESTS_DIR = Path(__file__).resolve().parent / "calculator"
# pytest-django's database fixtures, and django_db_setup, which each of them (and any fixture built on one) reaches.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
        "django_db_setup",
    }
)


def needs_services(item: pytest.Item) -> bool:
    """Whether ``item`` needs PostgreSQL, Redis and the factor files: the rule in the module docstring.

    ``item.fixturenames`` is the test's whole fixture closure, so a database fixture requested through
    another fixture counts.
    """
    if not item.path.resolve().is_relative_to(PURE_TESTS_DIR):
        return True
    if item.get_closest_marker("django_db") is not None:
        return True
    if DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    test_case = getattr(item, "cls", None)
    return test_case is not None and issubclass(test_case, SimpleTestCase) and bool(test_case.databases)


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker (-m)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need services, for ``-m`` (the fixtures below ask ``needs_services`` itself)."""
    for item in items:
        if needs_services(item):
            item.add_marker(pytest.mark.needs_services)


def _postgresql_problem() -> str | None:
    """Why PostgreSQL cannot be reached with the test settings, or None.

    Connects as Django would, to the ``postgres`` database where it creates the test database, with
    a short timeout (unless the settings give one) so that an unreachable host fails in seconds.
    """
    params = {"connect_timeout": 5, **connection.get_connection_params(), "dbname": "postgres"}
    try:
        with psycopg.connect(**params):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL (DATABASE_URL) is unreachable: {exc}"


def _redis_problem() -> str | None:
    """Why Redis cannot be reached, or None; bounded by the cache's own socket timeouts (settings)."""
    try:
        get_redis_connection("default").ping()
    except Exception as exc:  # any failure of the client library means the same: no usable Redis
        return f"Redis (REDIS_URL) is unreachable at {settings.REDIS_URL}: {exc}"
    return None


def _factor_data_problem() -> str | None:
    if not settings.FACTOR_DATA_DIR or not Path(settings.FACTOR_DATA_DIR).is_dir():
        # The importer and headline-number tests read the publishers' real files; say so once
        # instead of failing dozens of tests one by one.
        return f"The emission-factor files (FACTOR_DATA_DIR) are missing: {settings.FACTOR_DATA_DIR!r} is not a folder"
    return None


@pytest.fixture(scope="session")
def _services_reachable() -> None:
    """Stop the run, with a non-zero exit code, unless PostgreSQL, Redis and the factor files are there.

    Runs once, before the first test that needs services (``_clear_cache``, ``django_db_setup``).
    """
    problems = [problem for problem in (_postgresql_problem(), _redis_problem(), _factor_data_problem()) if problem]
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        pytest.exit(
            f"The test suite needs PostgreSQL, Redis and the emission-factor files ({SETUP_HELP}):\n{listed}\n"
            "Only the pure tests under tests/calculator/ run without them (tests/conftest.py).",
            returncode=3,
        )


@pytest.fixture(scope="session")
def django_db_setup(_services_reachable: None, django_db_setup: None) -> None:
    """pytest-django's test-database setup, after the service check.

    Without it an unreachable PostgreSQL would error each database test on its own (the check runs
    first: fixture arguments are set up in order).
    """


@pytest.fixture(autouse=True)
def _clear_cache(request: pytest.FixtureRequest) -> None:
    """Each test that needs services starts with both cache tiers empty: Redis (its test database)
    and this process's L1, and so with no request counted by the throttles. Pure tests touch neither."""
    if not needs_services(request.node):
        return
    request.getfixturevalue("_services_reachable")
    cache.clear()
    perf_cache.reset()
    throttle_counters.reset()  # the leases this process took of the counts just cleared


# 30 s into a minute window (08:00:30 UTC): a test's requests never cross the end of a minute, an hour or a day.
THROTTLE_NOW = 1_800_000_030.0


@pytest.fixture
def throttle_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The throttles' clock (``perf.throttle.counters.clock``) fixed at ``THROTTLE_NOW``: counts made against a
    small rate are not reset by a window that ends mid-test, whenever the test runs, and ``Retry-After`` is known
    (30 s for a ``/min`` rate). Move ``.now`` to reach another window."""
    clock = Clock(THROTTLE_NOW)
    monkeypatch.setattr(throttle_counters, "clock", clock)
    return clock


@pytest.fixture
def cold_cache() -> Callable[[], None]:
    """Call it to empty both cache tiers mid-test: the next request then takes the uncached path
    (query-count tests measure that path; the warm one is measured in tests/emissions/api/test_cache.py)."""

    def cold() -> None:
        cache.clear()
        perf_cache.reset()

    return cold


# The fixtures that give a test the database, the marker's first (pytest-django sets it up for django_db).
_DB_ACCESS_FIXTURES = ("_django_db_helper", "transactional_db", "db")


@pytest.fixture(autouse=True)
def _rollups_exact(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the database, the rollup tables equal the emissions (``check_rollups``): every
    write path the suite runs (services, COPY, imports, recalculations, edits, deletes, the admin, the API) is
    also a test of the rollup triggers. A test that breaks them on purpose says so with the marker
    ``rollups_unchecked``; a test whose transaction is already doomed is not checked (nothing of it commits)."""
    uses_db = request.node.get_closest_marker("django_db") is not None or any(
        name in request.fixturenames for name in _DB_ACCESS_FIXTURES[1:]
    )
    if not uses_db or request.node.get_closest_marker("rollups_unchecked") is not None:
        yield
        return
    # Requested here, the database fixture is torn down after this one: the check runs inside the test's
    # transaction (or before the flush of a transactional test).
    for name in _DB_ACCESS_FIXTURES:
        if name == "_django_db_helper" and request.node.get_closest_marker("django_db") is None:
            continue
        if name != "_django_db_helper" and name not in request.fixturenames:
            continue
        request.getfixturevalue(name)
        break
    yield
    if connection.vendor != "postgresql" or (connection.in_atomic_block and connection.needs_rollback):
        return
    count, differences = rollup_differences(limit=5)
    assert count == 0, f"{count} rollup group(s) differ from the emissions after the test: {differences}"


@pytest.fixture(autouse=True)
def _no_n_plus_one() -> Iterator[None]:
    """Every test runs inside a zeal context: an N+1 in it (service, queryset, test code) raises
    ``zeal.NPlusOneError``. Requests, ``tests.helpers.call_command`` and ``unit_of_work()`` get their
    own nested contexts."""
    with zeal_context():
        yield


@pytest.fixture
def client() -> Client:
    """pytest-django's ``client``, as the suite's ``Client`` (its logins are not checked for N+1)."""
    return Client()


@pytest.fixture
def admin_client(db: None, admin_user: User) -> Client:
    """pytest-django's ``admin_client``, as the suite's ``Client``, logged in as ``admin_user``."""
    client = Client()
    client.force_login(admin_user)
    return client


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


# Factors at their published values (tests/published.py, which the pure calculator suite uses too).


@pytest.fixture
def epa_2022() -> FactorDataset:
    return FactorDatasetFactory.create(**published.EPA_SUPPLY_CHAIN_2022)


@pytest.fixture
def desnz_2025() -> FactorDataset:
    return FactorDatasetFactory.create(**published.DESNZ_2025)


@pytest.fixture
def steel_factor(epa_2022: FactorDataset) -> EmissionFactor:
    return EmissionFactorFactory.create(dataset=epa_2022, **published.STEEL)


@pytest.fixture
def electricity_factor(desnz_2025: FactorDataset) -> EmissionFactor:
    return EmissionFactorFactory.create(dataset=desnz_2025, **published.ELECTRICITY)


@pytest.fixture
def diesel_factor(desnz_2025: FactorDataset) -> EmissionFactor:
    return EmissionFactorFactory.create(dataset=desnz_2025, **published.DIESEL)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[Worker]:
    """One worker (two pool processes) for the session, on the test database and this run's queue: the job tests and
    the browser tests' uploads. Tests may kill its pool processes: its main process replaces them, as it would in
    production."""
    worker = Worker(concurrency=2).start()
    yield worker
    worker.stop()
