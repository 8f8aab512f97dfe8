"""Conditional GET and response caching for DRF read endpoints.

A view that mixes in ``CachedResponseMixin`` names the namespaces its responses are read from.
For each GET it computes, before the view body runs, a key and ETag from those namespaces'
versions and the request (organization, scheme and host, path, query, media type, and the
cache's key version: ``CACHE_VERSION`` plus the models' schema). Then:

- the body comes from the two-level cache (``perf.cache``) under that key when the view keeps it
  there (``cache_body``: first pages, summaries, details, made only of parameters the view knows),
  else from the view;
- a matching ``If-None-Match`` (or, without one, an ``If-Modified-Since`` not older than the
  namespaces' last change) turns the answer into ``304 Not Modified``. Preconditions are checked
  against a 200 only (RFC 9110 13.2.1): a request that would be a 404 or a 400 gets that, never a
  304. With the body and the authentication cached, a 304 costs no database query.

Every response carries ``ETag``, ``Cache-Control: private, max-age=<CACHE_MAX_AGE[resource]>``
and ``Vary: Authorization, Accept``; ``Last-Modified`` only once it is safe (``_last_modified``).
Only JSON is cached; other renderings (the browsable API) pass through untouched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response, patch_cache_control, patch_vary_headers
from django.utils.http import http_date
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from perf.cache import Namespace, Version, digest, tiered, writing


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


class _NotCacheable(Exception):
    """The view answered something other than a 200 Response: hand it back untouched."""

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response


class CachedResponseMixin:
    """ETag / 304 and a two-level response cache for a DRF view's GET handlers.

    Subclasses set ``cache_resource`` (the ``CACHE_MAX_AGE`` key) and implement
    ``cache_namespaces()``; precondition for both: the request is authenticated and
    ``HasOrganization`` has passed (they read the caller's organization).
    """

    cache_resource: str = ""

    def cache_namespaces(self) -> list[Namespace]:
        raise NotImplementedError

    # Query parameters a cached body may vary by, besides the filterset's filters and the pagination's own.
    cache_query_params: tuple[str, ...] = ("format",)

    def known_query_params(self) -> set[str]:
        names = set(self.cache_query_params)
        filterset = getattr(self, "filterset_class", None)
        if filterset is not None:
            names |= set(filterset.base_filters)
        pagination = getattr(self, "pagination_class", None)
        for attr in ("limit_query_param", "after_query_param", "before_query_param"):
            if pagination is not None and getattr(pagination, attr, None):
                names.add(getattr(pagination, attr))
        return names

    def cache_body(self, request: Request) -> bool:
        """Whether this request's body is kept in the cache (else only its ETag is computed).

        Only requests made of parameters the view knows: anything else (``?x=1``, ``?x=2``, ...) would
        make every request a new key, letting one client fill the cache with copies of one page.
        """
        return set(request.query_params) <= self.known_query_params()

    def cached_response(self, request: Request, produce: Callable[[], HttpResponseBase]) -> HttpResponseBase:
        """``produce()``'s response, or a 304, or the cached body of an identical earlier request."""
        if not settings.CACHE_ENABLED or not isinstance(request.accepted_renderer, JSONRenderer):
            return produce()
        cache = tiered()
        namespaces = self.cache_namespaces()
        if writing(namespaces):
            return produce()  # inside a transaction that wrote them: its view of the data is its own
        versions = cache.versions(namespaces)
        key = digest(
            cache.key_version,
            [ns.key for ns in namespaces],
            [v.value for v in versions],
            request.scheme,
            request.get_host(),
            request.path,
            sorted(request.query_params.lists()),
            request.accepted_media_type,
        )
        etag = f'"{key}"'
        last_modified = _last_modified(versions, cache.l1_ttl)
        try:
            # The body first (from the cache when it is kept there: no query), then the preconditions: they
            # apply only to what would be a 200 (RFC 9110 13.2.1), never to a 404 or 400.
            if self.cache_body(request):
                entry = cache.get_or_compute(namespaces, f"response:{key}", lambda: self._render(request, produce()))
            else:
                entry = self._render(request, produce())
        except _NotCacheable as exc:
            return exc.response
        not_modified = get_conditional_response(request._request, etag=etag, last_modified=last_modified)
        if not_modified is not None:
            return self._headers(not_modified, etag, last_modified)
        status, content_type, body = entry
        return self._headers(HttpResponse(body, status=status, content_type=content_type), etag, last_modified)

    def _render(self, request: Request, response: HttpResponseBase) -> list[Any]:
        if not isinstance(response, Response) or response.status_code != 200:
            raise _NotCacheable(response)
        # What APIView.finalize_response and Django's handler would do, done here so the bytes can be kept.
        response.accepted_renderer = request.accepted_renderer
        response.accepted_media_type = request.accepted_media_type
        response.renderer_context = self.get_renderer_context()  # type: ignore[attr-defined]
        response.render()
        return [response.status_code, response["Content-Type"], response.content]

    def _headers(self, response: HttpResponseBase, etag: str, last_modified: int | None) -> HttpResponseBase:
        response.headers["ETag"] = etag
        if last_modified is not None:
            response.headers["Last-Modified"] = http_date(last_modified)
        patch_cache_control(response, private=True, max_age=settings.CACHE_MAX_AGE.get(self.cache_resource, 0))
        patch_vary_headers(response, ("Authorization", "Accept"))
        return response


class CachedReadMixin(CachedResponseMixin):
    """``list`` and ``retrieve`` through ``cached_response``.

    ``cache_first_page_only``: keep only first pages' bodies (deep cursor pages of a large list
    are read once each; caching them would only crowd out the rest). Every page still gets an ETag.
    """

    cache_first_page_only = False
    cursor_params = ("after", "before")

    def cache_body(self, request: Request) -> bool:
        deep_page = any(request.query_params.get(param) for param in self.cursor_params)
        if self.cache_first_page_only and getattr(self, "action", None) == "list" and deep_page:
            return False
        return super().cache_body(request)

    # Annotated Any: DRF's mixins promise a Response, these return a plain HttpResponse for cached bodies and 304s.
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return self.cached_response(request, lambda: super(CachedReadMixin, self).list(request, *args, **kwargs))  # type: ignore[misc]

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return self.cached_response(request, lambda: super(CachedReadMixin, self).retrieve(request, *args, **kwargs))  # type: ignore[misc]
