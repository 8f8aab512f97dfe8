"""The API's request limits: per token, per organization, bulk work, unauthenticated and failed authentications.

Each test sets the scope it checks to a small rate (the others stay at their defaults), so a few requests reach it,
on the throttles' fixed clock (``throttle_clock``: 30 s into a minute window), so no window ends mid-test.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import reverse
from rest_framework.authtoken.models import Token

from emissions.models import Organization
from tests.emissions.api.payloads import activity_input
from tests.factories import EmissionFactory, MembershipFactory
from tests.helpers import APIClient

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("throttle_clock")]


@contextmanager
def rates(**scopes: str) -> Iterator[None]:
    """The throttle rates of ``scopes`` (``user="3/min"``), the others as configured."""
    configured = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {})
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**configured, **scopes}}
    ):
        yield


def member_api(organization: Organization) -> APIClient:
    membership = MembershipFactory.create(organization=organization)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    return client


def assert_throttled(response: Any) -> None:
    """A 429 in the API's error shape, with the ``Retry-After`` of the fixed clock (30 s left in its minute)."""
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == "30"
    assert set(response.json()) == {"detail"}
    assert response["Retry-After"] in response.json()["detail"]


def test_failed_authentications_are_limited_per_address() -> None:
    """Random tokens: 401 until the address's failures pass the limit, then 429 (the finding: 300 x 401)."""
    client = APIClient()
    with rates(auth_failures="3/min"):
        statuses = []
        for _ in range(5):
            client.credentials(HTTP_AUTHORIZATION=f"Token {secrets.token_hex(20)}")
            response = client.get(reverse("emission-list"))
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert_throttled(response)
        assert "failed authentications" in response.json()["detail"]
        # Another address has its own count.
        assert client.get(reverse("emission-list"), REMOTE_ADDR="10.0.0.9").status_code == 401


def test_a_valid_token_still_authenticates_from_an_address_over_its_failure_limit(org) -> None:
    """Failures are counted and refused, not the address: a member behind the same address keeps working (its
    token's row is cached: it was used before)."""
    api = member_api(org)
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    with rates(auth_failures="1/min"):
        assert api.get(reverse("emission-list")).status_code == 200
        assert [bad.get(reverse("emission-list")).status_code for _ in range(3)] == [401, 429, 429]
        assert api.get(reverse("emission-list")).status_code == 200


def guess(client: APIClient) -> Any:
    client.credentials(HTTP_AUTHORIZATION=f"Token {secrets.token_hex(20)}")
    return client.get(reverse("supplier-list"))


def test_an_address_over_its_failure_limit_guesses_without_a_query(org, django_assert_num_queries) -> None:
    """The failures up to the limit are 401s, a token lookup each; past it, a token that is not cached (a guess,
    or a valid token not used lately) is answered 429 before it is looked up: guessing costs no query."""
    client = APIClient()
    with rates(auth_failures="3/min"):
        for _ in range(3):
            with django_assert_num_queries(1):
                assert guess(client).status_code == 401
        for _ in range(2):
            with django_assert_num_queries(0):
                response = guess(client)
            assert_throttled(response)
            assert "failed authentications" in response.json()["detail"]
        uncached = member_api(org)
        with django_assert_num_queries(0):
            assert_throttled(uncached.get(reverse("supplier-list")))
        # Another address: its own count, and the same token is looked up and served.
        assert uncached.get(reverse("supplier-list"), REMOTE_ADDR="10.0.0.9").status_code == 200
        assert uncached.get(reverse("supplier-list")).status_code == 200  # now cached: served from the first address


def test_the_failure_limit_is_shared_by_every_process(org, django_assert_num_queries) -> None:
    """Another process (its own counter set, the same Redis count) refuses a guess from an address the first one
    counted over its limit, without a query."""
    from perf import throttle

    client = APIClient()
    with rates(auth_failures="2/min"):
        assert [guess(client).status_code for _ in range(2)] == [401, 401]
        throttle.counters.reset()  # what another worker knows: nothing but the shared count
        with django_assert_num_queries(0):
            assert_throttled(guess(client))


def test_requests_are_limited_per_token(org) -> None:
    api, colleague = member_api(org), member_api(org)
    with rates(user="3/min"):
        assert [api.get(reverse("supplier-list")).status_code for _ in range(3)] == [200, 200, 200]
        assert_throttled(api.get(reverse("supplier-list")))
        assert_throttled(api.post(reverse("supplier-list"), {"external_id": "V-1", "name": "S"}, format="json"))
        assert colleague.get(reverse("supplier-list")).status_code == 200


def test_requests_are_limited_per_organization(org, other_org) -> None:
    first, second, outsider = member_api(org), member_api(org), member_api(other_org)
    with rates(org="3/min"):
        assert [client.get(reverse("factor-list")).status_code for client in (first, second, first)] == [200] * 3
        assert_throttled(second.get(reverse("factor-list")))
        assert outsider.get(reverse("factor-list")).status_code == 200


def test_cached_reads_count_as_every_request_does(org) -> None:
    """The emissions list's first page is cached and answered before DRF (perf.fastpath): it counts all the same,
    once per request."""
    EmissionFactory.create(organization=org)
    api = member_api(org)
    with rates(user="4/min"):
        assert [api.get(reverse("emission-list")).status_code for _ in range(4)] == [200] * 4
        assert_throttled(api.get(reverse("emission-list")))


def read_export(response: Any) -> bytes:
    assert response.status_code == 200
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_exports_are_bulk_work_limited_per_organization(org, other_org) -> None:
    api, colleague, outsider = member_api(org), member_api(org), member_api(other_org)
    with rates(bulk="2/min"):
        for client in (api, colleague):
            response = client.get(reverse("emission-export"))
            # Read to the end: gives its bulk slot back (perf.admission). The colleague's is the kept body (a
            # cached answer counts as bulk work too: the throttle runs before the view).
            assert read_export(response)
        assert_throttled(api.get(reverse("emission-export")))
        response = outsider.get(reverse("emission-export"))
        assert read_export(response)
        # Reads are not bulk work.
        assert api.get(reverse("emission-list")).status_code == 200


def test_large_activity_lists_and_batches_are_bulk_work(org, electricity_factor) -> None:
    api = member_api(org)
    large = [activity_input(external_ref=f"R-{i}") for i in range(120)]  # over 16 KiB of JSON
    with rates(bulk="1/min"):
        assert api.post(reverse("activity-list"), activity_input(), format="json").status_code == 201  # small
        assert api.post(reverse("activity-list"), large, format="json").status_code == 201
        assert_throttled(api.post(reverse("activity-list"), large, format="json"))
        assert_throttled(api.post(reverse("calculate-batch"), {"items": large}, format="json"))
        assert api.post(reverse("activity-list"), activity_input(), format="json").status_code == 201


def test_unauthenticated_requests_are_limited_per_address() -> None:
    """The views open to anonymous callers (the docs and the schema; the API's answer 401 first) count them."""
    client = APIClient()
    with rates(anon="2/min"):
        assert [client.get(reverse("api-docs")).status_code for _ in range(2)] == [200, 200]
        assert client.get(reverse("api-docs")).status_code == 429  # an HTML page: the docs render their errors
        assert_throttled(client.get(reverse("schema"), {"format": "json"}))
        assert client.get(reverse("api-docs"), REMOTE_ADDR="10.0.0.7").status_code == 200


def test_a_forged_forwarded_for_does_not_escape_the_address_limit() -> None:
    """Without trusted proxies (``NUM_PROXIES`` 0) the address is the connection's, whatever X-Forwarded-For says."""
    client = APIClient()
    with rates(anon="1/min"):
        assert client.get(reverse("api-docs"), HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 200
        assert client.get(reverse("api-docs"), HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 429
