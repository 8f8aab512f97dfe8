"""perf.conditional: ETag / Last-Modified / 304, Cache-Control and Vary, on the real API views."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.test import override_settings
from django.utils.http import http_date

from emissions.cache import emission_namespaces
from perf.cache import Namespace, tiered
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


def test_last_modified_is_sent_once_its_second_is_over(api, data) -> None:
    tiered().bump(*api_namespaces(api))
    changed_at = max(v.changed_at for v in tiered().versions(api_namespaces(api)))
    if int(time.time()) == int(changed_at):
        # The write's own second: a later write could share the timestamp, so there is none to send yet.
        assert "Last-Modified" not in api.get(SUMMARY)
        time.sleep(1.01 - (time.time() % 1))
    response = api.get(SUMMARY)
    assert response["Last-Modified"] == http_date(int(changed_at))
    assert api.get(SUMMARY, HTTP_IF_MODIFIED_SINCE=response["Last-Modified"]).status_code == 304
    earlier = http_date(int(changed_at) - 60)
    assert api.get(SUMMARY, HTTP_IF_MODIFIED_SINCE=earlier).status_code == 200


def test_if_none_match_wins_over_if_modified_since(api, data) -> None:
    tiered().bump(*api_namespaces(api))
    time.sleep(1.01 - (time.time() % 1))
    response = api.get(SUMMARY)
    stale = api.get(SUMMARY, HTTP_IF_NONE_MATCH='"stale"', HTTP_IF_MODIFIED_SINCE=response["Last-Modified"])
    assert stale.status_code == 200


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
