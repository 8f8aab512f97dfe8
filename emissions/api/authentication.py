"""Token authentication that loads the caller's organization with the token, through the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import router
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from rest_framework import HTTP_HEADER_ENCODING, exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from emissions.models import Membership, Organization
from perf import keyset_sql
from perf.cache import GLOBAL_AUTH, digest, tiered, writing
from perf.codec import model_from_row
from perf.throttle import failed_authentication, failures_exhausted

# What a request needs of the user; the password hash, among others, never enters the cache
# (the rebuilt user defers the rest and would load it on access).
USER_FIELDS = ("id", "username", "first_name", "last_name", "email", "is_staff", "is_active", "is_superuser")


def _row_paths(prefix: str, model: type[Model], fields: Sequence[str] | None = None) -> list[str]:
    """``values_list`` paths reading what ``model_row(instance, fields)`` holds, in its order (a foreign key by its
    name reads the related row's id: the attname's value)."""
    return [prefix + f.name for f in model._meta.concrete_fields if fields is None or f.attname in fields]


# The token query's columns: the token's creation time, then the rows model_row makes of its user (USER_FIELDS),
# the user's membership and the membership's organization (NULL through the outer join when there is none).
_USER_PATHS = _row_paths("user__", User, USER_FIELDS)
_MEMBERSHIP_PATHS = _row_paths("user__membership__", Membership)
_ORGANIZATION_PATHS = _row_paths("user__membership__organization__", Organization)
_TOKEN_PATHS = ("created", *_USER_PATHS, *_MEMBERSHIP_PATHS, *_ORGANIZATION_PATHS)


def _token_query(key: Any) -> QuerySet[Token, tuple[Any, ...]]:
    return Token.objects.filter(key=key).values_list(*_TOKEN_PATHS)[:1]


def _token_row(key: str) -> list[Any] | None:
    """The token's user, membership and organization as cacheable rows (one query); None if unknown.

    The query's SQL is compiled once per process and database (``perf.keyset_sql``), the key bound per call: with
    the cache off, or on a miss, building and compiling it each time cost more than PostgreSQL takes to run it."""
    using = router.db_for_read(Token)
    kept = keyset_sql.compiled(
        (_TOKEN_SHAPE, using), lambda: _token_query(keyset_sql.Slot("", _KEY_FIELD, 0)).using(using)
    )
    rows = list(_token_query(key).using(using)) if kept is None else keyset_sql.execute(kept, [key], using)
    if not rows:
        return None
    row = rows[0]
    users, memberships = 1 + len(_USER_PATHS), 1 + len(_USER_PATHS) + len(_MEMBERSHIP_PATHS)
    membership = list(row[users:memberships])
    if membership[0] is None:  # no membership: the outer join's NULLs
        return [row[0], list(row[1:users]), None, None]
    return [row[0], list(row[1:users]), membership, list(row[memberships:])]


_TOKEN_SHAPE = "emissions.api.authentication.token"
_KEY_FIELD = Token._meta.get_field("key")


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


def peek_token_row(key: str) -> list[Any] | None:
    """``cached_token_row(key)`` when the cache holds it, without computing: None otherwise, or while this
    transaction has written auth rows (its reads bypass the cache)."""
    if writing([GLOBAL_AUTH]):
        return None
    # A miss is counted by DRF's authentication, which looks again and computes (no double count).
    return tiered().get([GLOBAL_AUTH], _token_cache_key(key), count_misses=False)


def _too_many_failures(wait: float) -> exceptions.Throttled:
    return exceptions.Throttled(wait, detail="Too many failed authentications from your address.")


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
    The membership row holds the role (``emissions.api.permissions.RoleAllows``), so a role change (a save of the
    membership) bumps ``auth`` too. Failed authentications are counted per client address (``authenticate``).
    """

    def authenticate(self, request: Request | HttpRequest) -> tuple[Any, Any] | None:
        """DRF's ``authenticate``; a failure is counted per client address (``perf.throttle``, scope
        ``auth_failures``), and answered 429 instead of 401 once the address is over its limit (DRF checks
        throttles only after authenticating).

        Over the limit, a token is accepted only if its row is cached; any other is answered 429 without being
        looked up in the database. A legitimate client's token is normally cached (it was used lately), so it
        keeps working from an address it shares with a client guessing tokens; a guess costs the server no query
        and learns nothing (429, not 401 or 200), even when it is right.
        """
        try:
            return self._authenticate(request, lambda key: self._row_unless_exhausted(request, key))
        except exceptions.AuthenticationFailed:
            wait = failed_authentication(request)
            if wait is None:
                raise
            raise _too_many_failures(wait) from None

    @staticmethod
    def _row_unless_exhausted(request: Request | HttpRequest, key: str) -> list[Any] | None:
        """The token's row from the cache; else, unless ``request``'s address is over its failure limit (429),
        from the database (``cached_token_row``)."""
        row = peek_token_row(key)
        if row is not None:
            return row
        wait = failures_exhausted(request)
        if wait is not None:
            raise _too_many_failures(wait)
        return cached_token_row(key)

    def authenticate_cached(self, request: HttpRequest) -> tuple[Any, Any] | None:
        """``authenticate(request)`` from the cache alone (``perf.fastpath.CachedAuthentication``): None when it
        would answer None or fail, or when the token's row is not cached."""
        try:
            return self._authenticate(request, peek_token_row)
        except exceptions.AuthenticationFailed:
            return None

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        return self._credentials(key, cached_token_row(key))

    def _authenticate(
        self, request: Request | HttpRequest, token_row: Callable[[str], list[Any] | None]
    ) -> tuple[Any, Any] | None:
        """DRF's ``TokenAuthentication.authenticate`` with the token's row from ``token_row``. The header is read
        from ``META``: DRF's ``get_authorization_header`` builds ``request.headers`` (a parse of every header)."""
        header = request.META.get("HTTP_AUTHORIZATION", b"")
        auth = (header.encode(HTTP_HEADER_ENCODING) if isinstance(header, str) else header).split()
        if not auth or auth[0].lower() != self.keyword.lower().encode():
            return None
        if len(auth) == 1:
            raise exceptions.AuthenticationFailed(_("Invalid token header. No credentials provided."))
        if len(auth) > 2:
            raise exceptions.AuthenticationFailed(_("Invalid token header. Token string should not contain spaces."))
        try:
            key = auth[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header. Token string should not contain invalid characters.")
            ) from None
        return self._credentials(key, token_row(key))

    def _credentials(self, key: str, row: list[Any] | None) -> tuple[Any, Any]:
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = _rebuild(key, row)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (user, token)
