"""Token authentication that loads the caller's organization with the token, through the cache."""

from __future__ import annotations

import functools
import threading
from typing import Any

from cachetools import LRUCache
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from emissions.models import Membership, Organization
from perf.cache import GLOBAL_AUTH, digest, tiered, writing
from perf.codec import model_from_row, model_row

# What a request needs of the user; the password hash, among others, never enters the cache
# (the rebuilt user defers the rest and would load it on access).
USER_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_staff", "is_active", "is_superuser")


def _token_row(key: str) -> list[Any] | None:
    """The token's user, membership and organization as cacheable rows (one query); None if unknown."""
    token = Token.objects.select_related("user__membership__organization").filter(key=key).first()
    if token is None:
        return None
    user = token.user
    membership = getattr(user, "membership", None)
    return [
        token.created,
        model_row(user, USER_FIELDS),
        None if membership is None else model_row(membership),
        None if membership is None else model_row(membership.organization),
    ]


def _rebuild(key: str, row: list[Any]) -> tuple[User, Token]:
    created, user_row, membership_row, organization_row = row
    user = model_from_row(User, user_row, USER_FIELDS)
    membership_rel = Membership._meta.get_field("user").remote_field
    if membership_row is None:
        # Cached absence: hasattr(user, "membership") is False without a query (HasOrganization refuses).
        membership_rel.set_cached_value(user, None)
    else:
        membership = model_from_row(Membership, membership_row)
        membership.organization = model_from_row(Organization, organization_row)
        membership.user = user
        membership_rel.set_cached_value(user, membership)
    token = Token(key=key, user=user, created=created)
    token._state.adding = False
    return user, token


def _token_cache_key(key: str) -> str:
    # A keyed hash: Redis never holds a usable token.
    return f"token:{digest(settings.SECRET_KEY, key)}"


def cached_token_row(key: str) -> list[Any] | None:
    """``_token_row(key)`` through the two-level cache (namespace ``auth``); None for an unknown token."""
    return tiered().get_or_compute(
        [GLOBAL_AUTH],
        _token_cache_key(key),
        lambda: _token_row(key),
        negative=lambda value: value is None,
        keep_negative=False,  # random tokens would each leave an entry; an unknown token costs its query
    )


def token_from_header(request: HttpRequest) -> str | None:
    """The key of the request's ``Authorization: Token <key>``, or None for anything else.

    Parsed as DRF's ``TokenAuthentication`` does (the header's bytes split on whitespace, keyword
    case-insensitive, exactly two parts); whatever DRF would answer with an error (one part, three
    parts, not ASCII) is None here too, so a caller falling back to DRF gets DRF's error. Read from
    ``META``, not through DRF's ``get_authorization_header``, which builds ``request.headers`` (a parse
    of every header of the request) for this one value.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    return None if not header else _token_in(header)


@functools.lru_cache(maxsize=1024)
def _token_in(header: str | bytes) -> str | None:
    # Memoized: a client sends the same header on every request. Bounded, and keyed by the header only.
    try:
        raw = header.encode(HTTP_HEADER_ENCODING) if isinstance(header, str) else header
    except UnicodeEncodeError:
        return None  # not a header a server could have received (test clients only): DRF decides
    parts = raw.split()
    if len(parts) != 2 or parts[0].lower() != OrgTokenAuthentication.keyword.lower().encode() or not parts[1].isascii():
        return None
    return parts[1].decode()


# Positions in the cached rows, which follow _meta.concrete_fields order (perf.codec.model_row).
_IS_ACTIVE = [f.attname for f in User._meta.concrete_fields if f.attname in USER_FIELDS].index("is_active")
_MEMBERSHIP_ORGANIZATION = [f.attname for f in Membership._meta.concrete_fields].index("organization_id")


# token -> (auth namespace version, organization id or None), per process: spares the row's decoding on
# every request. Keyed by the version, so it is exactly as fresh as the cached row it was read from.
_ORGANIZATION_MEMO: LRUCache[str, tuple[str, int | None]] = LRUCache(maxsize=10_000)
_MEMO_LOCK = threading.Lock()


def token_organization_id(key: str) -> int | None:
    """The organization id of the token's user when DRF would let the request through, else None.

    That is: the token exists, its user is active and belongs to an organization: what
    ``OrgTokenAuthentication``, ``IsAuthenticated`` and ``HasOrganization`` check. It reads the same
    cached row as ``OrgTokenAuthentication`` (the same staleness bound, ``CACHE_L1_TTL`` after a change
    elsewhere) without rebuilding the models, for ``perf.conditional``'s path without DRF. It only
    reads the cache, never the database: None also when neither tier holds the row (unknown token,
    or not read recently); the caller then falls back to DRF, whose authentication queries once and
    caches the row. Precondition: the cache is enabled.
    """
    if writing([GLOBAL_AUTH]):
        return None  # this transaction changed auth rows: DRF's authentication reads them
    cache = tiered()
    (version,) = cache.versions([GLOBAL_AUTH])
    with _MEMO_LOCK:
        memo = _ORGANIZATION_MEMO.get(key)
    if memo is not None and memo[0] == version.value:
        return memo[1]
    # A miss is counted by DRF's authentication, which looks again and computes (no double count).
    row = cache.get([GLOBAL_AUTH], _token_cache_key(key), versions=(version,), count_misses=False)
    if row is None:
        return None  # not remembered: random tokens would fill the memo
    organization_id = _organization_id(row)
    with _MEMO_LOCK:
        _ORGANIZATION_MEMO[key] = (version.value, organization_id)
    return organization_id


def _organization_id(row: list[Any] | None) -> int | None:
    if row is None:
        return None
    _, user_row, membership_row, _ = row
    if not user_row[_IS_ACTIVE] or membership_row is None:
        return None
    return int(membership_row[_MEMBERSHIP_ORGANIZATION])


class OrgTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, with the user's membership and organization joined into the token query,
    and the result kept in the two-level cache (namespace ``auth``).

    Every API request needs the caller's organization (tenancy scoping, ``HasOrganization``);
    DRF's version loads only the user, so the membership and the organization each cost one more
    query on every request. Cached, a repeat request costs none. The cache key is a keyed hash of
    the token (``SECRET_KEY``), so Redis never holds a usable token. Any save or delete of a token,
    user, membership or organization bumps ``auth`` (``emissions.cache``): a revoked token or a
    deactivated user is refused at once by the worker that made the change and by the others
    within ``CACHE_L1_TTL``. Unknown tokens are not cached (one query each, as without the cache).
    A user without a membership still authenticates and is then refused by ``HasOrganization``.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        row = cached_token_row(key)
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = _rebuild(key, row)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
