"""perf.fastpath: every cached view in the URLconf answers as DRF does, whatever classes it declares.

Each cached GET route of the URLconf is served by its view as declared and by variants declaring other
authentication, permission, renderer and throttle classes (and one overriding DRF's request cycle); each
variant answers the same requests with the path off (DRF alone) and on, and the answers must be equal.
With the declared classes the path must really answer (no DRF), so the comparison is not vacuous.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import RequestFactory, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django_redis import get_redis_connection
from rest_framework.authentication import SessionAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny, BasePermission, IsAdminUser, IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from emissions.api.authentication import OrgTokenAuthentication
from emissions.models import Membership
from perf import throttle
from perf.conditional import CachedResponseMixin
from perf.fastpath import _is_caller_only, caller_only
from perf.throttle import CountedThrottle
from tests.factories import EmissionFactory, MembershipFactory, SupplierFactory
from tests.helpers import APIClient, unit_of_work

pytestmark = pytest.mark.django_db


class Refuse(BasePermission):
    """A permission the path knows nothing about (not caller-only): DRF must decide."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return False


class SuperusersOnly(BasePermission):
    """A caller-only permission: the path evaluates it itself."""

    @caller_only
    def has_permission(self, request: Any, view: Any) -> bool:
        return bool(request.user and request.user.is_superuser)


class FirstRequestOnly(BaseThrottle):
    """Lets one request through, then throttles: a path that skipped it would answer the second."""

    seen = 0

    def allow_request(self, request: Any, view: Any) -> bool:
        FirstRequestOnly.seen += 1
        return FirstRequestOnly.seen == 1


class TextRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "txt"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return repr(data).encode()


class OnePerRun(CountedThrottle):
    """A counted throttle (caller-only) letting one request of each run through: the path evaluates it, and hands
    its refusals to DRF, which answers 429 from the outcome the path kept."""

    scope = "fastpath_test"
    run = 0

    def caller(self, request: Any, view: Any) -> str | None:
        return f"{request.user.pk}:{OnePerRun.run}"


def deny_all(self: APIView, request: Any) -> None:
    self.permission_denied(request, message="This view checks permissions its own way.")


VARIANTS: dict[str, dict[str, Any]] = {
    "as declared": {},
    "IsAdminUser": {"permission_classes": [IsAuthenticated, IsAdminUser]},
    "AllowAny": {"permission_classes": [AllowAny]},
    "a custom permission": {"permission_classes": [IsAuthenticated, Refuse]},
    "a caller-only custom permission": {"permission_classes": [SuperusersOnly]},
    "a throttle": {"throttle_classes": [FirstRequestOnly]},
    "a counted throttle": {"throttle_classes": [OnePerRun]},
    "a renderer before JSON": {"renderer_classes": [TextRenderer, JSONRenderer]},
    "JSON only": {"renderer_classes": [JSONRenderer]},
    "SessionAuthentication only": {"authentication_classes": [SessionAuthentication]},
    "session before token": {"authentication_classes": [SessionAuthentication, OrgTokenAuthentication]},
    "its own check_permissions": {"check_permissions": deny_all},
}
# The variants the path evaluates and answers itself (the others it declines, or refuses and lets DRF answer).
ANSWERED = {"as declared", "AllowAny", "JSON only"}
# The variants the path must leave to DRF on every request (it cannot know what they would decide).
DECLINED = {"a custom permission", "a throttle", "SessionAuthentication only", "session before token"}
DECLINED |= {"its own check_permissions"}


def cached_routes() -> list[tuple[str, Any]]:
    """``(url name, view function)`` of every route whose GET goes to a cached action (format suffixes aside)."""

    def walk(patterns: list[Any]) -> list[tuple[str, Any]]:
        found = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                found += walk(pattern.url_patterns)
                continue
            assert isinstance(pattern, URLPattern)
            view: Any = pattern.callback
            cls = getattr(view, "cls", None)
            if "format" in pattern.pattern.regex.groupindex or not (cls and issubclass(cls, CachedResponseMixin)):
                continue
            if pattern.name and view.actions.get("get") in cls.cached_actions:
                found.append((pattern.name, view))
        return found

    return walk(get_resolver().url_patterns)


ROUTES = cached_routes()
# What a route needs besides what the URLconf says: its required query and the objects its URL names.
QUERIES = {"summary": "?group_by=category", "inventory": "?year=2025"}


def test_the_urlconf_has_every_cached_view() -> None:
    names = {name for name, _ in ROUTES}
    assert {"emission-list", "emission-detail", "emission-summary", "activity-list", "factor-detail"} <= names
    assert {"supplier-list", "supplier-detail", "supplier-factor-list", "supplier-factor-detail"} <= names


@pytest.fixture
def objects(api, org) -> dict[str, int]:
    supplier = SupplierFactory.create(organization=org)
    body = {"name": "Hot-rolled coil", "unit": "kg", "co2e_per_unit": "1.85", "year": 2024}
    assert api.post(reverse("supplier-factor-list", args=[supplier.pk]), body, format="json").status_code == 201
    EmissionFactory.create(organization=org, activity__supplier=supplier)
    return {"supplier_pk": supplier.pk}


def url_for(api: Any, name: str, view: Any, objects: dict[str, int]) -> str:
    """The route's URL; a detail route names the first object its list shows."""
    kwargs = {key: objects[key] for key in objects if key in reverse_kwargs(name)}
    if "pk" in reverse_kwargs(name):
        listing = api.get(reverse(name.replace("-detail", "-list"), kwargs=kwargs))
        kwargs["pk"] = listing.json()["results"][0]["id"]
    return reverse(name, kwargs=kwargs) + QUERIES.get(view.actions["get"], "")


def reverse_kwargs(name: str) -> set[str]:
    (possibility,) = [p for p in get_resolver().reverse_dict.getlist(name) if "format" not in p[0][0][1]]
    return set(possibility[0][0][1])


def answers(view: Any, url: str, api: Any) -> list[tuple[Any, ...]]:
    """Three GETs of ``url`` through ``view`` (plain, again, conditional on the first's ETag): status, body, headers."""
    FirstRequestOnly.seen = 0
    OnePerRun.run += 1
    kwargs = get_resolver().resolve(url.split("?")[0]).kwargs
    results: list[tuple[Any, ...]] = []
    etag = None
    for conditional in (False, False, True):
        headers = {"HTTP_AUTHORIZATION": api._credentials["HTTP_AUTHORIZATION"]}
        if conditional and etag:
            headers["HTTP_IF_NONE_MATCH"] = etag
        with unit_of_work():  # a request of its own, as the test client's would be
            response = view(RequestFactory().get(url, **headers), **kwargs)
            if hasattr(response, "render"):
                response.render()  # DRF's Response, as Django's handler would
        etag = etag or response.get("ETag")
        results.append((response.status_code, response.content, dict(response.items())))
    return results


@pytest.fixture
def counted(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``OnePerRun``'s scope at one request a minute, on a clock that stands still (both paths' Retry-After
    must be the same)."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], OnePerRun.scope: "1/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(throttle.counters, "clock", lambda: 1_000_000.5)


@pytest.mark.parametrize(("name", "view"), ROUTES, ids=[name for name, _ in ROUTES])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_path_answers_as_drf_does_whatever_the_view_declares(
    api, objects, drf_requests, counted, name, view, variant
) -> None:
    url = url_for(api, name, view, objects)
    attrs = VARIANTS[variant]
    cls: Any = type(f"Variant{view.cls.__name__}", (view.cls,), dict(attrs))
    variant_view = cls.as_view(
        view.actions, **{key: value for key, value in view.initkwargs.items() if key not in attrs}
    )
    answers(view, url, api)  # the view as declared stores the body (DRF), then serves it
    by_path = {}
    for fast in (False, True):
        with override_settings(CACHE_FAST_PATH=fast):
            drf_requests.clear()
            by_path[fast] = answers(variant_view, url, api)
    assert by_path[True] == by_path[False]
    if variant in ANSWERED:
        assert drf_requests == []  # every answer came from the path, and equals DRF's: not a vacuous comparison
        assert [status for status, _, _ in by_path[True]] == [200, 200, 304]
    elif variant in DECLINED:
        assert len(drf_requests) == 3
    elif variant == "a counted throttle":
        assert [status for status, _, _ in by_path[True]] == [200, 429, 429]
        assert len(drf_requests) == 2  # the path answered the first and handed DRF the refusals


def test_the_path_answers_the_declared_throttles_and_a_viewer(org, drf_requests) -> None:
    """Every cached view declares the default throttles (all caller-only), and a viewer may read: the path answers
    a repeat, counted."""
    EmissionFactory.create(organization=org)
    membership = MembershipFactory.create(organization=org, role=Membership.Role.VIEWER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    for name, view in ROUTES:
        assert all(_is_caller_only(cls(), "allow_request") for cls in view.cls.throttle_classes), name
    assert client.get(reverse("emission-list")).status_code == 200
    drf_requests.clear()
    assert client.get(reverse("emission-list")).status_code == 200
    assert drf_requests == []
    assert get_redis_connection("default").keys(f"vcci:t:user:{membership.user.pk}:*")


def test_a_body_the_cache_never_keeps_goes_to_drf_before_the_caller_is_read(api, org, monkeypatch) -> None:
    """A deep page asked for the first time in this worker (``kept_on_repeat``) is handed to DRF without reading
    the caller."""
    EmissionFactory.create_batch(3, organization=org)
    first = api.get(reverse("emission-list"), {"limit": 1}).json()

    def unread(self: Any, request: Any) -> None:
        raise AssertionError("the caller was read")

    monkeypatch.setattr(OrgTokenAuthentication, "authenticate_cached", unread)
    response = api.get(first["next"])
    assert response.status_code == 200 and len(response.json()["results"]) == 1


def test_a_deep_page_asked_for_again_is_answered_here(api, org, drf_requests) -> None:
    EmissionFactory.create_batch(3, organization=org)
    first = api.get(reverse("emission-list"), {"limit": 1}).json()
    bodies = [api.get(first["next"]).content for _ in range(3)]
    # The first request computes and notes the page, the second stores it (both through DRF), the third is this path's.
    assert len(drf_requests) == 3  # the first page, then the deep page twice
    assert bodies[0] == bodies[1] == bodies[2]
