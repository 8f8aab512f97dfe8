"""The compiled SQL of keyset page queries, kept per query shape: the next page binds the new cursor's values only.

Building a value-row page query (``values_list``, the cursor's predicate, the ordering, the slice) and compiling
it costs about as long as PostgreSQL takes to run it from an index. Two pages of the same list, after two
different cursors, compile to the same SQL text: only the parameters standing for the cursor's values differ.
``compiled`` keeps that text and its parameters (``PageSQL``), the cursor's values as markers
(``Marker``) that ``PageSQL.bind`` replaces per request, prepared as ``Value.as_sql`` prepares them.

**The shape** (``shape``) is everything the text and the other parameters are made of: the base queryset
(before its page is taken), the columns, the ordering, the direction and the limit, the database alias. The
base query is compared whole: its WHERE tree (Django's own expression equality, and its ``repr``, which tells
``1`` from ``True`` and ``Decimal("1.0")`` from ``Decimal("1.00")``), its joins and their reference counts; any
other attribute of the query must be what a fresh ``Query`` of the model holds, and the queryset a plain model
queryset. Anything else (annotations, ``extra``, ``distinct``, a slice, ``values()``, a custom lookup whose
value has no faithful ``repr``...) has no shape: its page is built and compiled as always. The tenant a base
query is scoped to is a value in its WHERE tree, so two organizations' queries never share an entry.

``compiled`` and ``execute`` serve any query of a fixed shape whose per-call values are ``Slot``s: the token query
of ``emissions.api.authentication`` is kept the same way, its key bound per request.

**Where reuse is refused at compile time**: a cursor value whose placeholder is not ``%s`` (a field with its
own ``get_placeholder``), a query that compiles to nothing (``EmptyResultSet``), or one whose columns need
Django's converters (``from_db_value``, the backend's): those pages go through Django every time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.core.signals import setting_changed
from django.db import DatabaseError, connections
from django.db.models import Field, Model, QuerySet, Value
from django.db.models.expressions import BaseExpression
from django.db.models.query import ModelIterable
from django.db.models.sql import Query
from django.db.models.sql.where import WhereNode
from django.utils.hashable import make_hashable

try:
    from psycopg.types.string import TextLoader
except ImportError:  # psycopg2, or no PostgreSQL driver
    TextLoader = None  # type: ignore[assignment,misc]

# Compiled page queries kept per process; beyond this many shapes the oldest is dropped (a shape per
# organization, filter set, direction and limit: a few per active client).
MAX_SHAPES = 512

# Query attributes that make up the shape (compared and hashed); the derived ones are implied by them.
_KEYED = ("where", "alias_map", "alias_refcount", "_lookup_joins", "select_related", "base_table")
_DERIVED = frozenset({"table_map", "used_aliases", "_annotation_select_cache", "_extra_select_cache"})
_ABSENT = object()


class NotReusable(Exception):
    """The page query cannot be kept as text with markers (see the module); it is built and compiled as always."""


@dataclass(frozen=True, slots=True)
class Marker:
    """In a kept query's parameters: the place of the ``index``-th cursor value."""

    index: int


class Slot(Value):
    """A cursor value (``Value(value, output_field=field)``) compiled to its placeholder with a ``Marker`` as its
    parameter. Only ever compiled by ``compiled``, never executed."""

    def __init__(self, value: Any, output_field: Field, index: int) -> None:
        super().__init__(value, output_field=output_field)
        self.index = index

    def as_sql(self, compiler: Any, connection: Any) -> Any:
        sql, params = super().as_sql(compiler, connection)
        if sql != "%s" or len(params) != 1:
            raise NotReusable(f"a cursor value compiles to {sql!r}")
        return sql, [Marker(self.index)]


@dataclass(frozen=True, slots=True)
class PageSQL:
    """A page query's SQL and parameters, the cursor's values as ``Marker``s (their fields in ``fields``)."""

    sql: str
    params: tuple[Any, ...]
    fields: tuple[Field, ...]

    def bind(self, values: Sequence[Any], connection: Any) -> list[Any]:
        """The parameters for the cursor ``values`` (one per field, as the slots were made), prepared as
        ``Value.as_sql`` prepares a value for ``connection``."""
        prepared = [
            field.get_db_prep_value(value, connection=connection)
            for field, value in zip(self.fields, values, strict=True)
        ]
        return [prepared[param.index] if type(param) is Marker else param for param in self.params]


def _defaults(model: type[Model]) -> dict[str, Any]:
    defaults = _DEFAULTS.get(model)
    if defaults is None:
        defaults = _DEFAULTS[model] = dict(vars(Query(model)))
    return defaults


_DEFAULTS: dict[type[Model], dict[str, Any]] = {}


def base_shape(queryset: QuerySet) -> Hashable | None:
    """What the SQL of a page of ``queryset`` depends on, as a hashable value; None when it cannot be told from
    the attributes the module names (then no page of it is kept)."""
    if (
        queryset._fields is not None  # type: ignore[attr-defined]
        or queryset._iterable_class is not ModelIterable
        or queryset._prefetch_related_lookups  # type: ignore[attr-defined]
        or queryset._deferred_filter is not None  # type: ignore[attr-defined]
    ):
        return None
    query = queryset.query
    defaults = _defaults(queryset.model)
    for name, value in vars(query).items():
        if name in _DERIVED or name in _KEYED:
            continue
        default = defaults.get(name, _ABSENT)
        if default is _ABSENT:
            default = getattr(Query, name, _ABSENT)
        if default is _ABSENT or type(default) is not type(value) or default != value:
            return None
    where = query.where
    # Expressions compare by their constructor's arguments; anything else in the tree (extra()'s raw SQL) by
    # identity only, so no two requests would ever share it.
    if not all(isinstance(node, (WhereNode, BaseExpression)) for node in _walk(where)):
        return None
    try:
        key = (
            queryset.model,
            queryset.db,
            where,
            repr(where),
            tuple(query.alias_map.items()),
            tuple(query.alias_refcount.items()),
            tuple(getattr(query, "_lookup_joins", ())),
            make_hashable(query.select_related),
            vars(query).get("base_table"),
        )
        hash(key)
    except TypeError:  # an unhashable value in a lookup
        return None
    return key


_KEPT: dict[Hashable, PageSQL] = {}
_LOCK = threading.Lock()


def compiled(shape: Hashable, build: Any) -> PageSQL | None:
    """The kept ``PageSQL`` of ``shape``, else ``build()``'s (a queryset whose cursor values are ``Slot``s) compiled
    and kept; None when it cannot be kept (the module's refusals)."""
    kept = _KEPT.get(shape)
    if kept is not None:
        return kept
    try:
        page_sql = _compile(build())
    except (NotReusable, EmptyResultSet):
        return None
    with _LOCK:
        while len(_KEPT) >= MAX_SHAPES:
            _KEPT.pop(next(iter(_KEPT)))
        _KEPT[shape] = page_sql
    return page_sql


def _compile(queryset: QuerySet) -> PageSQL:
    compiler = queryset.query.get_compiler(queryset.db)
    sql, params = compiler.as_sql()
    if compiler.get_converters([column[0] for column in compiler.select[: compiler.col_count]]):
        raise NotReusable("columns with converters")
    slots: dict[int, Field] = {}
    for expression in _walk(queryset.query.where):
        if isinstance(expression, Slot):
            slots[expression.index] = expression.output_field
    if sorted(slots) != list(range(len(slots))):
        raise NotReusable("cursor slots are not numbered 0..n-1")
    markers = {param.index for param in params if type(param) is Marker}
    if markers != set(slots):
        raise NotReusable("a cursor slot is missing from the compiled parameters")
    return PageSQL(sql, tuple(params), tuple(slots[index] for index in range(len(slots))))


def _walk(node: Any) -> Iterator[Any]:
    """``node`` and every node under it: a WHERE tree's children, an expression's source expressions."""
    yield node
    if isinstance(node, WhereNode):
        sources = node.children
    else:
        sources = node.get_source_expressions() if hasattr(node, "get_source_expressions") else []
    for child in sources:
        if child is not None:
            yield from _walk(child)


def execute(
    page_sql: PageSQL, values: Sequence[Any], using: str, *, text_loaded: Collection[str] = ()
) -> list[tuple[Any, ...]]:
    """The rows of ``page_sql`` for the cursor ``values`` on the database ``using`` (through Django's cursor and
    its execute wrappers, as the queryset would run it), as a prepared statement where the backend prepares
    (``perf.postgresql``'s ``prepared_cursor``).

    ``text_loaded``: PostgreSQL type names (``numeric``) whose values are left as the text PostgreSQL sent, for a
    caller that writes them out as text (``perf.rows``): psycopg would make each a Python value (a ``Decimal``)
    that the caller then writes back out. Only on psycopg 3 (its loaders are set on this cursor alone); elsewhere
    the values are Django's."""
    connection: Any = connections[using]  # perf.postgresql's has prepared_cursor and recover_prepared
    prepared = getattr(connection, "prepared_cursor", None)
    if prepared is None:
        return _rows(connection.cursor, page_sql, values, connection, text_loaded)
    try:
        return _rows(prepared, page_sql, values, connection, text_loaded)
    except DatabaseError as exc:
        # A prepared statement made stale by a migration another process ran: once more, prepared anew.
        if not connection.recover_prepared(exc):
            raise
        return _rows(prepared, page_sql, values, connection, text_loaded)


def _rows(
    cursor_of: Callable[[], Any],
    page_sql: PageSQL,
    values: Sequence[Any],
    connection: Any,
    text_loaded: Collection[str],
) -> list[tuple[Any, ...]]:
    with cursor_of() as cursor:
        if text_loaded:
            _load_as_text(cursor.cursor, text_loaded)
        cursor.execute(page_sql.sql, page_sql.bind(values, connection))
        return [tuple(row) for row in cursor.fetchall()]


def _load_as_text(cursor: Any, types: Collection[str]) -> None:
    adapters = getattr(cursor, "adapters", None)
    if adapters is None or TextLoader is None:
        return
    for name in types:
        adapters.register_loader(name, TextLoader)


def clear() -> None:
    """Forget every kept query (a setting such as ``DATABASES`` may have changed what they compile to)."""
    with _LOCK:
        _KEPT.clear()
        _DEFAULTS.clear()


# Settings a kept query's text or its parameters' preparation may depend on (the database, its backend, time zones).
SQL_SETTINGS = frozenset({"DATABASES", "DATABASE_ROUTERS", "USE_TZ", "TIME_ZONE"})


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Not on every setting: a test or a benchmark switching another one (LIST_ROWS) keeps what is still valid.
    if setting in SQL_SETTINGS:
        clear()


setting_changed.connect(_on_setting_changed)
