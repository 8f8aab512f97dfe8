"""emissions.api.authentication: the token query brings the caller's organization along."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from emissions.api import authentication
from emissions.api.authentication import (
    OrgTokenAuthentication,
    cached_token_row,
    token_from_header,
    token_organization_id,
)
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = reverse("supplier-list")


def client_with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_one_query_loads_user_membership_and_organization(org):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    with CaptureQueriesContext(connection) as queries:
        user, auth = OrgTokenAuthentication().authenticate_credentials(token.key)
        assert auth == token
        assert user.membership.organization.slug == "acme"  # read from the joined row
    assert len(queries) == 1


def test_a_user_without_membership_authenticates_and_is_refused_by_tenancy():
    token = Token.objects.create(user=UserFactory.create())
    response = client_with(token.key).get(LIST)
    assert response.status_code == 403
    assert response.json() == {"detail": "Your user is not a member of any organization."}


def test_inactive_user_and_unknown_token_are_401(org):
    membership = MembershipFactory.create(organization=org, user__is_active=False)
    token = Token.objects.create(user=membership.user)
    response = client_with(token.key).get(LIST)
    assert (response.status_code, response.json()) == (401, {"detail": "User inactive or deleted."})
    response = client_with("0" * 40).get(LIST)
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token."})


# -- the checks the cached-response path makes without DRF --------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Token abc123", "abc123"),
        ("token abc123", "abc123"),  # the keyword is case-insensitive, as in DRF
        ("Token  abc123 ", "abc123"),
        ("Token", None),  # DRF: "No credentials provided."
        ("Token a b", None),  # DRF: "Token string should not contain spaces."
        ("Bearer abc123", None),  # not a token header: DRF tries the next authentication
        ("Tokenabc123", None),
        ("Token caf\u00e9", None),  # not ASCII
        ("Token\x1cabc", None),  # \x1c separates str.split() but not DRF's bytes.split(): one part, not a token
        ("", None),
    ],
)
def test_token_from_header_parses_as_drf_does(rf, header, key, monkeypatch):
    request = rf.get("/", HTTP_AUTHORIZATION=header) if header else rf.get("/")
    assert token_from_header(request) == key
    # Whatever it takes for a key, DRF takes for the same key (where it answers None, DRF decides alone).
    monkeypatch.setattr(OrgTokenAuthentication, "authenticate_credentials", lambda self, k: (None, k))
    try:
        drf = OrgTokenAuthentication().authenticate(request)
    except AuthenticationFailed:
        drf = None
    if key is not None:
        assert drf == (None, key)


@pytest.mark.parametrize("is_staff", [False, True])
def test_token_organization_id_for_a_member(org, is_staff):
    membership = MembershipFactory.create(organization=org, user__is_staff=is_staff)
    token = Token.objects.create(user=membership.user)
    assert token_organization_id(token.key) is None  # not cached yet: it never queries
    OrgTokenAuthentication().authenticate_credentials(token.key)  # what DRF's path does: caches the row
    with CaptureQueriesContext(connection) as queries:
        assert token_organization_id(token.key) == org.pk
    assert len(queries) == 0


def test_token_organization_id_is_none_where_drf_would_refuse(org):
    inactive = MembershipFactory.create(organization=org, user__is_active=False).user
    loner = UserFactory.create()
    for user in (inactive, loner):
        key = Token.objects.create(user=user).key
        cached_token_row(key)
        assert token_organization_id(key) is None
    with CaptureQueriesContext(connection) as queries:
        assert token_organization_id("unknown") is None
    assert len(queries) == 0


def test_token_organization_id_follows_a_change_at_once(org, other_org, monkeypatch):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    cached_token_row(token.key)
    assert token_organization_id(token.key) == org.pk
    # The memo answers now: the cached row is not decoded again.
    monkeypatch.setattr(authentication, "_organization_id", lambda row: pytest.fail("decoded again"))
    assert token_organization_id(token.key) == org.pk
    monkeypatch.undo()
    membership.organization = other_org
    membership.save()  # bumps auth: the memo's version no longer matches
    cached_token_row(token.key)
    assert token_organization_id(token.key) == other_org.pk
    token.delete()
    assert token_organization_id(token.key) is None
