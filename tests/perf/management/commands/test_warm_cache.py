"""``manage.py warm_cache``: after it, a client's first read of every warmed item costs no database query."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_redis import get_redis_connection

from emissions.models import SUMMARY_KEYS, EmissionFactor, Organization
from perf.cache import STATS_KEY
from tests.conftest import MemberAPIClient
from tests.factories import EmissionFactory, ExchangeRateFactory, SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

SUMMARY = reverse("emission-summary")
# Every response warm_cache fills, as a client asks for it.
WARMED = [
    reverse("factor-list"),
    reverse("supplier-list"),
    reverse("emission-list"),
    reverse("activity-list"),
    *(f"{SUMMARY}?group_by={key}" for key in SUMMARY_KEYS),
]
JSON = {"HTTP_ACCEPT": "application/json"}


def warm_cache(*args: str, stderr: StringIO | None = None) -> str:
    out = StringIO()
    call_command("warm_cache", "--host", "testserver", *args, stdout=out, stderr=stderr or StringIO())
    return out.getvalue()


def report_rows(output: str) -> dict[str, dict[str, int]]:
    """The per-kind rows of the report: lookups, hit, L1, L2, filled, computes."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^(factors|suppliers|summaries)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if match:
            names = ("lookups", "hit", "l1", "l2", "filled", "computes")
            rows[match[1]] = dict(zip(names, map(int, match.groups()[1:]), strict=True))
    return rows


@pytest.fixture
def data(org: Organization, steel_factor: EmissionFactor, electricity_factor: EmissionFactor) -> None:
    """Two emissions (one with a supplier) on published factors, and a year of exchange rates."""
    supplier = SupplierFactory.create(organization=org, name="Acme Steel")
    EmissionFactory.create(
        organization=org, factor=steel_factor, activity__supplier=supplier, activity__activity=steel_factor.activity
    )
    EmissionFactory.create(
        organization=org,
        factor=electricity_factor,
        activity__supplier=None,
        activity__category=3,
        activity__activity=electricity_factor.activity,
    )
    ExchangeRateFactory.create(currency="EUR", year=2022)


def authenticate(api: MemberAPIClient) -> None:
    """Cache the client's token with a request that fills nothing else (a summary refused with 400)."""
    assert api.get(SUMMARY, {"group_by": "nothing"}).status_code == 400


@pytest.mark.parametrize("url", WARMED)
def test_after_warming_the_first_read_costs_no_query(api, org, data, url, django_assert_num_queries, cold_cache):
    warm_cache("--org", org.slug)
    authenticate(api)
    with django_assert_num_queries(0):
        warmed = api.get(url, **JSON)
    assert warmed.status_code == 200
    # What was warmed is what the view answers uncached.
    cold_cache()
    assert warmed.json() == api.get(url, **JSON).json()


@pytest.mark.parametrize("url", [WARMED[0], WARMED[-1]])
def test_without_warming_the_same_read_queries(api, org, data, url):
    authenticate(api)
    with CaptureQueriesContext(connection) as queries:
        assert api.get(url, **JSON).status_code == 200
    assert len(queries) >= 1  # the control: the test above measures warming, not an always-cached view


def test_other_hosts_and_schemes_are_other_keys(api, org, data):
    warm_cache("--org", org.slug, "--scheme", "https")
    authenticate(api)
    url = f"{SUMMARY}?group_by=category"
    with CaptureQueriesContext(connection) as queries:
        assert api.get(url, secure=True, **JSON).status_code == 200
    assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        assert api.get(url, **JSON).status_code == 200  # http: not what was warmed
    assert len(queries) >= 1


def test_report_lists_fills_then_hits(org, data):
    first = report_rows(warm_cache("--org", org.slug))
    assert set(first) == {"factors", "suppliers", "summaries"}
    for kind, row in first.items():
        assert row["lookups"] > 0, kind
        assert row["filled"] == row["lookups"] and row["hit"] == 0, kind
        assert row["computes"] > 0, kind
    second = report_rows(warm_cache("--org", org.slug))
    for kind, row in second.items():
        assert row["lookups"] == first[kind]["lookups"], kind
        assert row["hit"] == row["lookups"] == row["l1"] + row["l2"], kind
        assert row["filled"] == 0 and row["computes"] == 0, kind


def test_report_shows_cache_size_and_flushes_the_counters(org, data):
    output = warm_cache("--org", org.slug)
    assert re.search(r"^Warmed 1 organization\(s\) \(acme\) as http://testserver", output, re.M)
    l1_entries = re.search(r"^L1 entries \(this process\): (\d+)$", output, re.M)
    assert l1_entries and int(l1_entries[1]) > 0
    assert re.search(r"^Redis: used_memory \S+, \d+ keys", output, re.M)
    counters = get_redis_connection("default").hgetall(STATS_KEY)
    assert int(counters[b"l2|emissions|store"]) >= len(SUMMARY_KEYS) + 2


def test_default_is_every_organization_with_activities(org, other_org, data):
    output = warm_cache()
    assert "Warmed 1 organization(s) (acme)" in output  # globex has no activity record


def test_nothing_to_warm(org):
    assert "nothing to warm" in warm_cache()


def test_nothing_to_warm_with_the_cache_off(org, data, settings):
    settings.CACHE_ENABLED = False
    assert "CACHE_ENABLED is off" in warm_cache()


def test_org_repeated_and_unknown(org, other_org, data):
    assert "Warmed 2 organization(s) (acme, globex)" in warm_cache("--org", org.slug, "--org", other_org.slug)
    with pytest.raises(CommandError, match="Unknown organization\\(s\\): nope, nada"):
        warm_cache("--org", org.slug, "--org", "nope", "--org", "nada")


def test_a_host_the_site_refuses(org, data):
    with pytest.raises(CommandError, match="not in ALLOWED_HOSTS"):
        warm_cache("--org", org.slug, "--host", "evil.example")


def test_progress_on_stderr_unless_disabled(org, data):
    stderr = StringIO()
    items = len(re.findall(r"^  acme: ", warm_cache("--org", org.slug, "--verbosity", "2"), re.M))
    warm_cache("--org", org.slug, stderr=stderr)
    assert items > 0 and f"{items}/{items}" in stderr.getvalue()  # one tick per item the verbose report lists
    for quiet in (["--no-progress"], ["--verbosity", "0"]):
        stderr = StringIO()
        warm_cache("--org", org.slug, *quiet, stderr=stderr)
        assert stderr.getvalue() == ""


def test_verbose_lists_every_item(org, data):
    output = warm_cache("--org", org.slug, "--verbosity", "2")
    assert "acme: factor resolution" in output
    for key in SUMMARY_KEYS:
        assert f"acme: GET {SUMMARY}?group_by={key}: 0 hit, 1 filled" in output


def test_a_failing_item_fails_the_command_after_warming_the_rest(api, org, data, monkeypatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("rates table locked")

    monkeypatch.setattr("emissions.calculation.OrganizationFactors.prime_sets", broken)
    out = StringIO()
    with pytest.raises(CommandError, match="1 item\\(s\\) could not be warmed"):
        call_command("warm_cache", "--host", "testserver", "--org", org.slug, stdout=out, stderr=StringIO())
    assert "factor resolution (activities, suppliers, reference sets): RuntimeError: rates table locked" in (
        out.getvalue()
    )
    authenticate(api)
    with CaptureQueriesContext(connection) as queries:
        assert api.get(f"{SUMMARY}?group_by=month", **JSON).status_code == 200
    assert len(queries) == 0
