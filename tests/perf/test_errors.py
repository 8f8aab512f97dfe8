"""perf.errors and the API's error shape: every error status the API answers is JSON ``{"detail": ...}`` or
``{field: [messages]}``, including those Django answers itself (no pattern matched, a bad Host, an unhandled
exception, the database out of reach); the admin and other HTML pages keep Django's HTML."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import OperationalError
from django.test import RequestFactory
from rest_framework import exceptions
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from emissions.api import views
from emissions.api.errors import exception_handler
from perf import errors
from perf.postgresql.base import DatabaseUnreachable
from tests.factories import EmissionFactory, SupplierFactory, UserFactory

SUPPLIERS = "/api/v1/suppliers/"


def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body: dict[str, Any] = json.loads(response.content)
    assert body and (isinstance(body.get("detail"), str) or all(isinstance(v, list) for v in body.values())), body
    return body


def failing(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    """The supplier list raises ``exc``, as an unexpected failure inside a view would."""

    def raise_it(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(views.SupplierViewSet, "list", raise_it)


# -- answered by Django, outside DRF -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/suppliers/abc/factors/", "/api/v1/no-such-resource/", "/api/v2/"])
def test_a_url_no_pattern_matches_is_a_json_404_under_the_api(api, path):
    assert assert_json_error(api.get(path), 404) == {"detail": "Not found."}


def test_a_url_no_pattern_matches_outside_the_api_keeps_the_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_disallowed_host_is_a_json_400_under_the_api(client):
    response = client.get(SUPPLIERS, HTTP_HOST="evil.example")
    assert assert_json_error(response, 400) == {"detail": "Bad request."}
    assert client.get("/admin/login/", HTTP_HOST="evil.example")["Content-Type"].startswith("text/html")


@pytest.mark.django_db
def test_an_unhandled_exception_is_a_json_500_without_internals(api, monkeypatch):
    failing(monkeypatch, RuntimeError("secret internals"))
    api.raise_request_exception = False
    body = assert_json_error(api.get(SUPPLIERS), 500)
    assert body == {"detail": "A server error occurred."}


def test_a_csrf_failure_under_the_api_is_json_and_elsewhere_html():
    rf = RequestFactory()
    assert_json_error(errors.csrf_failure(rf.post("/api/v1/suppliers/"), reason="CSRF cookie not set."), 403)
    assert errors.csrf_failure(rf.post("/admin/login/"), reason="x")["Content-Type"].startswith("text/html")


def test_permission_denied_outside_drf_is_json_under_the_api():
    rf = RequestFactory()
    assert_json_error(errors.permission_denied(rf.get("/api/v1/x/"), exceptions.PermissionDenied()), 403)


# -- the database out of reach: 503 + Retry-After -----------------------------------------------


def unreachable_error() -> OperationalError:
    """What Django raises when the backend found PostgreSQL unreachable (its error, from psycopg's)."""
    try:
        try:
            raise DatabaseUnreachable("PostgreSQL is unreachable")
        except DatabaseUnreachable as cause:
            raise OperationalError(str(cause)) from cause
    except OperationalError as exc:
        return exc


@pytest.mark.django_db
def test_an_unreachable_database_is_a_json_503_with_retry_after(api, monkeypatch, settings):
    settings.ADMISSION_RETRY_AFTER = 7
    failing(monkeypatch, unreachable_error())
    api.raise_request_exception = False
    response = api.get(SUPPLIERS)
    body = assert_json_error(response, 503)
    assert "unreachable" in body["detail"]
    assert response["Retry-After"] == "7"


@pytest.mark.django_db
def test_an_unreachable_database_gives_the_admin_a_plain_503_page(admin_client, monkeypatch):
    from django.contrib.admin.sites import AdminSite

    def down(self: Any, request: Any) -> Any:
        raise unreachable_error()

    # Every admin page builds its context with this, at request time.
    monkeypatch.setattr(AdminSite, "each_context", down)
    admin_client.raise_request_exception = False
    response = admin_client.get("/admin/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert "Retry-After" in response


def test_a_connection_lost_mid_request_counts_as_unavailable_a_query_error_does_not():
    import psycopg

    lost = psycopg.OperationalError("server closed the connection unexpectedly")
    assert errors.database_unavailable(lost)
    assert not errors.database_unavailable(psycopg.errors.QueryCanceled("canceling statement due to timeout"))
    assert not errors.database_unavailable(RuntimeError("boom"))


# -- answered by DRF: each status the API produces, in its shape ---------------------------------


@pytest.mark.django_db
def test_400_names_the_field(api):
    body = assert_json_error(api.post(SUPPLIERS, {"name": "No id"}, format="json"), 400)
    assert "external_id" in body


@pytest.mark.django_db
def test_401_without_credentials():
    assert_json_error(APIClient().get(SUPPLIERS), 401)


@pytest.mark.django_db
def test_403_for_a_user_without_an_organization():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=UserFactory.create()).key}")
    assert_json_error(client.get(SUPPLIERS), 403)


@pytest.mark.django_db
def test_404_for_an_object_of_another_organization(api, other_org):
    supplier = SupplierFactory.create(organization=other_org)
    assert_json_error(api.get(f"{SUPPLIERS}{supplier.pk}/"), 404)


@pytest.mark.django_db
def test_404_for_a_non_integer_id(api):
    assert_json_error(api.get(f"{SUPPLIERS}abc/"), 404)


@pytest.mark.django_db
def test_405_for_a_method_not_allowed(api, org):
    supplier = SupplierFactory.create(organization=org)
    assert_json_error(api.put(f"{SUPPLIERS}{supplier.pk}/", {"name": "x"}, format="json"), 405)


@pytest.mark.django_db
def test_409_for_a_supplier_still_referenced(api, org):
    supplier = EmissionFactory.create(organization=org).supplier
    assert_json_error(api.delete(f"{SUPPLIERS}{supplier.pk}/"), 409)


@pytest.mark.django_db
def test_413_for_a_body_over_the_limit(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    assert_json_error(api.post(SUPPLIERS, {"name": "x" * 500, "external_id": "A"}, format="json"), 413)


@pytest.mark.django_db
def test_415_for_an_unsupported_media_type(api):
    response = api.post(SUPPLIERS, data="external_id=A", content_type="text/plain")
    assert_json_error(response, 415)


def test_429_keeps_the_shape_and_says_when_to_retry():
    # No view throttles yet; a throttled request is answered by the same handler.
    response = exception_handler(exceptions.Throttled(wait=12), {})
    assert response is not None and response.status_code == 429
    assert set(response.data) == {"detail"}
    assert response["Retry-After"] == "12"
