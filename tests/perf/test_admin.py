"""Tests for perf.admin: EstimatedCountPaginator and the login lockout's client address."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext

from emissions.models import Supplier
from perf.admin import EstimatedCountPaginator, login_client_address
from tests.factories import OrganizationFactory, SupplierFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def suppliers():
    org = OrganizationFactory()
    return [SupplierFactory(organization=org) for _ in range(5)]


def test_small_unfiltered_table_is_counted_exactly(suppliers):
    # Below the estimate threshold an exact count is cheap and reads better.
    assert EstimatedCountPaginator(Supplier.objects.order_by("pk"), 2).count == 5


def test_big_unfiltered_table_uses_planner_estimate(suppliers, monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emissions_supplier")
    monkeypatch.setattr(EstimatedCountPaginator, "estimate_threshold", 1)
    with CaptureQueriesContext(connection) as ctx:
        count = EstimatedCountPaginator(Supplier.objects.order_by("pk"), 2).count
    assert count == 5
    assert len(ctx) == 1
    assert "reltuples" in ctx.captured_queries[0]["sql"]


def test_filtered_count_is_capped(suppliers, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 3)
    org_id = suppliers[0].organization_id
    with CaptureQueriesContext(connection) as ctx:
        paginator = EstimatedCountPaginator(Supplier.objects.filter(organization_id=org_id).order_by("name"), 2)
        assert paginator.count == 3
    sql = ctx.captured_queries[0]["sql"]
    assert "LIMIT 3" in sql
    assert "ORDER BY" not in sql  # ordering dropped: a count does not need it
    assert paginator.num_pages == 2


def test_plain_list_uses_len():
    assert EstimatedCountPaginator([1, 2, 3], 2).count == 3


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.1", "203.0.113.9", "10.0.0.1"),  # not a trusted proxy: the header is only the client's word
        ("127.0.0.1", "203.0.113.9, 10.0.0.2", "10.0.0.2"),  # the address the proxy appended, not the client's claim
        ("127.0.0.1", "", "127.0.0.1"),  # a trusted proxy that forwarded nothing: the peer itself
    ],
)
def test_login_client_address(settings, peer, forwarded, expected):
    settings.ADMIN_LOGIN_TRUSTED_PROXIES = ["127.0.0.1"]
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)
    assert login_client_address(request) == expected
