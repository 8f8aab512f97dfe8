"""emissions.api.authentication: the token query brings the caller's organization along."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from emissions.api.authentication import USER_FIELDS, OrgTokenAuthentication, _token_row, cached_token_row
from perf import keyset_sql
from perf.codec import model_row
from perf.postgresql.base import PREPARE_THRESHOLD
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


def orm_token_row(key):
    """The token's rows as the ORM builds them from model instances (what the cache held before)."""
    token = Token.objects.select_related("user__membership__organization").filter(key=key).first()
    if token is None:
        return None
    membership = getattr(token.user, "membership", None)
    return [
        token.created,
        model_row(token.user, USER_FIELDS),
        None if membership is None else model_row(membership),
        None if membership is None else model_row(membership.organization),
    ]


def test_the_token_row_is_the_one_the_instances_make_from_sql_compiled_once(org, monkeypatch):
    member = Token.objects.create(user=MembershipFactory.create(organization=org).user)
    loner = Token.objects.create(user=UserFactory.create())
    compiles = []
    real = keyset_sql._compile
    monkeypatch.setattr(keyset_sql, "_compile", lambda queryset: compiles.append(1) or real(queryset))
    keyset_sql.clear()
    for key in (member.key, loner.key, "0" * 40, member.key):
        with CaptureQueriesContext(connection) as queries:
            row = _token_row(key)
        assert row == orm_token_row(key)
        assert len(queries) == 1
    assert _token_row(member.key)[3][2] == "acme" and _token_row(loner.key)[2:] == [None, None]
    assert len(compiles) == 1  # the other calls bind the key to the kept SQL


def test_the_token_lookup_runs_as_one_prepared_statement(org, settings):
    settings.DB_PREPARED_STATEMENTS = True
    tokens = [Token.objects.create(user=MembershipFactory.create(organization=org).user) for _ in range(3)]
    keys = [token.key for token in tokens] * PREPARE_THRESHOLD
    # The row each key's prepared lookup reads is the ORM's: the prepared statement is bound per key.
    assert [_token_row(key) for key in keys] == [orm_token_row(key) for key in keys]
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%%authtoken_token%%'")
        (statement,) = [row[0] for row in cursor.fetchall()]
    assert '"authtoken_token"."key" = $1' in statement


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


# -- authenticate_cached: the same rule, from the cache alone (perf.fastpath) ------------------


def outcome(call, request):
    """``(user id, token key)``, None, or the failure's message."""
    try:
        found = call(request)
    except AuthenticationFailed as exc:
        return str(exc.detail)
    return None if found is None else (found[0].pk, found[1].key)


@pytest.mark.parametrize(
    "header",
    [
        "Token {key}",
        "token {key}",  # the keyword is case-insensitive, as in DRF
        "Token  {key} ",
        "Token",  # DRF: "No credentials provided."
        "Token {key} b",  # DRF: "Token string should not contain spaces."
        "Bearer {key}",  # not a token header: DRF tries the next authentication
        "Token{key}",
        "Token caf\u00e9",  # not UTF-8 once encoded as DRF encodes headers
        "Token\x1c{key}",  # \x1c separates str.split() but not bytes.split(): one part, not a token
        "Token {unknown}",
        "",
    ],
)
def test_authenticate_cached_answers_as_authenticate_does_or_not_at_all(rf, org, header):
    membership = MembershipFactory.create(organization=org)
    key = Token.objects.create(user=membership.user).key
    value = header.format(key=key, unknown="0" * 40)
    request = rf.get("/", HTTP_AUTHORIZATION=value) if value else rf.get("/")
    auth = OrgTokenAuthentication()
    drf = outcome(auth.authenticate, request)  # caches a known token's row
    cached = outcome(auth.authenticate_cached, request)
    assert cached == (drf if isinstance(drf, tuple) else None)
    if value.lower().startswith("token ") and value.split()[1:] == [key]:
        assert drf == (membership.user.pk, key)  # the cases that parse really did authenticate


def test_authenticate_cached_reads_the_cache_only(org):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {token.key}")
    auth = OrgTokenAuthentication()
    with CaptureQueriesContext(connection) as queries:
        assert auth.authenticate_cached(request) is None  # not cached yet: it never queries
    assert len(queries) == 0
    auth.authenticate(request)  # what DRF's path does: caches the row
    with CaptureQueriesContext(connection) as queries:
        user, cached = auth.authenticate_cached(request)
        assert (user.membership.organization_id, cached.key) == (org.pk, token.key)
    assert len(queries) == 0


def test_authenticate_cached_refuses_what_authenticate_refuses_and_follows_changes(org, other_org):
    inactive = MembershipFactory.create(organization=org, user__is_active=False).user
    key = Token.objects.create(user=inactive).key
    cached_token_row(key)
    auth = OrgTokenAuthentication()
    assert auth.authenticate_cached(RequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {key}")) is None
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {token.key}")
    cached_token_row(token.key)
    assert auth.authenticate_cached(request)[0].membership.organization_id == org.pk
    membership.organization = other_org
    membership.save()  # bumps auth: the cached row is no longer the current one
    assert auth.authenticate_cached(request) is None
    cached_token_row(token.key)
    assert auth.authenticate_cached(request)[0].membership.organization_id == other_org.pk
    token.delete()
    assert auth.authenticate_cached(request) is None
