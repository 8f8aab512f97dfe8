"""emissions.api.authentication: the token query brings the caller's organization along."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.api.authentication import OrgTokenAuthentication, token_from_header, token_organization_id
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
def test_token_from_header_parses_as_drf_does(rf, header, key):
    request = rf.get("/", HTTP_AUTHORIZATION=header) if header else rf.get("/")
    assert token_from_header(request) == key


@pytest.mark.parametrize("is_staff", [False, True])
def test_token_organization_id_for_a_member(org, is_staff):
    membership = MembershipFactory.create(organization=org, user__is_staff=is_staff)
    token = Token.objects.create(user=membership.user)
    assert token_organization_id(token.key) == org.pk


def test_token_organization_id_is_none_where_drf_would_refuse(org):
    inactive = MembershipFactory.create(organization=org, user__is_active=False).user
    loner = UserFactory.create()
    assert token_organization_id(Token.objects.create(user=inactive).key) is None
    assert token_organization_id(Token.objects.create(user=loner).key) is None
    assert token_organization_id("unknown") is None


def test_token_organization_id_follows_a_change_at_once(org, other_org):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    assert token_organization_id(token.key) == org.pk
    assert token_organization_id(token.key) == org.pk  # from the memo
    membership.organization = other_org
    membership.save()  # bumps auth: the memo's version no longer matches
    assert token_organization_id(token.key) == other_org.pk
    token.delete()
    assert token_organization_id(token.key) is None
