"""perf.pagination.KeysetPagination on its own, against the Emission and Supplier tables."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F, Q, Value
from django.db.models.lookups import LessThanOrEqual
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory
from rest_framework.utils.urls import remove_query_param, replace_query_param

from emissions.api.views import ActivityViewSet, EmissionViewSet
from emissions.models import ActivityRecord, Emission, Method, Supplier
from perf.pagination import KeysetPagination, KeysetPaginator, RowValue
from tests.factories import ActivityRecordFactory, EmissionFactorFactory, EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db


class EmissionView:
    keyset_ordering = ("-period_start", "-id")


class SupplierView:
    keyset_ordering = ("name", "id")


class SpendYearView:
    keyset_ordering = ("spend_year", "id")


class MixedView:
    keyset_ordering = ("name", "-id")


def request(url: str) -> Request:
    return Request(APIRequestFactory().get(url))


def page(queryset, view, url: str = "/x/"):
    paginator = KeysetPagination()
    rows = paginator.paginate_queryset(queryset, request(url), view)
    # What value-row pages write (perf.rows.RowListMixin), without a response; DRF's path wraps the same in one.
    data = paginator.get_paginated_data([r.pk for r in rows])
    assert list(data) == ["next", "previous", "results"]
    assert paginator.get_paginated_response([r.pk for r in rows]).data == data
    return rows, data


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


# Queries DRF's remove_query_param and replace_query_param rewrite: repeated keys, blank values, a key without a
# value, encoded and non-ASCII text, a plus, a lone or bad percent escape, the cursors themselves.
LINK_QUERIES = [
    "",
    "limit=1",
    "limit=1&after=abc&before=def",
    "b=2&a=1&b=1&after=x",
    "empty=&flag&after=",
    "q=a+b%20c&name=%C3%A9t%C3%A9&raw=été&x=%2B%26%3D",
    "bad=%zz&lone=%&semi=a;b&before=x",
    "=v&&&after=WyIyMDI2LTA0LTAxIiwiODA4NjM4Il0%3D",
]


@pytest.mark.parametrize("query", LINK_QUERIES)
def test_links_are_drf_s_query_rewrites(org, query):
    supplier = SupplierFactory.create(organization=org)
    paginator = KeysetPagination()
    paginator.paginate_queryset(Supplier.objects.all(), request("/x/"), SupplierView)  # sets up the paginator
    paginator.request = request(f"/x/y/?{query}")
    cursor = paginator.paginator.cursor(supplier)
    url = paginator.request.build_absolute_uri()
    for param, other in (("after", "before"), ("before", "after")):
        expected = replace_query_param(remove_query_param(url, other), param, cursor)
        assert paginator._link(param, supplier) == expected


def test_links_parse_each_request_s_url(org):
    supplier = SupplierFactory.create(organization=org)
    paginator = KeysetPagination()
    paginator.paginate_queryset(Supplier.objects.all(), request("/x/?a=1"), SupplierView)
    assert "a=1" in paginator._link("after", supplier)
    paginator.paginate_queryset(Supplier.objects.all(), request("/x/?a=2"), SupplierView)
    assert "a=2" in paginator._link("after", supplier)


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


# -- index use (PostgreSQL plans) -----------------------------------------------------------------

ROWS_PER_ORG = 2000
DAYS = 200  # ~10 rows share each period_start, so pages break inside ties


def _stored_rows(
    organization, *, rows: int = ROWS_PER_ORG, days: int = DAYS, start: dt.date = dt.date(2020, 1, 1)
) -> None:
    """``rows`` activities with emissions for ``organization`` spread over ``days`` period_starts from ``start``,
    bulk-inserted (factories would take minutes)."""
    supplier = SupplierFactory.create(organization=organization)
    factor = EmissionFactorFactory.create()
    records = ActivityRecord.objects.bulk_create(
        ActivityRecord(
            organization=organization,
            supplier=supplier if i % 2 else None,
            category=1,
            method=Method.ACTIVITY,
            activity=factor.activity,
            amount=Decimal(i),
            unit="kWh",
            period_start=start + dt.timedelta(days=i % days),
            period_end=start + dt.timedelta(days=i % days),
        )
        for i in range(rows)
    )
    Emission.objects.bulk_create(
        Emission(
            organization=organization,
            activity=record,
            supplier=record.supplier,
            category=1,
            method=Method.ACTIVITY,
            period_start=record.period_start,
            period_end=record.period_end,
            factor=factor,
            co2e_kg=Decimal(1),
            data_quality={},
        )
        for record in records
    )


def _analyze() -> None:
    """Fresh planner statistics for the bulk-inserted tables."""
    with connection.cursor() as cursor:
        for model in (ActivityRecord, Emission):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


@pytest.fixture
def big_org(org, other_org):
    """2,000 emissions for ``org`` and as many for another organization, with fresh planner statistics."""
    _stored_rows(org)
    _stored_rows(other_org)
    _analyze()
    return org


BIG_MONTH = dt.date(2021, 6, 1)
BIG_MONTH_ROWS = 2000


@pytest.fixture
def big_month_org(org, other_org):
    """``org`` with one month of 2,000 emissions sharing a period_start (a monthly import) above 200 spread
    over earlier days; another organization with as many rows; fresh planner statistics."""
    for organization in (org, other_org):
        _stored_rows(organization, rows=BIG_MONTH_ROWS, days=1, start=BIG_MONTH)
        _stored_rows(organization, rows=200)
    _analyze()
    return org


def _index_scans(plan: dict, index: str) -> list[dict]:
    """The nodes of an EXPLAIN (FORMAT JSON) plan that scan ``index``."""
    found = [plan] if plan.get("Index Name") == index else []
    for child in plan.get("Plans", []):
        found.extend(_index_scans(child, index))
    return found


@pytest.mark.parametrize(
    ("viewset", "index"),
    [(EmissionViewSet, "emission_org_period_idx"), (ActivityViewSet, "activity_org_period_idx")],
)
def test_pages_are_read_from_the_index_without_a_sort(big_org, viewset, index):
    """The exact querysets the list view pages with (first page, after and before a cursor) walk the
    (organization, period_start DESC, id DESC) index and stop after a page: no Sort node.

    The cursor sits in the middle of the organization's rows, inside a run of equal period_start
    values: about 1,000 rows lie on either side, so sorting them would cost the planner far more than
    reading one page in index order, while a cursor near an end could let it sort a handful of rows.
    """
    queryset = viewset().scoped(big_org.pk)
    paginator = KeysetPaginator(queryset, viewset.keyset_ordering)
    assert paginator.index_friendly
    middle = paginator.queryset[ROWS_PER_ORG // 2 + 3]
    cursor = paginator.cursor(middle)
    pages = {
        "first": paginator.page_queryset(first=100),
        "after": paginator.page_queryset(first=100, after=cursor),
        "before": paginator.page_queryset(last=100, before=cursor),
    }
    for name, page_queryset in pages.items():
        plan = page_queryset.explain()
        assert index in plan, (name, plan)
        assert "Sort" not in plan, (name, plan)
        if name != "first":
            # The cursor is where the index scan starts, not a filter applied to what it reads.
            assert "ROW(period_start, id)" in plan.split("Index Cond:", 1)[1].splitlines()[0], (name, plan)
    # The pages are the right ones: 100 rows each, meeting at the cursor.
    after, before = list(pages["after"])[:100], list(pages["before"])[:100]
    ordered = list(paginator.queryset.values_list("pk", flat=True))
    position = ordered.index(middle.pk)
    assert [row.pk for row in after] == ordered[position + 1 : position + 101]
    assert [row.pk for row in reversed(before)] == ordered[position - 100 : position]


@pytest.mark.parametrize(
    ("viewset", "index"),
    [(EmissionViewSet, "emission_org_period_idx"), (ActivityViewSet, "activity_org_period_idx")],
)
def test_a_cursor_inside_a_big_month_starts_the_index_scan(big_month_org, viewset, index):
    """With the cursor half-way through a month of 2,000 rows sharing one period_start, the page is read
    from the cursor on: the row comparison is the scan's Index Cond, and the scan reads one page of rows
    instead of reading and discarding the ~1,000 rows of the month on the near side of the cursor."""
    queryset = viewset().scoped(big_month_org.pk)
    paginator = KeysetPaginator(queryset, viewset.keyset_ordering)
    middle = paginator.queryset[BIG_MONTH_ROWS // 2]
    assert middle.period_start == BIG_MONTH
    cursor = paginator.cursor(middle)
    ordered = list(paginator.queryset.values_list("pk", flat=True))
    position = ordered.index(middle.pk)
    pages = {
        "after": (paginator.page_queryset(first=100, after=cursor), ordered[position + 1 : position + 101]),
        "before": (paginator.page_queryset(last=100, before=cursor), ordered[position - 100 : position][::-1]),
    }
    for name, (page_queryset, expected) in pages.items():
        [explained] = json.loads(page_queryset.explain(format="json", analyze=True, buffers=True))
        scans = _index_scans(explained["Plan"], index)
        assert len(scans) == 1, (name, page_queryset.explain(analyze=True))
        [scan] = scans
        assert "ROW(period_start, id)" in scan["Index Cond"], (name, scan)
        # Only the cursor row itself is read and dropped (the old predicate dropped ~1,000 here).
        assert scan.get("Rows Removed by Filter", 0) <= 1, (name, scan)
        assert scan["Actual Rows"] == 101, (name, scan)  # the page and the row telling whether another follows
        assert [row.pk for row in page_queryset][:100] == expected, name


def test_sql_for_not_null_keys_has_no_null_handling(org):
    """What makes the plans above possible, checked on the SQL itself: a plain ORDER BY and typed comparisons."""
    queryset = Emission.objects.for_org(org)
    paginator = KeysetPaginator(queryset, ("-period_start", "-id"))
    cursor = paginator.encode_cursor(["2025-03-01", "42"])
    sql, params = paginator.page_queryset(first=10, after=cursor).query.sql_with_params()
    assert "NULLS" not in sql
    assert "IS NULL" not in sql
    assert sql.endswith('ORDER BY "emissions_emission"."period_start" DESC, "emissions_emission"."id" DESC LIMIT 11')
    assert dt.date(2025, 3, 1) in params and 42 in params  # a date and an int, not text
    row = '("emissions_emission"."period_start", "emissions_emission"."id")'
    # "<=" and the cursor row excluded, so PostgreSQL's estimate (from period_start <= x) counts the cursor's month.
    assert f"{row} <= (%s, %s) AND NOT (" in sql
    backward, _ = paginator.page_queryset(last=10, before=cursor).query.sql_with_params()
    assert f"{row} >= (%s, %s) AND NOT (" in backward
    assert backward.endswith('ORDER BY "emissions_emission"."period_start" ASC, "emissions_emission"."id" ASC LIMIT 11')


def test_ascending_keys_compare_rows_upward(org):
    paginator = KeysetPaginator(Supplier.objects.for_org(org), SupplierView.keyset_ordering)
    cursor = paginator.encode_cursor(["Acme", "7"])
    forward, params = paginator.page_queryset(first=10, after=cursor).query.sql_with_params()
    backward, _ = paginator.page_queryset(last=10, before=cursor).query.sql_with_params()
    row = '("emissions_supplier"."name", "emissions_supplier"."id")'
    assert f"{row} >= (%s, %s) AND NOT (" in forward and f"{row} <= (%s, %s) AND NOT (" in backward
    assert "Acme" in params and 7 in params


def _walk_both_ways(queryset, view) -> tuple[list[int], list[int]]:
    """Every pk reached by following ``next`` links from the first page, then ``previous`` links back."""
    seen, url = [], "/x/?limit=2"
    while url:
        _, data = page(queryset, view, url)
        seen.extend(data["results"])
        last_page, url = data, data["next"]
    back, url = list(last_page["results"]), last_page["previous"]
    while url:
        _, data = page(queryset, view, url)
        back = data["results"] + back
        url = data["previous"]
    return seen, back


def test_mixed_directions_keep_the_expanded_predicate(org):
    """(name ASC, id DESC) has no single row comparison: the cursor is the OR of per-key conditions."""
    for name in ["B", "A", "B", "C", "A", "B", "A"]:
        SupplierFactory(organization=org, name=name)
    queryset = Supplier.objects.for_org(org)
    paginator = KeysetPaginator(queryset, MixedView.keyset_ordering)
    cursor = paginator.encode_cursor(["B", "5"])
    sql, _ = paginator.page_queryset(first=2, after=cursor).query.sql_with_params()
    assert '("emissions_supplier"."name", "emissions_supplier"."id")' not in sql
    assert '"emissions_supplier"."name" >= %s' in sql and '"emissions_supplier"."id" < %s' in sql
    expected = [s.pk for s in sorted(Supplier.objects.all(), key=lambda s: (s.name, -s.pk))]
    assert _walk_both_ways(queryset, MixedView) == (expected, expected)


def test_without_row_values_the_expanded_predicate_pages_the_same(org, monkeypatch):
    """Backends without row comparisons (Oracle) get the equivalent expanded predicate."""
    for day in (1, 1, 1, 2, 2, 3, 3, 3):
        EmissionFactory(organization=org, activity__period_start=dt.date(2025, 1, day))
    monkeypatch.setattr("perf.pagination._row_comparison_supported", lambda connection: False)
    queryset = Emission.objects.for_org(org)
    paginator = KeysetPaginator(queryset, EmissionView.keyset_ordering)
    sql, _ = paginator.page_queryset(
        first=2, after=paginator.encode_cursor(["2025-01-02", "5"])
    ).query.sql_with_params()
    assert '("emissions_emission"."period_start", "emissions_emission"."id")' not in sql
    assert '"emissions_emission"."period_start" <= %s' in sql
    expected = list(Emission.objects.order_by("-period_start", "-id").values_list("pk", flat=True))
    assert _walk_both_ways(queryset, EmissionView) == (expected, expected)


def test_the_api_runs_the_page_queryset(api, org):
    """The list view's page query is exactly ``page_queryset`` of its value rows (``row_queryset``), so the EXPLAIN
    tests and the hot queries explain the real query."""
    for day in (1, 2, 2, 3):
        EmissionFactory(organization=org, activity__period_start=dt.date(2025, 1, day))
    ordering = EmissionViewSet.keyset_ordering
    cursor = KeysetPaginator(EmissionViewSet().scoped(org.pk), ordering).cursor(
        Emission.objects.order_by("-period_start", "-id")[1]
    )
    queryset = KeysetPagination.row_queryset(
        EmissionViewSet().scoped(org.pk), EmissionViewSet.row_shape().columns, ordering
    )
    paginator = KeysetPaginator(queryset, ordering)
    with CaptureQueriesContext(connection) as captured:
        response = api.get(reverse("emission-list"), {"limit": 2, "after": cursor})
    assert response.status_code == 200
    expected = connection.ops.compose_sql(*paginator.page_queryset(first=2, after=cursor).query.sql_with_params())
    assert expected in [query["sql"] for query in captured.captured_queries]


def test_nullable_key_keeps_the_library_null_handling(org):
    """A nullable ordering key (spend_year) still pages with NULLs last, forward and backward."""
    for spend_year in (2020, None, 2021, None, 2020, 2022, None):
        ActivityRecordFactory(organization=org, spend_year=spend_year)
    queryset = ActivityRecord.objects.for_org(org)
    paginator = KeysetPaginator(queryset, SpendYearView.keyset_ordering)
    assert not paginator.index_friendly
    assert "NULLS LAST" in str(paginator.queryset.query)
    expected = [
        r.pk
        for r in sorted(ActivityRecord.objects.all(), key=lambda r: (r.spend_year is None, r.spend_year or 0, r.pk))
    ]
    seen, url = [], "/x/?limit=2"
    while url:
        _, data = page(queryset, SpendYearView, url)
        seen.extend(data["results"])
        last_page, url = data, data["next"]
    assert seen == expected
    back, url = [], last_page["previous"]
    while url:
        _, data = page(queryset, SpendYearView, url)
        back = data["results"] + back
        url = data["previous"]
    assert back + last_page["results"] == expected


def test_cursor_predicate_is_the_row_comparison_and_q_of_the_cursor_row():
    """The cursor's NOT part is written with lookups on Values (which perf.keyset_sql can mark) and compiles to the
    SQL of ``~Q(**cursor row)``."""
    queryset = Emission.objects.filter(category=1)
    paginator = KeysetPaginator(queryset, EmissionView.keyset_ordering)
    cursor = paginator.encode_cursor(["2025-01-01", "5"])
    period, pk = dt.date(2025, 1, 1), 5
    fields = [Emission._meta.get_field(name) for name in ("period_start", "id")]
    expected = queryset.filter(
        LessThanOrEqual(
            RowValue(F("period_start"), F("id")),
            RowValue(*(Value(v, output_field=f) for v, f in zip((period, pk), fields, strict=True))),
        ),
        ~Q(period_start=period, id=pk),
    )
    actual = paginator.apply_cursor(cursor, queryset, from_last=False)
    assert actual.query.sql_with_params() == expected.query.sql_with_params()
