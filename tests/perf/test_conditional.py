"""perf.conditional: ETag / Last-Modified / 304, Cache-Control and Vary, on the real API views."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import override_settings
from django.utils.http import http_date
from django_redis import get_redis_connection

from emissions.cache import emission_namespaces
from perf.cache import Namespace, Version, tiered
from perf.conditional import _last_modified
from tests.factories import EmissionFactory

pytestmark = pytest.mark.django_db

SUMMARY = "/api/v1/emissions/summary/?group_by=category"
LIST = "/api/v1/emissions/"


@pytest.fixture
def data(org):
    return EmissionFactory.create_batch(3, organization=org, activity__period_start=dt.date(2025, 1, 1))


def test_a_cacheable_get_carries_etag_cache_control_and_vary(api, data) -> None:
    response = api.get(SUMMARY)
    assert response.status_code == 200
    assert response["ETag"].startswith('"') and response["ETag"].endswith('"')
    assert set(response["Cache-Control"].split(", ")) == {"private", "max-age=0"}
    vary = {v.strip() for v in response["Vary"].split(",")}
    assert {"Authorization", "Accept"} <= vary


@override_settings(CACHE_MAX_AGE={"factors": 300, "suppliers": 0, "emissions": 0})
def test_max_age_is_per_resource(api, electricity_factor) -> None:
    assert "max-age=300" in api.get("/api/v1/factors/")["Cache-Control"]
    assert "max-age=0" in api.get("/api/v1/suppliers/")["Cache-Control"]


def test_if_none_match_answers_304_without_a_body(api, data) -> None:
    etag = api.get(SUMMARY)["ETag"]
    response = api.get(SUMMARY, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == etag
    assert "private" in response["Cache-Control"]


def test_a_stale_etag_gets_the_new_body(api, org, data) -> None:
    etag = api.get(SUMMARY)["ETag"]
    EmissionFactory(organization=org)
    response = api.get(SUMMARY, HTTP_IF_NONE_MATCH=etag)
    assert response.status_code == 200
    assert response["ETag"] != etag
    assert response.json()["count"] == 4


def test_the_etag_depends_on_the_query_the_path_and_the_media_type(api, data) -> None:
    etags = {
        api.get(SUMMARY)["ETag"],
        api.get("/api/v1/emissions/summary/?group_by=month")["ETag"],
        api.get(LIST)["ETag"],
        api.get(LIST, {"limit": 1})["ETag"],
        api.get(LIST, HTTP_HOST="127.0.0.1")["ETag"],  # absolute next links name the host
    }
    assert len(etags) == 5
    # The same query in another order is the same request.
    assert api.get(LIST + "?limit=1&category=1")["ETag"] == api.get(LIST + "?category=1&limit=1")["ETag"]


def test_every_page_answers_conditional_gets_but_only_first_pages_keep_bodies(api, org, data) -> None:
    first = api.get(LIST, {"limit": 1}).json()
    after = first["next"].split("?", 1)[1]
    page2 = api.get(f"{LIST}?{after}")
    assert page2.status_code == 200
    assert api.get(f"{LIST}?{after}", HTTP_IF_NONE_MATCH=page2["ETag"]).status_code == 304
    stored = tiered().stats.counts[("l2", "emissions", "store")]
    api.get(f"{LIST}?{after}")
    assert tiered().stats.counts[("l2", "emissions", "store")] == stored  # a deep page is not stored


def test_last_modified_waits_for_its_second_and_the_l1_ttl_to_pass() -> None:
    versions = (Version("5", 1000.3), Version("7", 990.0))
    # Another write in second 1000, or a worker still on the older version for 2 s, could share the date.
    assert _last_modified(versions, 2.0, now=1002.99) is None
    assert _last_modified(versions, 2.0, now=1003.0) == 1000


def age_versions(api, seconds: float) -> float:
    """Pretend the organization's namespaces last changed ``seconds`` ago (as after a quiet period)."""
    when = time.time() - seconds
    redis = get_redis_connection("default")
    namespaces = api_namespaces(api)
    tiered().versions(namespaces)
    for ns in namespaces:
        redis.set(f"vcci:c:t:{ns.key}", repr(when))
    tiered().clear_local()
    return when


def test_last_modified_and_if_modified_since(api, data) -> None:
    assert "Last-Modified" not in api.get(SUMMARY)  # just written: not yet safe to date
    when = age_versions(api, 100)
    response = api.get(SUMMARY)
    assert response["Last-Modified"] == http_date(int(when))
    assert api.get(SUMMARY, HTTP_IF_MODIFIED_SINCE=response["Last-Modified"]).status_code == 304
    assert api.get(SUMMARY, HTTP_IF_MODIFIED_SINCE=http_date(int(when) - 60)).status_code == 200


def test_if_none_match_wins_over_if_modified_since(api, data) -> None:
    age_versions(api, 100)
    response = api.get(SUMMARY)
    stale = api.get(SUMMARY, HTTP_IF_NONE_MATCH='"stale"', HTTP_IF_MODIFIED_SINCE=response["Last-Modified"])
    assert stale.status_code == 200


def test_a_request_that_would_fail_never_gets_a_304(api, data) -> None:
    age_versions(api, 100)
    future = http_date(int(time.time()) + 3600)
    assert api.get("/api/v1/suppliers/987654/", HTTP_IF_NONE_MATCH="*").status_code == 404
    assert api.get("/api/v1/suppliers/987654/", HTTP_IF_MODIFIED_SINCE=future).status_code == 404
    assert api.get("/api/v1/emissions/summary/?group_by=bogus", HTTP_IF_MODIFIED_SINCE=future).status_code == 400


def test_unknown_query_parameters_get_an_etag_but_no_cached_body(api, data) -> None:
    stored = tiered().stats.counts[("l2", "emissions", "store")]
    response = api.get(LIST, {"utm_source": "x1"})
    assert response.status_code == 200
    assert "ETag" in response
    assert tiered().stats.counts[("l2", "emissions", "store")] == stored


def test_errors_are_not_cached_and_carry_no_etag(api, data) -> None:
    response = api.get("/api/v1/emissions/summary/?group_by=colour")
    assert response.status_code == 400
    assert "ETag" not in response
    assert api.get("/api/v1/emissions/summary/?group_by=colour").status_code == 400


def test_the_browsable_api_is_not_cached(api, data) -> None:
    response = api.get(SUMMARY, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert "ETag" not in response


@override_settings(CACHE_ENABLED=False)
def test_with_the_cache_off_responses_are_plain(api, data) -> None:
    response = api.get(SUMMARY)
    assert response.status_code == 200
    assert "ETag" not in response


def api_namespaces(api) -> list[Namespace]:
    return emission_namespaces(api.user.membership.organization_id)
