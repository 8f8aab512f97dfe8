"""perf.conditional: ETag / Last-Modified / 304, Cache-Control and Vary, on the real API views."""

from __future__ import annotations

import datetime as dt
import gzip
import math
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import DisallowedHost
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils.http import http_date
from django_redis import get_redis_connection
from rest_framework.authtoken.models import Token
from rest_framework.permissions import IsAdminUser

from emissions.api.authentication import OrgTokenAuthentication
from emissions.api.views import EmissionViewSet
from emissions.cache import emission_list_namespaces
from perf.cache import Namespace, Version, tiered
from perf.conditional import _last_modified, accepts_gzip
from tests.factories import EmissionFactory, MembershipFactory, SupplierFactory
from tests.helpers import APIClient
from tests.perf.conftest import RoundTrips

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
    assert {"Authorization", "Accept", "Accept-Encoding"} <= vary


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


def stores() -> int:
    return tiered().stats.counts[("l2", "emissions", "store")]


def test_every_page_answers_conditional_gets_and_deep_pages_keep_bodies_from_their_second_request(api, data) -> None:
    first = api.get(LIST, {"limit": 1}).json()
    page2_url = f"{LIST}?{first['next'].split('?', 1)[1]}"
    before = stores()
    page2 = api.get(page2_url)
    assert page2.status_code == 200
    assert stores() == before  # asked for the first time: computed, not stored
    assert api.get(page2_url, HTTP_IF_NONE_MATCH=page2["ETag"]).status_code == 304
    assert stores() == before + 1  # asked again: stored
    with CaptureQueriesContext(connection) as queries:
        again = api.get(page2_url)
    assert again.content == page2.content and again["ETag"] == page2["ETag"]
    assert len(queries) == 0  # from the cache
    # Another deep page is a request of its own: its first request stores nothing either.
    page3_url = f"{LIST}?{api.get(page2_url).json()['next'].split('?', 1)[1]}"
    api.get(page3_url)
    assert stores() == before + 1


@override_settings(CACHE_DEEP_PAGES=False)
def test_deep_pages_keep_no_body_with_cache_deep_pages_off(api, data) -> None:
    first = api.get(LIST, {"limit": 1}).json()
    page2_url = f"{LIST}?{first['next'].split('?', 1)[1]}"
    before = stores()
    etags = {api.get(page2_url)["ETag"] for _ in range(3)}
    assert stores() == before
    assert len(etags) == 1  # still answers conditional GETs
    assert api.get(page2_url, HTTP_IF_NONE_MATCH=etags.pop()).status_code == 304


def test_a_deep_page_kept_by_another_worker_is_served_on_its_first_request_here(api, data) -> None:
    first = api.get(LIST, {"limit": 1}).json()
    page2_url = f"{LIST}?{first['next'].split('?', 1)[1]}"
    api.get(page2_url)
    body = api.get(page2_url).content  # stored
    tiered().clear_local()  # this worker forgets it was asked (and its L1); Redis keeps the body
    with CaptureQueriesContext(connection) as queries:
        again = api.get(page2_url)
    assert again.content == body
    assert not any("emissions_emission" in q["sql"] for q in queries.captured_queries)


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
    """What the emission lists and summaries (unfiltered) read; a detail reads a subset of them."""
    return emission_list_namespaces(api.user.membership.organization_id)


# -- cached responses answered before DRF (perf.fastpath) -------------------------------------------


def test_a_cached_get_is_answered_without_drf_and_without_queries(api, data, drf_requests) -> None:
    first = api.get(SUMMARY)
    assert drf_requests == ["/api/v1/emissions/summary/"]  # the miss goes through DRF, which stores it
    with CaptureQueriesContext(connection) as queries:
        second = api.get(SUMMARY)
        not_modified = api.get(SUMMARY, HTTP_IF_NONE_MATCH=first["ETag"])
    assert drf_requests == ["/api/v1/emissions/summary/"]
    assert len(queries) == 0
    assert second.status_code == 200 and second.content == first.content
    assert not_modified.status_code == 304 and not_modified.content == b""


def test_a_miss_costs_three_round_trips_to_redis_and_a_repeat_in_another_worker_one(
    api, data, round_trips: RoundTrips, settings, throttle_clock
) -> None:
    # Nothing else may send in between: versions kept in L1 longer than the test, the throttles' window fixed
    # (throttle_clock), no flush of the counters.
    settings.CACHE_L1_TTL = 60
    tiered().stats_flush = math.inf
    api.get(SUMMARY)  # the caller's token and the namespaces' versions are read and kept in L1
    round_trips.trips.clear()
    assert api.get(LIST).status_code == 200
    # The fast path's lookup; DRF's path looks up again and takes the lock in one script; the store and the release.
    assert round_trips.trips == [["get"], ["eval"], ["set", "eval"]]
    tiered().clear_local()  # as another worker, whose L1 has not seen the page (nor the versions)
    api.get(SUMMARY)
    round_trips.trips.clear()
    assert api.get(LIST).status_code == 200
    assert round_trips.trips == [["get"]]


@pytest.mark.parametrize(
    "path",
    [SUMMARY, LIST, "/api/v1/emissions/?category=1", "/api/v1/activities/", "/api/v1/factors/", "/api/v1/suppliers/"],
)
def test_answers_without_drf_are_the_answers_drf_gives(api, data, electricity_factor, drf_requests, path) -> None:
    """Same status, body and headers, 200 and 304, gzip or not, with the path on and off (the same entry)."""
    api.get(path)  # stored by DRF's path
    answers = {}
    for fast in (True, False):
        drf_requests.clear()
        with override_settings(CACHE_FAST_PATH=fast):
            # One request id for all: each response echoes its request's (X-Request-ID), a generated one differs.
            full = api.get(path, HTTP_X_REQUEST_ID="same")
            not_modified = api.get(path, HTTP_IF_NONE_MATCH=full["ETag"], HTTP_X_REQUEST_ID="same")
            gzipped = api.get(path, HTTP_ACCEPT_ENCODING="gzip", HTTP_X_REQUEST_ID="same")
        answers[fast] = [(r.status_code, r.content, dict(r.headers)) for r in (full, not_modified, gzipped)]
        assert len(drf_requests) == (0 if fast else 3)  # the first arm really was the path without DRF
    assert answers[True] == answers[False]
    assert [status for status, _, _ in answers[True]] == [200, 304, 200]


def test_a_detail_and_a_supplier_s_factors_are_answered_without_drf(api, org, drf_requests) -> None:
    supplier = SupplierFactory.create(organization=org)
    paths = [f"/api/v1/suppliers/{supplier.pk}/", f"/api/v1/suppliers/{supplier.pk}/factors/"]
    for path in paths:
        assert api.get(path).status_code == 200
    for path in paths:
        assert api.get(path).status_code == 200
    assert drf_requests == paths  # once each: the second round came from the cache


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (SUMMARY, {"HTTP_ACCEPT": "text/html"}),  # the browsable API
        (SUMMARY, {"HTTP_ACCEPT": ""}),  # an empty Accept: DRF answers 406
        (SUMMARY + "&x=1", {}),  # unknown parameter: no cached body
        ("/api/v1/emissions/?after=abc", {}),  # a deep page not asked before; then a 400, never kept
        ("/api/v1/emissions/summary/?group_by=nonsense", {}),  # a 400 is never stored
    ],
)
def test_what_the_path_cannot_be_sure_of_goes_through_drf(api, data, drf_requests, path, headers) -> None:
    first = api.get(path, **headers)
    second = api.get(path, **headers)
    assert second.status_code == first.status_code
    assert len(drf_requests) == 2


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (SUMMARY, {"HTTP_ACCEPT": "application/json; indent=4"}),  # another JSON rendering: its own entry
        (SUMMARY + "&format=json", {}),  # ?format= picks the renderer, as in DRF
        ("/api/v1/emissions.json", {}),  # so does a format suffix
    ],
)
def test_what_drf_negotiates_to_json_is_answered_without_drf_as_drf_does(api, data, drf_requests, path, headers):
    """The path negotiates with the view's own negotiator and renderers: whatever DRF renders as JSON it may serve."""
    answers = {}
    for fast in (False, True):
        with override_settings(CACHE_FAST_PATH=fast):
            drf_requests.clear()
            first = api.get(path, **headers)
            second = api.get(path, HTTP_X_REQUEST_ID="same", **headers)  # the id the response echoes: the same
        answers[fast] = (second.status_code, second.content, dict(second.headers))
        assert first.content == second.content
    assert answers[True] == answers[False]
    assert answers[True][0] == 200 and answers[True][2]["Content-Type"].startswith("application/json")
    assert len(drf_requests) == 0  # with the path on: the entry DRF stored with it off


@override_settings(USE_X_FORWARDED_HOST=True, ALLOWED_HOSTS=["testserver", "127.0.0.1", "api.example.com"])
def test_answers_without_drf_name_the_host_the_request_names(api, data, drf_requests) -> None:
    """The plan memo is keyed by the raw host fields: another Host, or a forwarded one, is another answer."""
    page = LIST + "?limit=1"  # it has a next link, which is absolute: it names the host
    hosts: list[dict[str, str]] = [{}, {"HTTP_HOST": "127.0.0.1"}, {"HTTP_X_FORWARDED_HOST": "api.example.com"}]
    for headers in hosts:
        api.get(page, **headers)  # stored by DRF's path
    drf_requests.clear()
    answers = [api.get(page, **headers) for headers in hosts]
    assert drf_requests == []  # all three from the cache, without DRF
    assert len({answer["ETag"] for answer in answers}) == 3
    assert answers[2].json()["next"].startswith("http://api.example.com/")  # the body made for that host


def test_a_memoized_plan_never_serves_a_host_the_settings_refuse(api, data, rf) -> None:
    """ALLOWED_HOSTS is checked when a plan is made; changing it drops the plans, so the check runs again."""
    view = EmissionViewSet.as_view({"get": "list"})
    auth = api._credentials["HTTP_AUTHORIZATION"]
    api.get(LIST)  # cached by DRF's path
    assert view(rf.get(LIST, HTTP_AUTHORIZATION=auth)).status_code == 200  # the plan for "testserver" is memoized
    with override_settings(ALLOWED_HOSTS=["api.example.com"]), pytest.raises(DisallowedHost):
        view(rf.get(LIST, HTTP_AUTHORIZATION=auth))


def test_a_repeat_is_answered_from_the_kept_answer_until_a_version_moves(api, org, data, monkeypatch) -> None:
    """The second fast answer keeps itself; the third needs no token lookup, plan or decoding; a write ends it."""
    lookups: list[str] = []
    lookup = OrgTokenAuthentication.authenticate_cached

    def counting(self: OrgTokenAuthentication, request: Any) -> Any:
        lookups.append(request.path)
        return lookup(self, request)

    monkeypatch.setattr(OrgTokenAuthentication, "authenticate_cached", counting)
    first = api.get(SUMMARY)  # the token is not cached yet: DRF authenticates, computes and stores
    second = api.get(SUMMARY)  # from the cache, without DRF: kept as an answer
    assert len(lookups) == 2
    with CaptureQueriesContext(connection) as queries:
        third = api.get(SUMMARY)
        not_modified = api.get(SUMMARY, HTTP_IF_NONE_MATCH=first["ETag"])
    assert len(lookups) == 2 and len(queries) == 0  # the kept answer: no lookup, no query
    assert third.content == second.content == first.content and third["ETag"] == first["ETag"]
    assert not_modified.status_code == 304
    EmissionFactory(organization=org)  # bumps the emissions namespaces
    assert api.get(SUMMARY).json()["count"] == 4
    assert len(lookups) == 3  # the kept answer was stale: the full check ran again


def test_head_requests_go_through_drf(api, data, drf_requests) -> None:
    api.get(SUMMARY)
    assert api.head(SUMMARY).status_code == 200
    assert len(drf_requests) == 2


def test_session_authenticated_requests_go_through_drf(org, data, drf_requests) -> None:
    membership = MembershipFactory.create(organization=org)
    client = APIClient()
    client.force_login(membership.user)
    assert client.get(SUMMARY).status_code == 200
    assert client.get(SUMMARY).status_code == 200
    assert len(drf_requests) == 2


def revoke(user: User, token: Token) -> None:
    token.delete()


def deactivate(user: User, token: Token) -> None:
    user.is_active = False
    user.save()


def remove_membership(user: User, token: Token) -> None:
    user.membership.delete()


@pytest.mark.parametrize(("change", "status"), [(revoke, 401), (deactivate, 401), (remove_membership, 403)])
def test_a_caller_drf_would_refuse_is_refused_at_once(api, data, drf_requests, change, status) -> None:
    assert api.get(SUMMARY).status_code == 200
    assert api.get(SUMMARY).status_code == 200
    change(api.user, Token.objects.get(user=api.user))
    response = api.get(SUMMARY)
    assert response.status_code == status
    assert drf_requests == ["/api/v1/emissions/summary/"] * 2  # DRF decided, from fresh rows


def test_an_empty_accept_gets_drf_s_406_even_when_the_body_is_cached(api, data) -> None:
    api.get(SUMMARY)
    assert api.get(SUMMARY, HTTP_ACCEPT="").status_code == 406


def test_an_unknown_token_costs_one_query_as_without_the_path(data) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(SUMMARY).status_code == 401
    assert len(queries) == 1


def test_a_token_not_in_the_cache_goes_through_drf_once_then_not(api, data, drf_requests) -> None:
    api.get(SUMMARY)
    tiered().clear_local()
    get_redis_connection("default").flushdb()  # every tier forgets the token row and the body
    api.get(SUMMARY)
    api.get(SUMMARY)
    assert len(drf_requests) == 2


def test_an_action_with_its_own_permissions_goes_through_drf(api, data, drf_requests, monkeypatch) -> None:
    api.get(SUMMARY)
    # As @action(permission_classes=[IsAdminUser]) would: the router passes it to the view instance.
    monkeypatch.setattr(EmissionViewSet, "permission_classes", [IsAdminUser])
    assert api.get(SUMMARY).status_code == 403
    assert len(drf_requests) == 2


def test_bad_or_unknown_tokens_get_drf_s_answers(data, drf_requests) -> None:
    for header in ["Token", "Token a b", "Token nope", "Bearer abc", "Token caf\u00e9"]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get(SUMMARY).status_code == 401, header
    assert len(drf_requests) == 5


def test_each_organization_gets_its_own_cached_answer(api, other_api, org, other_org, drf_requests) -> None:
    EmissionFactory.create_batch(2, organization=org)
    EmissionFactory.create_batch(3, organization=other_org)
    for client in (api, other_api, api, other_api):
        client.get(SUMMARY)
    assert len(drf_requests) == 2  # one miss per organization
    assert api.get(SUMMARY).json()["count"] == 2
    assert other_api.get(SUMMARY).json()["count"] == 3
    assert api.get(SUMMARY)["ETag"] != other_api.get(SUMMARY)["ETag"]


def test_a_write_is_seen_by_the_next_cached_read(api, org, data) -> None:
    assert api.get(SUMMARY).json()["count"] == 3
    api.get(SUMMARY)  # now answered from the cache
    EmissionFactory(organization=org)
    assert api.get(SUMMARY).json()["count"] == 4


def test_a_miss_is_counted_once_and_a_hit_once(api, org, data) -> None:
    stats = tiered().stats
    api.get(SUMMARY)
    before = stats.snapshot()
    api.get(SUMMARY)  # an L1 hit, without DRF
    tiered().clear_local()
    api.get(SUMMARY)  # an L1 miss and an L2 hit (promoted), without DRF
    EmissionFactory(organization=org)
    api.get(SUMMARY)  # a miss without DRF, uncounted; then DRF's lookup counts it and computes
    after = stats.snapshot()
    delta = {key: after[key] - before.get(key, 0) for key in after if key[1] == "emissions"}
    assert {key: n for key, n in delta.items() if n} == {
        ("l1", "emissions", "hit"): 1,
        ("l1", "emissions", "miss"): 2,
        ("l2", "emissions", "hit"): 1,
        ("l2", "emissions", "promotion"): 1,
        ("l2", "emissions", "miss"): 1,
        ("db", "emissions", "compute"): 1,
        ("l2", "emissions", "store"): 1,
    }


@override_settings(CACHE_FAST_PATH=False)
def test_the_path_can_be_switched_off(api, data, drf_requests) -> None:
    api.get(SUMMARY)
    api.get(SUMMARY)
    assert len(drf_requests) == 2


# -- gzip forms of cached bodies -----------------------------------------------------------------


@pytest.fixture
def many(org):
    return EmissionFactory.create_batch(20, organization=org, activity__period_start=dt.date(2025, 1, 1))


@pytest.mark.parametrize("fast", [True, False])
def test_a_client_that_accepts_gzip_gets_the_stored_gzip_form(api, many, fast) -> None:
    identity = api.get(LIST)  # stored, with its gzip form (the page is well over CACHE_GZIP_MIN_BYTES)
    with override_settings(CACHE_FAST_PATH=fast):
        gzipped = api.get(LIST, HTTP_ACCEPT_ENCODING="gzip, deflate, br")
        not_modified = api.get(LIST, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=gzipped["ETag"])
        stale = api.get(LIST, HTTP_ACCEPT_ENCODING="gzip", HTTP_IF_NONE_MATCH=identity["ETag"])
    assert gzipped["Content-Encoding"] == "gzip"
    assert gzip.decompress(gzipped.content) == identity.content
    assert len(gzipped.content) < len(identity.content) / 3
    assert "Content-Encoding" not in identity
    # Each representation has its own ETag; a 304 refers to the form the client holds.
    assert gzipped["ETag"] == identity["ETag"][:-1] + '-gzip"'
    assert not_modified.status_code == 304 and not_modified["ETag"] == gzipped["ETag"]
    assert stale.status_code == 200 and stale["Content-Encoding"] == "gzip"


def test_small_and_uncached_bodies_are_not_compressed(api, many) -> None:
    with override_settings(CACHE_GZIP_MIN_BYTES=10**9):
        api.get(LIST)
        small = api.get(LIST, HTTP_ACCEPT_ENCODING="gzip")
    unknown_param = api.get(LIST + "?x=1", HTTP_ACCEPT_ENCODING="gzip")  # no cached body: never compressed
    api.get(SUMMARY)
    with override_settings(CACHE_GZIP_MIN_BYTES=0):
        api.get(SUMMARY + "&category=1")
        off = api.get(SUMMARY + "&category=1", HTTP_ACCEPT_ENCODING="gzip")
    for response in (small, unknown_param, off):
        assert response.status_code == 200 and "Content-Encoding" not in response
        assert not response["ETag"].endswith('-gzip"')


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("gzip;q=nonsense", False),
        ("identity", False),
        ("*", False),
        ("", False),
    ],
)
def test_accepts_gzip_reads_q_values(header, accepted) -> None:
    assert accepts_gzip(header) is accepted


def test_gzip_is_not_served_to_clients_that_do_not_name_it(api, many) -> None:
    api.get(LIST)
    for accept_encoding in ("", "identity", "deflate, br", "gzip;q=0, identity"):
        response = api.get(LIST, HTTP_ACCEPT_ENCODING=accept_encoding)
        assert "Content-Encoding" not in response, accept_encoding
