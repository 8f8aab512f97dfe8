"""emissions.api.authentication: the token query brings the caller's organization along."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.api.authentication import OrgTokenAuthentication
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
