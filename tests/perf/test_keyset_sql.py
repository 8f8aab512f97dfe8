"""perf.keyset_sql: kept page SQL, bound per cursor, is the SQL a fresh compile of the same page writes."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from django.db import NotSupportedError, connection, connections, transaction
from django.db.models import Count, IntegerField, Value
from django.test.utils import CaptureQueriesContext, override_settings
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from emissions.api.views import EmissionViewSet
from emissions.models import Emission, Supplier
from perf import keyset_sql
from perf.pagination import KeysetPagination, KeysetPaginator
from perf.postgresql.base import PREPARE_THRESHOLD
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db

ORDERING = EmissionViewSet.keyset_ordering
NAMES = KeysetPagination.row_names(EmissionViewSet.row_shape().columns, ORDERING)


class EmissionView:
    keyset_ordering = ORDERING


class SupplierView:
    keyset_ordering = ("name", "id")


@pytest.fixture(autouse=True)
def _fresh():
    keyset_sql.clear()
    yield
    keyset_sql.clear()


def _emissions(organization, count: int = 7) -> None:
    supplier = SupplierFactory(organization=organization)
    for i in range(count):
        EmissionFactory(
            organization=organization,
            activity__period_start=dt.date(2025, 1, 1 + i % 3),
            activity__supplier=supplier if i % 2 else None,
        )


def _cursor(queryset, row_index: int) -> str:
    instance = queryset.order_by("-period_start", "-id")[row_index]
    return KeysetPaginator(queryset, ORDERING).cursor(instance)


def _fresh_sql(queryset, limit, after, before):
    page = KeysetPagination.row_page_queryset(queryset, NAMES, ORDERING, limit, after, before)
    return page.query.sql_with_params()


def _kept_sql(queryset, limit, after, before):
    def build():
        return KeysetPagination.row_page_queryset(queryset, NAMES, ORDERING, limit, after, before, slot_values=True)

    key = (keyset_sql.base_shape(queryset), "before" if before else "after" if after else None, limit)
    page_sql = keyset_sql.compiled(key, build)
    assert page_sql is not None
    cursor = after or before
    values = KeysetPaginator(queryset, ORDERING).cursor_values(cursor) if cursor else []
    return page_sql.sql, tuple(page_sql.bind(values, connection))


def test_bound_sql_is_a_fresh_compile_across_filters_cursors_and_directions(org):
    _emissions(org)
    base = Emission.objects.for_org(org).with_related()
    supplier = Supplier.objects.get(organization=org)
    filtered = [
        base.all(),
        base.filter(category=1),
        base.filter(supplier_id=supplier.pk),
        base.filter(period_start__gte=dt.date(2025, 1, 2), period_end__lte=dt.date(2025, 12, 31)),
    ]
    cursors = [_cursor(base, index) for index in range(4)]
    for queryset, limit in itertools.product(filtered, (2, 100)):
        for after, before in [(None, None), *[(c, None) for c in cursors], *[(None, c) for c in cursors]]:
            # The first cursor compiles and keeps the SQL; the others are bound to the kept text.
            assert _kept_sql(queryset, limit, after, before) == _fresh_sql(queryset, limit, after, before)


def test_organizations_never_share_a_kept_query(org, other_org):
    _emissions(org)
    _emissions(other_org)
    ours, theirs = Emission.objects.for_org(org).with_related(), Emission.objects.for_org(other_org).with_related()
    assert keyset_sql.base_shape(ours) != keyset_sql.base_shape(theirs)
    assert _kept_sql(ours, 2, None, None) == _fresh_sql(ours, 2, None, None)
    sql, params = _kept_sql(theirs, 2, None, None)
    assert (sql, params) == _fresh_sql(theirs, 2, None, None)
    assert other_org.pk in params and org.pk not in params


def test_values_that_compare_equal_but_write_differently_are_other_shapes():
    assert keyset_sql.base_shape(Emission.objects.filter(co2e_kg=Decimal("1.0"))) != keyset_sql.base_shape(
        Emission.objects.filter(co2e_kg=Decimal("1.00"))
    )
    assert keyset_sql.base_shape(Emission.objects.filter(id=1)) == keyset_sql.base_shape(Emission.objects.filter(id=1))


@pytest.mark.parametrize(
    "make",
    [
        lambda qs: qs.annotate(n=Count("id")),
        lambda qs: qs.alias(x=Value(1)),
        lambda qs: qs.distinct(),
        lambda qs: qs.extra(where=["1 = 1"]),
        lambda qs: qs.values("id"),
        lambda qs: qs.order_by("id"),
        lambda qs: qs[:5],
        lambda qs: qs.prefetch_related("supplier"),
        lambda qs: qs.filter(id__in=[[1]]),
    ],
    ids=["annotate", "alias", "distinct", "extra", "values", "order_by", "slice", "prefetch", "unhashable"],
)
def test_queries_beyond_the_known_attributes_have_no_shape(make):
    try:
        queryset = make(Emission.objects.filter(category=1))
    except TypeError:
        return  # Django refuses the value itself
    assert keyset_sql.base_shape(queryset) is None


def _page(queryset, view, url: str):
    paginator = KeysetPagination()
    rows = paginator.paginate_rows(queryset, Request(APIRequestFactory().get(url)), view, ["id"])
    return rows, paginator.get_next_link(), paginator.get_previous_link()


def _walk(queryset, view, url: str = "/x/?limit=2") -> tuple[list, list]:
    forward: list[int] = []
    next_url, last_previous = url, None
    while next_url:
        rows, next_url, last_previous = _page(queryset, view, next_url)
        forward.extend(row[0] for row in rows)
    backward: list[int] = []
    previous = last_previous
    while previous:
        rows, _, previous = _page(queryset, view, previous)
        backward[:0] = [row[0] for row in rows]
    return forward, backward


def test_pages_from_kept_sql_are_the_pages_django_runs(org, other_org, monkeypatch):
    _emissions(org, 9)
    _emissions(other_org, 4)
    queryset = Emission.objects.for_org(org).with_related()
    kept = _walk(queryset, EmissionView)
    assert keyset_sql._KEPT  # the pages came from kept SQL
    monkeypatch.setattr(keyset_sql, "base_shape", lambda queryset: None)
    fresh = _walk(queryset, EmissionView)
    expected = list(queryset.order_by("-period_start", "-id").values_list("id", flat=True))
    assert kept == fresh == (expected, expected[: len(kept[1])])


def _prepared_statements(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [f'%"{table}"%'])
        return {row[0] for row in cursor.fetchall()}


def _same_width_cursors(queryset, count: int) -> list[int]:
    """Indexes of ``count`` rows (in list order) whose ids psycopg binds as the same integer type: the type is part
    of a prepared statement's key, and an id sequence may cross 32767 inside a test."""
    ids = list(queryset.order_by("-period_start", "-id").values_list("id", flat=True))
    small = [index for index, row_id in enumerate(ids) if row_id < 2**15]
    large = [index for index, row_id in enumerate(ids) if row_id >= 2**15]
    chosen = max(small, large, key=len)[:count]
    assert len(chosen) == count
    return chosen


def test_kept_pages_run_as_one_prepared_statement_per_shape(org, settings):
    settings.DB_PREPARED_STATEMENTS = True
    _emissions(org, 2 * PREPARE_THRESHOLD + 6)
    queryset = Emission.objects.for_org(org).with_related()
    expected = list(queryset.order_by("-period_start", "-id").values_list("id", flat=True))
    # Statements another test left prepared on this pooled connection are not this test's.
    before = _prepared_statements("emissions_emission")
    indexes = _same_width_cursors(queryset, PREPARE_THRESHOLD + 2)
    pages = [_page(queryset, EmissionView, f"/x/?limit=3&after={_cursor(queryset, i)}")[0] for i in indexes]
    assert [[row[0] for row in rows] for rows in pages] == [expected[i + 1 : i + 4] for i in indexes]
    # Seven cursors, one statement: the cursor's values are its parameters, not literals in its text.
    (statement,) = _prepared_statements("emissions_emission") - before
    assert '"period_start", "emissions_emission"."id") <= ($' in statement and "LIMIT 4" in statement


def test_pages_are_not_prepared_when_prepared_statements_are_off(org, settings):
    settings.DB_PREPARED_STATEMENTS = False
    _emissions(org)
    queryset = Emission.objects.for_org(org).with_related()
    expected = list(queryset.order_by("-period_start", "-id").values_list("id", flat=True))
    before = _prepared_statements("emissions_emission")
    for _ in range(PREPARE_THRESHOLD + 2):
        rows, _, _ = _page(queryset, EmissionView, f"/x/?limit=3&after={_cursor(queryset, 0)}")
        assert [row[0] for row in rows] == expected[1:4]
    assert _prepared_statements("emissions_emission") == before


@pytest.mark.django_db(transaction=True)
def test_a_statement_made_stale_by_another_process_runs_again(settings, monkeypatch):
    settings.DB_PREPARED_STATEMENTS = True
    page_sql = keyset_sql.PageSQL(
        'SELECT "a" FROM "keyset_probe" WHERE "a" >= %s ORDER BY "a"', (keyset_sql.Marker(0),), (IntegerField(),)
    )
    recoveries: list[bool] = []
    backend = type(connections["default"])
    recover = backend.recover_prepared

    def recording(self: Any, error: BaseException) -> bool:
        recoveries.append(recover(self, error))
        return recoveries[-1]

    monkeypatch.setattr(backend, "recover_prepared", recording)

    def prepared_run() -> None:
        for _ in range(PREPARE_THRESHOLD + 1):
            assert keyset_sql.execute(page_sql, [4], "default") == [(4,), (5,)]
        assert len(_prepared_statements("keyset_probe")) == 1

    def migrate_elsewhere(column_type: str) -> None:
        # Another process's migration: the prepared statement's result type is no longer the table's.
        params = connection.settings_dict
        with psycopg.connect(
            dbname=params["NAME"], host=params["HOST"], port=params["PORT"] or None, user=params["USER"],
            password=params["PASSWORD"] or None, autocommit=True,
        ) as other:  # fmt: skip
            other.execute(f'ALTER TABLE "keyset_probe" ALTER COLUMN "a" TYPE {column_type}')

    try:
        with connection.cursor() as cursor:
            cursor.execute('DROP TABLE IF EXISTS "keyset_probe"')
            cursor.execute('CREATE TABLE "keyset_probe" ("a" integer)')
            cursor.execute('INSERT INTO "keyset_probe" SELECT generate_series(1, 5)')
        prepared_run()
        migrate_elsewhere("bigint")
        # Outside a transaction: run again at once (recovered), and on every later execution.
        assert keyset_sql.execute(page_sql, [4], "default") == [(4,), (5,)]
        assert recoveries == [True]
        prepared_run()
        migrate_elsewhere("numeric")
        # Inside one: the transaction fails, and its rollback lets the next execution through.
        with pytest.raises(NotSupportedError, match="cached plan"), transaction.atomic():
            keyset_sql.execute(page_sql, [4], "default")
        assert recoveries == [True, False]
        assert keyset_sql.execute(page_sql, [4], "default") == [(Decimal(4),), (Decimal(5),)]
        assert recoveries == [True, False]
    finally:
        with connection.cursor() as cursor:
            cursor.execute('DROP TABLE IF EXISTS "keyset_probe"')


def test_a_kept_page_is_one_query_and_compiles_nothing(org, monkeypatch):
    _emissions(org)
    queryset = Emission.objects.for_org(org).with_related()
    cursor = _cursor(queryset, 1)
    _page(queryset, EmissionView, f"/x/?limit=2&after={_cursor(queryset, 0)}")

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(KeysetPagination, "row_page_queryset", no_compile)
    with CaptureQueriesContext(connection) as captured:
        rows, _, _ = _page(queryset, EmissionView, f"/x/?limit=2&after={cursor}")
    assert len(captured) == 1
    assert [row[0] for row in rows] == list(queryset.order_by("-period_start", "-id").values_list("id", flat=True)[2:4])


def test_mixed_directions_and_empty_queries_are_not_kept(org):
    SupplierFactory(organization=org, name="b")
    SupplierFactory(organization=org, name="a")

    class MixedView:
        keyset_ordering = ("name", "-id")

    suppliers = Supplier.objects.for_org(org)
    _, next_url, _ = _page(suppliers, MixedView, "/x/?limit=1")
    _page(suppliers, MixedView, next_url)  # a cursor on mixed directions: the expanded predicate, built each time
    assert len(keyset_sql._KEPT) == 1  # the first page only (no cursor)
    rows, next_url, previous = _page(Supplier.objects.filter(id__in=[]), SupplierView, "/x/")
    assert (rows, next_url, previous) == ([], None, None)
    assert len(keyset_sql._KEPT) == 1


def test_a_cursor_value_with_its_own_placeholder_is_not_kept(monkeypatch):
    field = Emission._meta.get_field("period_start")
    monkeypatch.setattr(
        type(field), "get_placeholder", lambda self, value, compiler, connection: "%s::date", raising=False
    )
    queryset = Emission.objects.filter(category=1)
    cursor = KeysetPaginator(queryset, ORDERING).encode_cursor(["2025-01-01", "5"])

    def build():
        return KeysetPagination.row_page_queryset(queryset, ["id"], ORDERING, 2, cursor, None, slot_values=True)

    assert keyset_sql.compiled(("x",), build) is None


def test_slots_are_never_left_in_a_fresh_query():
    cursor = KeysetPaginator(Emission.objects.all(), ORDERING).encode_cursor(["2025-01-01", "5"])
    page = KeysetPagination.row_page_queryset(Emission.objects.all(), ["id"], ORDERING, 2, cursor, None)
    assert not any(isinstance(node, keyset_sql.Slot) for node in keyset_sql._walk(page.query.where))


def test_kept_queries_outlive_unrelated_setting_changes_only(org):
    _kept_sql(Emission.objects.for_org(org), 2, None, None)
    with override_settings(LIST_ROWS=False):
        assert keyset_sql._KEPT
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert not keyset_sql._KEPT


def _text_page(queryset, view, url: str, columns: list[str], text_loaded=frozenset({"numeric"})):
    paginator = KeysetPagination()
    request = Request(APIRequestFactory().get(url))
    rows = paginator.paginate_rows(queryset, request, view, columns, text_loaded=text_loaded)
    return rows, paginator.get_next_link()


def test_text_loaded_types_come_as_postgresql_writes_them(org):
    EmissionFactory(organization=org, co2e_kg=Decimal("1.5"), biogenic_co2_kg=None)
    queryset = Emission.objects.for_org(org)
    (row,), _ = _text_page(queryset, EmissionView, "/x/", ["co2e_kg", "biogenic_co2_kg", "category", "period_start"])
    assert row[:3] == ("1.500000", None, row[2]) and type(row[2]) is int and isinstance(row[3], dt.date)
    assert keyset_sql._KEPT  # the page ran its kept SQL, on a cursor loading numeric as text
    # Only that cursor: the connection's other queries still read Decimals.
    assert queryset.values_list("co2e_kg", flat=True)[0] == Decimal("1.5")
    (row,), _ = _text_page(queryset, EmissionView, "/x/", ["co2e_kg"], text_loaded=())
    assert row[0] == Decimal("1.5")


def test_a_decimal_ordering_key_is_not_text_loaded(org):
    # Its cursor is written from the value: str() of a Decimal, which a text may not be (1E-7 vs 0.0000001).
    for kg in ("0.000001", "0.000002", "3"):
        EmissionFactory(organization=org, co2e_kg=Decimal(kg))

    class ByKg:
        keyset_ordering = ("co2e_kg", "id")

    queryset = Emission.objects.for_org(org)
    rows, next_url = _text_page(queryset, ByKg, "/x/?limit=1", ["id", "co2e_kg"])
    assert isinstance(rows[0][1], Decimal)
    assert next_url is not None
    rows, _ = _text_page(queryset, ByKg, next_url, ["id", "co2e_kg"])
    assert rows[0][1] == Decimal("0.000002")
