"""Conditional GET and response caching for DRF read endpoints.

A view that mixes in ``CachedResponseMixin`` names the namespaces its responses are read from.
For each GET it computes, before the view body runs, a key and ETag from those namespaces'
versions and the request (organization, scheme and host, path, query, media type, and the
cache's key version: ``CACHE_VERSION`` plus the models' schema). Then:

- the body comes from the two-level cache (``perf.cache``) under that key when the view keeps it
  there (``cache_body``: first pages, summaries, details, made only of parameters the view knows;
  deep cursor pages from their second request, ``kept_on_repeat``), else from the view;
- a matching ``If-None-Match`` (or, without one, an ``If-Modified-Since`` not older than the
  namespaces' last change) turns the answer into ``304 Not Modified``. Preconditions are checked
  against a 200 only (RFC 9110 13.2.1): a request that would be a 404 or a 400 gets that, never a
  304. With the body and the authentication cached, a 304 costs no database query.

A hit needs none of DRF's request machinery: ``dispatch`` first tries to answer it before DRF
(``perf.fastpath``, whose docstring states that path's contract), from the entry this module's
path stores under the same key.

Every response carries ``ETag``, ``Cache-Control: private, max-age=<CACHE_MAX_AGE[resource]>``
and ``Vary: Authorization, Accept, Accept-Encoding``; ``Last-Modified`` only once it is safe
(``_last_modified``). A cached body of ``CACHE_GZIP_MIN_BYTES`` or more is kept in gzip form too
(compressed once, when stored) and served as such to clients that accept gzip, with its own ETag.
Only JSON is cached; other renderings (the browsable API) pass through untouched.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.utils.http import http_date
from django.utils.text import compress_string
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from perf import admission, fastpath
from perf.cache import Namespace, Version, digest, tiered, writing
from perf.fastpath import raw_target


def _last_modified(versions: tuple[Version, ...], l1_ttl: float, *, now: float | None = None) -> int | None:
    """The namespaces' last change (epoch seconds), once it is safe to send; else None.

    HTTP dates have whole seconds. Another write in the same second would carry the same date, and
    another worker may still serve the older version for ``l1_ttl`` seconds after a write: a client
    holding that worker's date would then get 304s for stale data. So the date is sent only when its
    second plus ``l1_ttl`` is over, by which time every worker has moved on; clocks a second apart
    are covered by the same margin.
    """
    changed_at = int(max(v.changed_at for v in versions))
    if (time.time() if now is None else now) < changed_at + 1 + l1_ttl:
        return None
    return changed_at


# The request headers get_conditional_response reads (WSGI names): without any of them it answers None.
PRECONDITION_HEADERS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE")
# Responses differ by caller, negotiated media type and content coding.
VARY = "Authorization, Accept, Accept-Encoding"
# Part of every response key: the layout of a cached entry ([status, content type, body, gzip form]).
ENTRY_FORMAT = 2


@functools.lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value lets the server send gzip: ``gzip`` (or ``x-gzip``) listed
    with a q-value above 0 (RFC 9110 12.5.3; ``gzip;q=0`` refuses it). ``*`` is not taken as gzip."""
    for coding in accept_encoding.split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() not in ("gzip", "x-gzip"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        return q > 0
    return False


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    # Versions change rarely: the same few dates are formatted over and over.
    return http_date(seconds)


class _NotCacheable(Exception):
    """The view answered something other than a 200 Response: hand it back untouched."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a request's cache key and body depend on, but for the namespaces' versions."""

    namespaces: list[Namespace]
    static: str  # digest of the key's parts other than the versions
    cache_body: bool
    on_repeat: bool  # the body is stored only once the same request was asked before (``kept_on_repeat``)

    def key(self, versions: tuple[Version, ...]) -> str:
        """The response's cache key and ETag: the static parts and the namespaces' versions."""
        # One hash over the digest and the versions (values are digits, dots and letters: "|" separates).
        text = "|".join([self.static, *(v.value for v in versions)])
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# First in the shape of a plan kept with TieredCache.set_local: no other process-local value has it.
_PLAN = "conditional.plan"
# First in the shape of the note that a request was asked for (``kept_on_repeat``).
_ASKED = "conditional.asked"
# The settings get_host() depends on: a plan made under others may name a host they refuse.
HOST_SETTINGS = frozenset({"ALLOWED_HOSTS", "USE_X_FORWARDED_HOST", "USE_X_FORWARDED_PORT", "DEBUG"})


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in HOST_SETTINGS:
        tiered().clear_local()  # plans and the answers kept from them


setting_changed.connect(_on_setting_changed)


class CachedResponseMixin:
    """ETag / 304 and a two-level response cache for a DRF view's GET handlers.

    Subclasses set ``cache_resource`` (the ``CACHE_MAX_AGE`` key), list in ``cached_actions`` the actions
    whose GETs go through ``cached_response``, and implement ``cache_namespaces(organization_id)`` and
    ``caller_organization_id(request)``; precondition for the latter: the request is authenticated and
    the view's permissions have passed (it reads ``request.user`` only: ``perf.fastpath`` calls it too).
    """

    cache_resource: str = ""
    # Actions whose GETs go through ``cached_response``, and so may be answered by ``perf.fastpath``.
    cached_actions: tuple[str, ...] = ()

    # A GET here waits for a turn in the cached lane, not for a place among the requests that compute
    # (AdmissionMiddleware); dispatch takes a place only for what the fast path cannot answer (perf.admission).
    admission_after_cache = True

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = fastpath.answer(self, request, kwargs)
        if response is not None:
            return response
        if not admission.admit(request):
            return admission.refusal(admission.IN_FLIGHT)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        raise NotImplementedError

    def caller_organization_id(self, request: Any) -> int:
        """The caller's organization, once DRF has authenticated the request and checked permissions."""
        raise NotImplementedError

    def caches(self, renderer: BaseRenderer) -> bool:
        """Whether responses rendered by ``renderer`` are cached: JSON only (both paths ask)."""
        return isinstance(renderer, JSONRenderer)

    # Query parameters a cached body may vary by, besides the filterset's filters and the pagination's own.
    cache_query_params: tuple[str, ...] = ("format",)

    def known_query_params(self) -> set[str]:
        # Read per action (an @action sets its own pagination_class), once per plan.
        filterset = getattr(self, "filterset_class", None)
        pagination = getattr(self, "pagination_class", None)
        names = set(self.cache_query_params)
        if filterset is not None:
            names |= set(filterset.base_filters)
        for attr in ("limit_query_param", "after_query_param", "before_query_param"):
            if pagination is not None and getattr(pagination, attr, None):
                names.add(getattr(pagination, attr))
        return names

    def cache_body(self, request: HttpRequest | Request) -> bool:
        """Whether this request's body is kept in the cache (else only its ETag is computed).

        Only requests made of parameters the view knows: anything else (``?x=1``, ``?x=2``, ...) would
        make every request a new key, letting one client fill the cache with copies of one page.
        """
        return self.known_query_params().issuperset(request.GET)

    def kept_on_repeat(self, request: HttpRequest | Request) -> bool:
        """Whether this request's body (when ``cache_body``) is stored only once the same request was asked for
        before in this worker (``asked_before``), so that what is read once never displaces what is read often."""
        return False

    def _asked_shape(self, request: HttpRequest) -> tuple[Any, ...]:
        return (_ASKED, type(self), getattr(self, "action", None), *raw_target(request))

    def asked_before(self, request: HttpRequest) -> bool:
        """Whether the same request (view, action, URL as sent) was asked for in this worker within ``CACHE_L2_TTL``.

        Kept per URL, not per caller: it only decides whether a body is worth storing; what is stored is keyed
        by organization as always."""
        return bool(tiered().get_local(self._asked_shape(request)))

    def _note_asked(self, request: HttpRequest) -> None:
        cache = tiered()
        cache.set_local(
            self._asked_shape(request), True, nbytes=256 + len(request.META.get("QUERY_STRING", "")), ttl=cache.l2_ttl
        )

    def cached_response(self, request: Request, produce: Callable[[], HttpResponseBase]) -> HttpResponseBase:
        """``produce()``'s response, or a 304, or the cached body of an identical earlier request."""
        if not settings.CACHE_ENABLED or not self.caches(request.accepted_renderer):
            return produce()
        cache = tiered()
        plan = self._plan(
            request._request,
            self.caller_organization_id(request),
            request.accepted_media_type,
            raw_target(request._request),
        )
        namespaces = plan.namespaces
        if writing(namespaces):
            return produce()  # inside a transaction that wrote them: its view of the data is its own
        versions = cache.versions(namespaces)
        key = plan.key(versions)
        try:
            # The body first (from the cache when it is kept there: no query), then the preconditions: they
            # apply only to what would be a 200 (RFC 9110 13.2.1), never to a 404 or 400.
            if plan.cache_body and plan.on_repeat and not self.asked_before(request._request):
                # Asked for the first time here: another worker may have kept it; else computed, noted, not stored.
                entry = cache.get(namespaces, f"response:{key}", versions=versions)
                if entry is None:
                    self._note_asked(request._request)
                    entry = self._render(request, produce())
            elif plan.cache_body:
                entry = cache.get_or_compute(
                    namespaces,
                    f"response:{key}",
                    lambda: self._render(request, produce(), compress=True),
                    versions=versions,
                )
            else:
                entry = self._render(request, produce())
        except _NotCacheable as exc:
            return exc.response
        return self._respond(request._request, entry, key, versions, cache.l1_ttl)

    # -- shared --------------------------------------------------------------------------------

    def _plan(self, request: HttpRequest, organization_id: int, media_type: str, target: tuple[Any, ...]) -> _Plan:
        """The request's plan: kept in this process (``TieredCache.set_local``) per request shape (view, action,
        organization, key version, raw target, media type), so parsing the query, the namespaces and hashing the
        key's static parts are done once per shape. Preconditions: ``self.action`` is set; ``target`` is
        ``raw_target(request)``."""
        cache = tiered()
        shape = (
            _PLAN,
            type(self),
            getattr(self, "action", None),
            organization_id,
            cache.key_version,
            *target,
            media_type,
        )
        plan: _Plan | None = cache.get_local(shape)
        if plan is None:
            # get_host() validates the host (ALLOWED_HOSTS) and costs more than the memo lookup: called once
            # per shape, whose raw host fields it reads. A plan exists only for a host that passed.
            scheme, host, path = request.scheme, request.get_host(), request.path
            namespaces = self.cache_namespaces(organization_id)
            query = sorted(request.GET.lists())
            static = digest(
                cache.key_version, ENTRY_FORMAT, [ns.key for ns in namespaces], scheme, host, path, query, media_type
            )
            plan = _Plan(namespaces, static, self.cache_body(request), self.kept_on_repeat(request))
            # Counted at about what a plan, its namespaces and its shape (path and query included) hold.
            cache.set_local(shape, plan, nbytes=1024 + len(request.path) + len(str(target[-1])))
        return plan

    def _respond(
        self, request: HttpRequest, entry: list[Any], key: str, versions: tuple[Version, ...], l1_ttl: float
    ) -> HttpResponseBase:
        """The cached 200 ``entry`` (gzip-encoded when it has that form and the client accepts it), or a 304
        when the request's preconditions match that representation."""
        status, content_type, body, gzipped = entry
        if gzipped is not None and not accepts_gzip(request.META.get("HTTP_ACCEPT_ENCODING", "")):
            gzipped = None
        # Each representation has its own strong ETag (RFC 9110 8.8.3): the gzip form's bytes differ.
        etag = f'"{key}-gzip"' if gzipped is not None else f'"{key}"'
        last_modified = _last_modified(versions, l1_ttl)
        meta = request.META
        if any(header in meta for header in PRECONDITION_HEADERS):
            not_modified = get_conditional_response(request, etag=etag, last_modified=last_modified)
            if not_modified is not None:
                return self._headers(not_modified, etag, last_modified)
        if gzipped is None:
            response = HttpResponse(body, status=status, content_type=content_type)
        else:
            response = HttpResponse(gzipped, status=status, content_type=content_type)
            response.headers["Content-Encoding"] = "gzip"
        return self._headers(response, etag, last_modified)

    def _render(self, request: Request, response: HttpResponseBase, *, compress: bool = False) -> list[Any]:
        """``[status, content type, body, gzip form of the body or None]`` of a 200 DRF response.

        ``compress``: the entry is kept in the cache, so its gzip form is made once here
        (``CACHE_GZIP_MIN_BYTES`` and up, when it is smaller) instead of on every response.
        """
        if not isinstance(response, Response) or response.status_code != 200:
            raise _NotCacheable(response)
        # What APIView.finalize_response and Django's handler would do, done here so the bytes can be kept.
        response.accepted_renderer = request.accepted_renderer
        response.accepted_media_type = request.accepted_media_type
        response.renderer_context = self.get_renderer_context()  # type: ignore[attr-defined]
        response.render()
        body = response.content
        gzipped = None
        if compress and settings.CACHE_GZIP_MIN_BYTES and len(body) >= settings.CACHE_GZIP_MIN_BYTES:
            gzipped = compress_string(body)
            if len(gzipped) >= len(body):
                gzipped = None
        return [response.status_code, response["Content-Type"], body, gzipped]

    def _headers(self, response: HttpResponseBase, etag: str, last_modified: int | None) -> HttpResponseBase:
        """ETag, Last-Modified, Cache-Control and Vary. Precondition: ``response`` is new (has none of them)."""
        headers = response.headers
        headers["ETag"] = etag
        if last_modified is not None:
            headers["Last-Modified"] = _http_date(last_modified)
        headers["Cache-Control"] = f"private, max-age={settings.CACHE_MAX_AGE.get(self.cache_resource, 0)}"
        headers["Vary"] = VARY
        return response


class CachedReadMixin(CachedResponseMixin):
    """``list`` and ``retrieve`` through ``cached_response``.

    ``deep_pages_on_repeat``: keep a deep cursor page's body only from its second request in a worker
    (``kept_on_repeat``; none at all with ``CACHE_DEEP_PAGES`` off). A client scanning a large list
    reads each page once, and storing those would only crowd out the rest; but people page on from
    the same popular first pages, so the same next pages come back (at 500 users, 82 % of the
    emissions list's next-page requests named a page asked for in the previous two minutes). Every
    page gets an ETag either way.
    """

    deep_pages_on_repeat = False
    cursor_params = ("after", "before")

    cached_actions: tuple[str, ...] = ("list", "retrieve")

    def _deep_list_page(self, request: HttpRequest | Request) -> bool:
        return (
            self.deep_pages_on_repeat
            and getattr(self, "action", None) == "list"
            and any(request.GET.get(param) for param in self.cursor_params)
        )

    def cache_body(self, request: HttpRequest | Request) -> bool:
        if not settings.CACHE_DEEP_PAGES and self._deep_list_page(request):
            return False
        return super().cache_body(request)

    def kept_on_repeat(self, request: HttpRequest | Request) -> bool:
        return self._deep_list_page(request)

    # Annotated Any: DRF's mixins promise a Response, these return a plain HttpResponse for cached bodies and 304s.
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return self.cached_response(request, lambda: super(CachedReadMixin, self).list(request, *args, **kwargs))  # type: ignore[misc]

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return self.cached_response(request, lambda: super(CachedReadMixin, self).retrieve(request, *args, **kwargs))  # type: ignore[misc]
