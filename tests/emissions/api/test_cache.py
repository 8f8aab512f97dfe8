"""The API through the two-level cache: warm reads and 304s cost no query, writes are seen at once by
their worker and within the L1 TTL by the others, Redis down changes nothing a client sees, and no
organization ever receives another's cached body."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings

from emissions.models import SUMMARY_KEYS
from perf import cache as perf_cache
from perf.cache import TieredCache
from tests.emissions.api.payloads import activity_input, electricity_input
from tests.factories import EmissionFactory, SupplierFactory
from tests.perf.test_cache import UNREACHABLE, Clock

pytestmark = pytest.mark.django_db

LIST = "/api/v1/emissions/"
ACTIVITIES = "/api/v1/activities/"
SUMMARY = "/api/v1/emissions/summary/"


def emission(org, kg: str, **kwargs: Any):
    return EmissionFactory(organization=org, co2e_kg=Decimal(kg), activity__period_start=dt.date(2025, 1, 1), **kwargs)


@pytest.fixture
def data(org):
    return [emission(org, "10"), emission(org, "20")]


# -- no database query when warm ------------------------------------------------------------------


@pytest.mark.parametrize("group_by", SUMMARY_KEYS)
def test_a_warm_summary_runs_no_query(api, data, group_by, django_assert_num_queries) -> None:
    cold = api.get(SUMMARY, {"group_by": group_by})
    assert cold.status_code == 200
    with django_assert_num_queries(0):
        warm = api.get(SUMMARY, {"group_by": group_by})
    assert warm.status_code == 200
    assert warm.content == cold.content


@pytest.mark.parametrize("url", [LIST, ACTIVITIES, f"{LIST}?category=1", "/api/v1/suppliers/", "/api/v1/factors/"])
def test_a_warm_first_page_runs_no_query(api, data, url, django_assert_num_queries) -> None:
    cold = api.get(url)
    assert cold.status_code == 200
    with django_assert_num_queries(0):
        warm = api.get(url)
    assert warm.content == cold.content


def test_a_warm_list_from_redis_alone_runs_no_query(api, data, django_assert_num_queries) -> None:
    cold = api.get(LIST)
    perf_cache.tiered().clear_local()  # another worker, or this one after its L1 expired: only Redis is warm
    with django_assert_num_queries(0):
        warm = api.get(LIST)
    assert warm.content == cold.content


@pytest.mark.parametrize("url", [f"{SUMMARY}?group_by=category", LIST, f"{LIST}?limit=1"])
def test_a_304_runs_no_query(api, data, url, django_assert_num_queries) -> None:
    etag = api.get(url)["ETag"]
    perf_cache.tiered().clear_local()  # the 304 does not need the body to be cached anywhere
    with django_assert_num_queries(0):
        response = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304


# -- writes ---------------------------------------------------------------------------------------


def test_after_a_write_the_same_worker_answers_with_it_at_once(
    api, org, electricity_factor, django_capture_on_commit_callbacks
) -> None:
    before = api.get(SUMMARY, {"group_by": "category"}).json()
    etag = api.get(LIST)["ETag"]
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(ACTIVITIES, activity_input(), format="json").status_code == 201
    after = api.get(SUMMARY, {"group_by": "category"}).json()
    assert after["count"] == before["count"] + 1
    assert Decimal(after["total_co2e_kg"]) == Decimal(before["total_co2e_kg"]) + Decimal("177")
    assert api.get(LIST, HTTP_IF_NONE_MATCH=etag).status_code == 200


@pytest.fixture
def two_workers() -> Iterator[tuple[TieredCache, TieredCache, Clock]]:
    """Workers A and B: separate L1s (B's clock moved by the test), one Redis. ``use(w)`` routes requests."""
    a = perf_cache.cache_from_settings()
    b_clock = Clock()
    b = TieredCache(l1_ttl=a.l1_ttl, clock=b_clock)
    yield a, b, b_clock
    perf_cache.reset()


def use(worker: TieredCache) -> None:
    perf_cache._instance = worker


def test_another_worker_answers_with_a_write_within_the_l1_ttl(
    api, org, electricity_factor, two_workers, django_capture_on_commit_callbacks
) -> None:
    a, b, b_clock = two_workers
    use(b)
    before = api.get(SUMMARY, {"group_by": "category"}).json()["count"]
    use(a)
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(ACTIVITIES, activity_input(), format="json").status_code == 201
    assert api.get(SUMMARY, {"group_by": "category"}).json()["count"] == before + 1  # A: at once
    use(b)
    # B may answer from its L1 until the TTL is over (the documented bound), and not a moment after.
    b_clock.advance(b.l1_ttl - 0.1)
    assert api.get(SUMMARY, {"group_by": "category"}).json()["count"] == before
    b_clock.advance(0.2)
    assert api.get(SUMMARY, {"group_by": "category"}).json()["count"] == before + 1


def test_every_write_service_is_seen(api, org, electricity_factor, django_capture_on_commit_callbacks) -> None:
    suppliers = api.get("/api/v1/suppliers/").json()["results"]
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post("/api/v1/suppliers/", {"name": "Acme", "external_id": "ACME"}, format="json").json()
    assert len(api.get("/api/v1/suppliers/").json()["results"]) == len(suppliers) + 1

    with django_capture_on_commit_callbacks(execute=True):
        api.post(ACTIVITIES, activity_input(supplier=created["id"]), format="json")
    labels = {g["label"] for g in api.get(SUMMARY, {"group_by": "supplier"}).json()["groups"]}
    assert labels == {"Acme"}
    with django_capture_on_commit_callbacks(execute=True):
        api.patch(f"/api/v1/suppliers/{created['id']}/", {"name": "Acme Steel"}, format="json")
    labels = {g["label"] for g in api.get(SUMMARY, {"group_by": "supplier"}).json()["groups"]}
    assert labels == {"Acme Steel"}  # a supplier change reaches the cached summaries that name it

    factors_url = f"/api/v1/suppliers/{created['id']}/factors/"
    assert api.get(factors_url).json()["results"] == []
    body = {"name": "Steel", "unit": "kg", "co2e_per_unit": "1.5", "year": 2025}
    with django_capture_on_commit_callbacks(execute=True):
        assert api.post(factors_url, body, format="json").status_code == 201, body
    assert len(api.get(factors_url).json()["results"]) == 1


# -- Redis unreachable ----------------------------------------------------------------------------


def exercise_every_endpoint(api, org) -> list[tuple[str, str, int]]:
    """Every API v1 endpoint, reads and writes, with the answers a client relies on checked; returns the calls."""
    calls: list[tuple[str, str, int]] = []

    def call(method: str, url: str, expected: int, **kwargs: Any) -> Any:
        response = getattr(api, method)(url, format="json", **kwargs) if method != "get" else api.get(url)
        assert response.status_code == expected, (method, url, response.status_code, response.content[:300])
        calls.append((method, url, response.status_code))
        return response

    factors = call("get", "/api/v1/factors/?search=electricity", 200).json()["results"]
    call("get", f"/api/v1/factors/{factors[0]['id']}/", 200)
    supplier = call("post", "/api/v1/suppliers/", 201, data={"name": "Acme", "external_id": "ACME"}).json()
    call("get", "/api/v1/suppliers/", 200)
    call("patch", f"/api/v1/suppliers/{supplier['id']}/", 200, data={"name": "Acme Steel"})
    assert call("get", f"/api/v1/suppliers/{supplier['id']}/", 200).json()["name"] == "Acme Steel"
    factor_body = {"name": "Steel", "unit": "kg", "co2e_per_unit": "1.5", "year": 2025}
    own = call("post", f"/api/v1/suppliers/{supplier['id']}/factors/", 201, data=factor_body).json()
    assert len(call("get", f"/api/v1/suppliers/{supplier['id']}/factors/", 200).json()["results"]) == 1
    call("get", f"/api/v1/suppliers/{supplier['id']}/factors/{own['id']}/", 200)
    assert call("post", "/api/v1/calculate/", 200, data=electricity_input()).json()["co2e_kg"] == "177.000000"
    batch = {"items": [electricity_input(), electricity_input(amount="2")]}
    results = call("post", "/api/v1/calculate/batch/", 200, data=batch).json()["results"]
    assert [r["co2e_kg"] for r in results] == ["177.000000", "354.000000"]
    summary_before = call("get", f"{SUMMARY}?group_by=category", 200).json()
    created = call("post", ACTIVITIES, 201, data=[activity_input(), activity_input(amount="2")]).json()
    summary = call("get", f"{SUMMARY}?group_by=category", 200).json()
    assert summary["count"] == summary_before["count"] + 2  # the write is seen even with no shared cache
    for key in SUMMARY_KEYS:
        call("get", f"{SUMMARY}?group_by={key}", 200)
    listed = {row["id"] for row in call("get", ACTIVITIES, 200).json()["results"]}
    assert {row["id"] for row in created} <= listed
    call("get", f"{ACTIVITIES}{created[0]['id']}/", 200)
    emissions = call("get", LIST, 200).json()["results"]
    call("get", f"{LIST}{emissions[0]['id']}/", 200)
    export = api.get("/api/v1/emissions/export.csv")
    assert export.status_code == 200
    assert len(b"".join(export.streaming_content).splitlines()) == len(emissions) + 1
    call("delete", f"/api/v1/suppliers/{supplier['id']}/factors/{own['id']}/", 204)
    other = call("post", "/api/v1/suppliers/", 201, data={"name": "Gone", "external_id": "GONE"}).json()
    call("delete", f"/api/v1/suppliers/{other['id']}/", 204)
    call("get", f"/api/v1/suppliers/{other['id']}/", 404)
    return calls


@override_settings(CACHES=UNREACHABLE)
def test_with_redis_unreachable_every_endpoint_answers_correctly(
    api, org, electricity_factor, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        calls = exercise_every_endpoint(api, org)
    assert all(status < 500 for _, _, status in calls)
    assert perf_cache.tiered().is_down()
    errors = sum(
        n for (tier, _, event), n in perf_cache.tiered().stats.counts.items() if (tier, event) == ("l2", "error")
    )
    assert errors == 1  # the circuit opened once and stayed open: one timeout paid, not one per call


def test_with_redis_stalled_every_endpoint_answers_correctly(
    api, org, electricity_factor, django_capture_on_commit_callbacks, stalled_redis
) -> None:
    with override_settings(CACHES=stalled_redis), django_capture_on_commit_callbacks(execute=True):
        calls = exercise_every_endpoint(api, org)
    assert all(status < 500 for _, _, status in calls)


@pytest.fixture
def stalled_redis() -> Iterator[dict[str, Any]]:
    """A TCP server that accepts connections and never answers: Redis hung, not gone (read timeouts)."""
    import socket

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]
    caches = {"default": {**UNREACHABLE["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}}
    yield caches
    server.close()


def test_redis_coming_back_is_used_again(api, data) -> None:
    with override_settings(CACHES=UNREACHABLE):
        assert api.get(LIST).status_code == 200
        assert perf_cache.tiered().is_down()
    # New settings, new process cache: as a worker whose retry delay has passed.
    assert api.get(LIST).status_code == 200
    assert not perf_cache.tiered().is_down()
    assert perf_cache.tiered().stats.counts[("l2", "emissions", "store")] >= 1


# -- isolation ------------------------------------------------------------------------------------


def test_one_organization_never_receives_anothers_cached_body(api, other_api, org, other_org) -> None:
    emission(org, "10")
    emission(other_org, "99")
    emission(other_org, "1")
    mine = api.get(SUMMARY, {"group_by": "category"})
    theirs = other_api.get(SUMMARY, {"group_by": "category"})
    assert mine.json()["total_co2e_kg"] == "10.000000"
    assert theirs.json()["total_co2e_kg"] == "100.000000"
    # Warm for both: still each its own.
    assert api.get(SUMMARY, {"group_by": "category"}).content == mine.content
    assert other_api.get(SUMMARY, {"group_by": "category"}).content == theirs.content
    assert {r["co2e_kg"] for r in other_api.get(LIST).json()["results"]} == {"99.000000", "1.000000"}
    assert {r["co2e_kg"] for r in api.get(LIST).json()["results"]} == {"10.000000"}
    # Another organization's ETag is not a match: the body is sent, and it is the caller's own.
    response = other_api.get(SUMMARY, {"group_by": "category"}, HTTP_IF_NONE_MATCH=mine["ETag"])
    assert response.status_code == 200
    assert response.json()["total_co2e_kg"] == "100.000000"


def test_one_organizations_write_leaves_anothers_cache_warm(
    api, other_api, org, other_org, django_assert_num_queries
) -> None:
    emission(other_org, "5")
    other_api.get(LIST)
    SupplierFactory(organization=org)  # a write in org's namespaces only
    with django_assert_num_queries(0):
        assert other_api.get(LIST).status_code == 200
