"""The admin login lockout (django-axes, configured in vcci/settings.py; README "Admin login lockout").

Failures are counted per username and client address: after ``AXES_FAILURE_LIMIT`` wrong passwords that
pair is refused with 429, the right password included, until the cool-off has passed; other users, and the
same user from another address, still log in; a success before the limit clears the count. The API's
token authentication neither counts failures nor is refused for a locked-out pair.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import F
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import MembershipFactory, UserFactory
from tests.helpers import APIClient, Client
from tests.vcci.test_settings import load_settings  # noqa: F401  (the fixture)

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests"  # tests.factories.UserFactory's
LOGIN = reverse("admin:login")
HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"


@pytest.fixture
def alice():
    return UserFactory.create(username="alice", is_staff=True)


@pytest.fixture
def bob():
    return UserFactory.create(username="bob", is_staff=True)


def log_in(client: Client, username: str, password: str, address: str):
    return client.post(
        LOGIN, {"username": username, "password": password, "next": reverse("admin:index")}, REMOTE_ADDR=address
    )


def logged_in(client: Client) -> bool:
    """Whether the admin's index answers (a client not logged in is sent to the login page)."""
    return client.get(reverse("admin:index")).status_code == 200


def fail(username: str, address: str, times: int) -> list[int]:
    """``times`` wrong passwords for ``username`` from ``address``; the status of each answer."""
    client = Client()
    return [log_in(client, username, "wrong", address).status_code for _ in range(times)]


def test_the_right_password_after_the_limit_of_wrong_ones_is_refused(alice):
    limit = settings.AXES_FAILURE_LIMIT
    # The login form again for each wrong password, then 429 from the one that reaches the limit.
    assert fail("alice", HOME, limit) == [200] * (limit - 1) + [429]
    client = Client()
    response = log_in(client, "alice", PASSWORD, HOME)
    assert response.status_code == 429
    assert not logged_in(client)


def test_the_lockout_is_per_username_and_address(alice, bob):
    fail("alice", HOME, settings.AXES_FAILURE_LIMIT)
    for username, address in [("bob", HOME), ("alice", ELSEWHERE), ("bob", ELSEWHERE)]:
        client = Client()
        assert log_in(client, username, PASSWORD, address).status_code == 302, (username, address)
        assert logged_in(client)
    assert log_in(Client(), "alice", PASSWORD, HOME).status_code == 429


def test_a_success_before_the_limit_clears_the_count(alice):
    almost = settings.AXES_FAILURE_LIMIT - 1
    for _ in range(2):  # without the reset the second round would pass the limit
        assert fail("alice", HOME, almost) == [200] * almost
        client = Client()
        assert log_in(client, "alice", PASSWORD, HOME).status_code == 302
        assert logged_in(client)


def test_the_lockout_ends_after_the_cool_off(alice):
    fail("alice", HOME, settings.AXES_FAILURE_LIMIT)
    assert log_in(Client(), "alice", PASSWORD, HOME).status_code == 429  # which also restarts the cool-off
    # The failures as if made a cool-off (and a second) ago.
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    client = Client()
    assert log_in(client, "alice", PASSWORD, HOME).status_code == 302
    assert logged_in(client)


def test_behind_a_trusted_proxy_failures_count_under_the_forwarded_address(alice, settings):
    settings.ADMIN_LOGIN_TRUSTED_PROXIES = ["127.0.0.1"]
    client = Client(HTTP_X_FORWARDED_FOR=f"203.0.113.9, {HOME}")  # the client's claim, then the proxy's
    for _ in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, "alice", "wrong", "127.0.0.1")
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {HOME}
    other_client = Client(HTTP_X_FORWARDED_FOR=ELSEWHERE)
    assert log_in(other_client, "alice", PASSWORD, "127.0.0.1").status_code == 302


def test_the_api_is_not_affected(org):
    member = MembershipFactory.create(organization=org).user
    token = Token.objects.create(user=member)
    api = APIClient()
    # Wrong tokens are not login failures: nothing is counted.
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert [api.get("/api/v1/suppliers/", REMOTE_ADDR=HOME).status_code for _ in range(10)] == [401] * 10
    assert not AccessAttempt.objects.exists()
    # A locked-out username and address still reach the API with the user's token.
    fail(member.username, HOME, settings.AXES_FAILURE_LIMIT)
    assert log_in(Client(), member.username, PASSWORD, HOME).status_code == 429
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/v1/suppliers/", REMOTE_ADDR=HOME).status_code == 200


def test_logins_without_a_request_are_not_counted(alice):
    """Code that calls ``authenticate()`` itself (the test client's ``login``) is not a client to count."""
    assert not Client().login(username="alice", password="wrong")
    assert Client().login(username="alice", password=PASSWORD)
    assert not AccessAttempt.objects.exists()


def test_limit_and_cool_off_come_from_the_environment(load_settings):  # noqa: F811
    configured = load_settings(ADMIN_LOGIN_FAILURE_LIMIT="7", ADMIN_LOGIN_COOLOFF_MINUTES="2.5")
    assert configured.AXES_FAILURE_LIMIT == 7
    assert configured.AXES_COOLOFF_TIME.total_seconds() == 150


@pytest.mark.parametrize(
    "env",
    [{"ADMIN_LOGIN_FAILURE_LIMIT": "0"}, {"ADMIN_LOGIN_COOLOFF_MINUTES": "0"}, {"ADMIN_LOGIN_COOLOFF_MINUTES": "-1"}],
)
def test_impossible_limits_are_refused(load_settings, env):  # noqa: F811
    with pytest.raises(ImproperlyConfigured, match="ADMIN_LOGIN_FAILURE_LIMIT"):
        load_settings(**env)
