"""perf.security.CSPMiddleware: django-csp's header, the settings' policy built once, django-csp's own code for
everything else (a view's decorator, a nonce)."""

from __future__ import annotations

from typing import Any

from csp.constants import NONCE, SELF
from csp.decorators import csp_update
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory

from perf.security import CSPMiddleware

rf = RequestFactory()


def ok(request: Any) -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


def header(middleware_class: type, view: Any = ok, request: Any = None) -> str:
    return str(middleware_class(view)(request or rf.get("/api/v1/suppliers/"))["Content-Security-Policy"])


def directives(value: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in value.split(";") if part.strip())}


def test_the_header_is_django_csps_for_a_plain_response():
    assert directives(header(CSPMiddleware)) == directives(header(DjangoCSPMiddleware))


def test_a_decorated_view_gets_its_own_policy():
    view = csp_update({"img-src": ["https://img.example"]})(ok)
    assert "https://img.example" in directives(header(CSPMiddleware, view))["img-src"]


def test_the_settings_policy_follows_the_settings(settings):
    first = header(CSPMiddleware)
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": [SELF], "script-src": [SELF, NONCE]}}
    # No nonce used: none in the header.
    expected = {"default-src": ["'self'"], "script-src": ["'self'"]}
    assert directives(header(CSPMiddleware)) == expected != directives(first)

    def uses_nonce(request: Any) -> HttpResponse:
        return HttpResponse(str(request.csp_nonce))

    request = rf.get("/")
    response = CSPMiddleware(uses_nonce)(request)
    assert f"'nonce-{response.content.decode()}'" in directives(response["Content-Security-Policy"])["script-src"]
