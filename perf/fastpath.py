"""Cached GETs answered before DRF's request cycle, decided by the view's own declared classes.

``answer`` runs first on every request to a cached read view (from
``perf.conditional.CachedResponseMixin.dispatch``). DRF's per-request work (its ``Request``, negotiation,
authentication rebuilding the caller, permissions, finalizing) costs more than serving a cached
body, so a request this module can decide exactly as DRF would is answered here, from the entry
DRF's path stored; any other goes to ``APIView.dispatch`` untouched.

**What it answers.** A GET routed to one of the view's ``cached_actions`` whose body the cache
already holds (``cache_body``: first pages, summaries, details, deep pages asked for before) under the key DRF's path
computes (``CachedResponseMixin._plan``): the cached 200, or a 304 when the request's
preconditions match it, built by the same ``_respond`` as DRF's path, plus what DRF's
``finalize_response`` adds (``Allow``, ``Vary``).

**What it always hands to DRF.** Every other method (HEAD and OPTIONS too); a request whose body the
cache does not keep (``cache_body``) or a deep page not asked for before in this worker (``kept_on_repeat``),
at once, before reading the caller; a miss (DRF
computes and stores); a request DRF would refuse (401, 403, 406, 404 for an unknown format, 429); a rendering
the cache does not keep (the browsable API); a transaction that wrote the namespaces or the
``auth`` rows; and every request to a view whose declared classes this module cannot evaluate
as DRF does. The decision is made with the view's own classes, through its DRF getters:

- authentication: the first of ``get_authenticators()`` must implement ``CachedAuthentication``
  (its ``authenticate`` rule read from the cache only) and identify the caller. DRF stops at the
  first class that does, so the later ones never matter; a class that answers None or fails, or
  any other first class (``SessionAuthentication``), hands the request to DRF;
- permissions: every one of ``get_permissions()`` must be caller-only (``caller_only``: DRF's
  ``AllowAny``, ``IsAuthenticated`` and ``IsAdminUser``, or a ``has_permission`` marked
  ``@caller_only``); their own ``has_permission`` runs here on the authenticated caller, and a
  refusal is DRF's to answer. ``caller_organization_id`` runs on the same caller;
- negotiation: ``get_content_negotiator().select_renderer`` over ``get_renderers()``: DRF's code
  on the request's ``Accept`` header, ``?format=`` and format suffix;
- throttles: every one of ``get_throttles()`` must be caller-only (an ``allow_request`` marked ``@caller_only``,
  as ``perf.throttle.CountedThrottle``'s: it reads the caller, the method, ``META`` and headers, the view's class
  declarations and a counter shared by every worker, and keeps its outcome on the request). Fresh instances run
  here on every request this module answers, kept answers included, once the caller, its permissions and the
  negotiation have passed (DRF runs them last too, so a request it refuses earlier is never counted); a refusal is
  DRF's to answer (429), from the outcome kept on the request, so a request is counted once. Any other throttle
  sends the view to DRF (a throttle must see every request);
- versioning: a view declaring any goes to DRF;
- the request cycle: a view class overriding any method of ``APIView`` outside DRF (but
  ``dispatch``, which calls this) goes to DRF, since this module stands in for DRF's ``initial``.

**Why it is equivalent.** Each decision is DRF's code or the declared class's own method, on the same inputs;
the key and the body are ``cached_response``'s, so both paths serve the same entries; what
``finalize_response`` adds to a plain response depends on the view's configuration only, so it is computed by
running it once per configuration (``_Policy``, which also keeps the classes' instances: the ones evaluated
here hold no per-request state; throttles, which do, are instantiated per request).
``tests/perf/test_fastpath.py`` swaps the classes of every cached view in the URLconf and compares both paths'
answers.

**Kept answers.** An answer served here is also kept in this process (``TieredCache.set_local``:
L1's lifetime and byte budget) under everything its decision read: the view's configuration and
action, the ``Authorization`` and ``Accept`` headers, scheme, host, path and query. A repeat is
answered from it while the ``auth`` namespace (the caller's rows, per ``CachedAuthentication``'s
contract) and the response's namespaces keep the versions it was made under. The throttles are no part of
what is kept: they run again on every repeat, on the caller the answer keeps (the same while ``auth`` keeps its
version). ``CACHE_FAST_PATH=0`` switches the module off.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny, IsAdminUser, IsAuthenticated
from rest_framework.settings import api_settings

from perf.cache import GLOBAL_AUTH, Namespace, Version, tiered, writing

if TYPE_CHECKING:
    from rest_framework.renderers import BaseRenderer


@runtime_checkable
class CachedAuthentication(Protocol):
    """An authentication class that can decide from the raw request and the cache, as its ``authenticate`` does."""

    def authenticate_cached(self, request: HttpRequest) -> tuple[Any, Any] | None:
        """``authenticate(request)``'s ``(user, auth)``, decided by the same code without a database query;
        None when ``authenticate`` would answer None or fail, or when the cache does not hold what it needs.

        Contract: the answer depends only on the request's ``Authorization`` header and on rows whose
        changes bump the ``auth`` namespace (``perf.cache.GLOBAL_AUTH``); kept answers rely on it.
        """
        ...


F = TypeVar("F", bound=Callable[..., Any])
_CALLER_ONLY = "caller_only"
# DRF's own permissions whose has_permission reads nothing but request.user.
DRF_CALLER_ONLY = frozenset({AllowAny.has_permission, IsAuthenticated.has_permission, IsAdminUser.has_permission})


def caller_only(method: F) -> F:
    """Mark a ``has_permission(request, view)`` that reads nothing of the request but ``user``, ``auth`` and
    ``method``, nor of the view but its declarations (the methods it serves): this module may then evaluate it on
    the caller ``CachedAuthentication`` found (the method is GET, which the view serves). It may refuse by returning
    False or by raising an ``APIException``.

    Or a throttle's ``allow_request(request, view)`` that reads nothing of the request but those, ``META`` and
    ``headers``, of the view only its class's declarations, and whose other state is shared by every worker and
    keeps each request's outcome on ``request._request`` (``perf.throttle.CountedThrottle``)."""
    setattr(method, _CALLER_ONLY, True)
    return method


def _is_caller_only(instance: Any, name: str = "has_permission") -> bool:
    # The method the class resolves to: a subclass overriding a marked method is not trusted.
    method = getattr(type(instance), name, None)
    return method in DRF_CALLER_ONLY or getattr(method, _CALLER_ONLY, False)


class _Caller:
    """What this module hands to the declared classes instead of DRF's ``Request``: the authenticated
    caller and the method (always GET here) for permissions and ``caller_organization_id``, the headers and query
    for negotiation."""

    __slots__ = ("META", "_request", "auth", "headers", "method", "query_params", "user")

    def __init__(self, user: Any, auth: Any, request: HttpRequest) -> None:
        self.user, self.auth, self.headers, self.query_params = user, auth, request.headers, request.GET
        # As DRF's Request: the client address for throttles, and the request they keep their outcomes on.
        self.META, self._request = request.META, request
        self.method = "GET"


@dataclass(frozen=True, eq=False, slots=True)
class _Policy:
    """A view configuration's declared classes, instantiated through the view's getters, when all are evaluable."""

    authenticator: CachedAuthentication
    permissions: list[Any]
    throttles: tuple[type, ...]  # instantiated per request, as DRF does: a throttle holds its request's wait
    negotiator: Any
    renderers: list[BaseRenderer]
    headers: dict[str, str]  # what finalize_response adds to a response as _respond leaves it


# Policies by view configuration (class, action, declared classes): a few per view, made once each.
_POLICIES: dict[tuple[Any, ...], _Policy | None] = {}


def _own_request_cycle(cls: type) -> bool:
    """Whether ``cls`` overrides a method of ``APIView`` outside DRF. Not ``dispatch``: this runs from there, and
    an override's own code runs before this, as it would before DRF's."""
    # Imported here: DRF's views module loads the default permission classes, which import this module.
    from rest_framework.views import APIView

    for name, value in vars(APIView).items():
        if name == "dispatch" or not (inspect.isfunction(value) or isinstance(value, property)):
            continue
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        if not owner.__module__.startswith("rest_framework."):
            return True
    return False


def _policy(view: Any) -> _Policy | None:
    """``view``'s policy (memoized per configuration), or None when it declares a class this module does not
    evaluate as DRF does. Precondition: ``view.action`` is set (its getters may read it)."""
    config = (
        type(view),
        view.action,
        tuple(view.authentication_classes),
        tuple(view.permission_classes),
        tuple(view.throttle_classes),
        tuple(view.renderer_classes),
        view.content_negotiation_class,
        view.versioning_class,
    )
    try:
        return _POLICIES[config]
    except KeyError:
        pass
    policy = None
    authenticators = view.get_authenticators()
    permissions = view.get_permissions()
    throttles = view.get_throttles()
    if (
        not _own_request_cycle(type(view))
        and all(_is_caller_only(throttle, "allow_request") for throttle in throttles)
        and view.versioning_class is None
        and authenticators
        and isinstance(authenticators[0], CachedAuthentication)
        and all(_is_caller_only(permission) for permission in permissions)
    ):
        probe = view._headers(HttpResponse(), '""', None)
        before = dict(probe.items())
        view.headers = view.default_response_headers
        view.finalize_response(None, probe)  # DRF's own: for a plain HttpResponse it reads only view.headers
        added = {name: value for name, value in probe.items() if before.get(name) != value}
        policy = _Policy(
            authenticators[0],
            permissions,
            tuple(type(throttle) for throttle in throttles),
            view.get_content_negotiator(),
            view.get_renderers(),
            added,
        )
    _POLICIES[config] = policy
    return policy


# What HttpRequest.get_host() reads of the request (whichever USE_X_FORWARDED_* says).
HOST_META = ("HTTP_X_FORWARDED_HOST", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "HTTP_X_FORWARDED_PORT")


def raw_target(request: HttpRequest) -> tuple[Any, ...]:
    """What a request's absolute URL is made of, as the request carries it: scheme, get_host()'s raw fields,
    path, raw query. Part of the shape of plans and kept answers; the host is not validated here."""
    meta = request.META
    return (request.scheme, *[meta.get(name) for name in HOST_META], request.path, meta.get("QUERY_STRING", ""))


@dataclass(frozen=True, slots=True)
class _Answer:
    """A cached 200 as served here, valid while ``namespaces`` (``auth``, then the plan's) keep ``versions``."""

    namespaces: tuple[Namespace, ...]
    versions: tuple[Version, ...]
    key: str
    entry: list[Any]
    caller: tuple[Any, Any]  # what authenticate_cached found: the throttles run on it at every repeat


# First in the shape of a kept answer: no other process-local value of the cache has it.
_ANSWER = "fastpath.answer"


def answer(view: Any, request: HttpRequest, kwargs: dict[str, Any]) -> HttpResponseBase | None:
    """The cached answer to ``request`` when this module can decide it as DRF would; None to go through DRF.

    Precondition: ``view`` is a ``CachedResponseMixin``, set up for ``request`` (``View.setup``), whose
    ``dispatch`` this is called from.
    """
    if request.method != "GET" or not settings.CACHE_ENABLED or not settings.CACHE_FAST_PATH:
        return None
    # As ViewSetMixin.initialize_request sets it: the getters, cache_body and cache_namespaces may read it.
    view.action = getattr(view, "action_map", {}).get("get")
    if view.action not in view.cached_actions:
        return None
    if not view.cache_body(request):
        # A body the cache never keeps (unknown parameters; a deep page with CACHE_DEEP_PAGES off): no plan nor kept
        # answer of this request can be answered here (the plan's cache_body is this), so the caller is not even read.
        return None
    if view.kept_on_repeat(request) and not view.asked_before(request):
        # A deep page not asked for before in this worker: DRF's path looks it up, computes and notes it.
        return None
    policy = _policy(view)
    if policy is None:
        return None
    cache = tiered()
    meta = request.META
    target = raw_target(request)
    shape = (_ANSWER, policy, meta.get("HTTP_AUTHORIZATION"), meta.get("HTTP_ACCEPT"), *target)
    kept: _Answer | None = cache.get_local(shape)
    if kept is not None and not writing(kept.namespaces):
        versions = cache.versions(kept.namespaces)
        if versions == kept.versions:
            if not _throttles_allow(policy, _Caller(*kept.caller, request), view):
                return None
            cache.count_local_hit(kept.namespaces[1:])
            return _reply(view, policy, request, kept.entry, kept.key, versions[1:])
    # The auth version before the caller is read: an answer kept under an older version than the caller was
    # read under is only ever found stale, never wrongly fresh.
    (auth_version,) = cache.versions([GLOBAL_AUTH])
    caller = policy.authenticator.authenticate_cached(request)
    if caller is None:
        return None
    decided = _Caller(*caller, request)
    try:
        if not all(permission.has_permission(decided, view) for permission in policy.permissions):
            return None
    except APIException:  # a refusal raised with its own message (PermissionDenied): DRF's to answer
        return None
    try:
        renderer, media_type = policy.negotiator.select_renderer(
            decided, policy.renderers, kwargs.get(api_settings.FORMAT_SUFFIX_KWARG)
        )
    except (APIException, Http404):
        return None
    if not _throttles_allow(policy, decided, view):
        return None
    if not view.caches(renderer):
        return None
    plan = view._plan(request, view.caller_organization_id(decided), media_type, target)
    if not plan.cache_body or writing(plan.namespaces):
        return None
    versions = cache.versions(plan.namespaces)
    key = plan.key(versions)
    # A miss is counted by DRF's path, which looks again and computes (no double count).
    entry = cache.get(plan.namespaces, f"response:{key}", versions=versions, count_misses=False)
    if entry is None:
        return None
    kept = _Answer((GLOBAL_AUTH, *plan.namespaces), (auth_version, *versions), key, entry, caller)
    cache.set_local(shape, kept, nbytes=sum(len(part) for part in entry[2:] if part is not None))
    return _reply(view, policy, request, entry, key, versions)


def _throttles_allow(policy: _Policy, caller: _Caller, view: Any) -> bool:
    """Whether every throttle lets the request through (each one counted, as DRF's ``check_throttles`` does)."""
    allowed = [throttle().allow_request(caller, view) for throttle in policy.throttles]
    return all(allowed)


def _reply(
    view: Any, policy: _Policy, request: HttpRequest, entry: list[Any], key: str, versions: tuple[Version, ...]
) -> HttpResponseBase:
    response = view._respond(request, entry, key, versions, tiered().l1_ttl)
    for name, value in policy.headers.items():
        response.headers[name] = value
    return response
