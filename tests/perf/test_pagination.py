"""perf.pagination.KeysetPagination on its own, against the Emission and Supplier tables."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from emissions.models import Emission, Supplier
from perf.pagination import KeysetPagination, KeysetPaginator
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db


class EmissionView:
    keyset_ordering = ("-period_start", "-id")


class SupplierView:
    keyset_ordering = ("name", "id")


def request(url: str) -> Request:
    return Request(APIRequestFactory().get(url))


def page(queryset, view, url: str = "/x/"):
    paginator = KeysetPagination()
    rows = paginator.paginate_queryset(queryset, request(url), view)
    return rows, paginator.get_paginated_response([r.pk for r in rows]).data


def test_walks_forward_by_keyset(org):
    for day in (1, 1, 1, 2, 2, 3):
        EmissionFactory(organization=org, activity__period_start=dt.date(2025, 1, day))
    expected = list(Emission.objects.order_by("-period_start", "-id").values_list("pk", flat=True))
    seen, url = [], "/x/?limit=2"
    while url:
        _, data = page(Emission.objects.all(), EmissionView, url)
        seen.extend(data["results"])
        url = data["next"]
    assert seen == expected


def test_walks_backward(org):
    SupplierFactory.create_batch(5, organization=org)
    expected = list(Supplier.objects.order_by("name", "id").values_list("pk", flat=True))
    _, last = page(
        Supplier.objects.all(), SupplierView, "/x/?limit=2&after=" + _cursor_after(expected[1], SupplierView)
    )
    assert last["results"] == expected[2:4]
    _, previous = page(Supplier.objects.all(), SupplierView, last["previous"])
    assert previous["results"] == expected[0:2]
    assert previous["previous"] is None
    assert previous["next"] is not None


def _cursor_after(pk: int, view) -> str:
    return KeysetPaginator(Supplier.objects.all(), view.keyset_ordering).cursor(Supplier.objects.get(pk=pk))


def test_page_is_one_query(org, django_assert_num_queries):
    SupplierFactory.create_batch(3, organization=org)
    with django_assert_num_queries(1):  # no COUNT
        rows, data = page(Supplier.objects.all(), SupplierView, "/x/?limit=2")
    assert len(rows) == 2
    assert data["next"] is not None


def test_links_drop_the_opposite_cursor(org):
    SupplierFactory.create_batch(3, organization=org)
    first = Supplier.objects.order_by("name", "id").first()
    cursor = _cursor_after(first.pk, SupplierView)
    _, data = page(Supplier.objects.all(), SupplierView, f"/x/?limit=1&after={cursor}&search=x")
    assert "before=" in data["previous"] and "after=" not in data["previous"]
    assert "after=" in data["next"] and "before=" not in data["next"]
    assert "search=x" in data["next"]


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-5", "1.5"])
def test_bad_limit(limit):
    with pytest.raises(ValidationError) as info:
        KeysetPagination().get_limit(request(f"/x/?limit={limit}"))
    assert "limit" in info.value.detail


def test_limit_bounds():
    assert KeysetPagination().get_limit(request("/x/")) == 100
    assert KeysetPagination().get_limit(request("/x/?limit=1000")) == 1000


def b64(text: str) -> str:
    """A cursor holding ``text`` split on "|" (the shape KeysetPaginator encodes)."""
    return base64.urlsafe_b64encode(json.dumps(text.split("|")).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["!!!", b64("2025-01-01"), b64("2025-02-30|1"), b64("2025-01-01|one"), b64("2025-01-01|1|2"), b64("::None|1")],
)
def test_bad_cursor(cursor):
    with pytest.raises(ValidationError) as info:
        page(Emission.objects.all(), EmissionView, f"/x/?after={cursor}")
    assert "after" in info.value.detail


@pytest.mark.parametrize("cursor", [base64.b64encode(b"2025-01-01|1").decode(), b64("2025-01-01")[:-3], "e30="])
def test_cursor_not_in_our_format(cursor):
    with pytest.raises(ValidationError) as info:
        page(Emission.objects.all(), EmissionView, f"/x/?before={cursor}")
    assert "before" in info.value.detail


def test_delimiter_in_a_key_value(org):
    """Names containing the library's "|" delimiter still page correctly."""
    for name in ["A|1", "A|2", "B|x|y", "C"]:
        SupplierFactory(organization=org, name=name)
    seen, url = [], "/x/?limit=1"
    while url:
        _, data = page(Supplier.objects.all(), SupplierView, url)
        seen.extend(data["results"])
        url = data["next"]
    assert seen == list(Supplier.objects.order_by("name", "id").values_list("pk", flat=True))


def test_after_and_before_together():
    cursor = b64("2025-01-01|1")
    with pytest.raises(ValidationError) as info:
        page(Emission.objects.all(), EmissionView, f"/x/?after={cursor}&before={cursor}")
    assert "before" in info.value.detail


def test_a_list_is_refused():
    # Keyset pages are found with a WHERE in SQL; a plain list has no such query to page.
    with pytest.raises(TypeError, match="pages a QuerySet, not a list"):
        KeysetPagination().paginate_queryset([1, 2, 3], request("/x/"), EmissionView)
