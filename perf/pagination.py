"""Keyset (cursor) pagination for DRF on top of django-cursor-pagination.

Pages are found with a WHERE on the ordering columns (``(period_start, id) < cursor``)
instead of OFFSET, so the cost of a page does not grow with its depth, and rows inserted
while a client walks the list neither repeat nor vanish. No COUNT query is run.

A view sets ``keyset_ordering`` (e.g. ``("-period_start", "-id")``); the last key must be
unique (the primary key) so that ties on the earlier keys are broken deterministically.

Index use: for keys whose column can never be NULL the pages are ordered with a plain
``ORDER BY period_start DESC, id DESC`` and found with the row-value comparison
``(period_start, id) <= (x, y)`` minus the cursor row itself. PostgreSQL turns that into an
index condition on an index such as ``(organization, period_start DESC, id DESC)``: the scan
starts exactly at the cursor and stops after one page, however many rows share the cursor's
``period_start``. (The expanded form
``period_start <= x AND (period_start < x OR (period_start = x AND id < y))`` can only use the
bound on the leading key, so it reads and discards every row of the cursor's month that precedes
the cursor: thousands for a month of imported activities.) Orderings that mix ascending and
descending keys have no single row comparison and keep the expanded form, as do backends without
row values. The library's NULL handling (``NULLS LAST`` and ``OR col IS NULL`` branches) cannot
use such an index; it is kept for nullable keys, and its cursor predicate for any ordering with one.
"""

from __future__ import annotations

import json
import warnings
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from cursor_pagination import CursorPaginator, InvalidCursor
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import DecimalField, F, Field, ForeignObject, Func, Model, Q, QuerySet, Value
from django.db.models.expressions import OrderBy
from django.db.models.lookups import Exact, GreaterThanOrEqual, LessThanOrEqual
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response

from perf import keyset_sql


def path_field(model: type[Model], path: str) -> Field:
    """The model field a lookup path or ordering key (``-dataset__source``) ends on, following relations; raises
    ``FieldDoesNotExist`` when a part is no field."""
    return _walk(model, path)[0]


def _nullable(model: type[Model], path: str) -> bool:
    """Whether an ordering key can read NULL: its column is nullable or it is reached through a nullable relation."""
    return _walk(model, path)[1]


def _walk(model: type[Model], path: str) -> tuple[Field, bool]:
    """``(last field, nullable)`` for an ordering key, following relations."""
    field: Any = None
    nullable = False
    for part in path.lstrip("-").split("__"):
        field = model._meta.get_field(part)
        nullable = nullable or bool(field.null)
        if field.is_relation and field.related_model is not None:
            model = field.related_model
    if field is None:
        raise FieldDoesNotExist(path)
    return field, nullable


class RowValue(Func):
    """``(a, b, ...)``: a SQL row value, which compares lexicographically (``(a, b) < (x, y)``).

    Compared through ``LessThan``/``GreaterThan``, whose operands may be any expressions; the
    values inside are ``Value``s with their column's field, so they travel as typed parameters.
    """

    function = ""
    template = "(%(expressions)s)"

    def __init__(self, *expressions: Any) -> None:
        # A row has no single Django field type; a plain Field compiles without casts.
        super().__init__(*expressions, output_field=Field())


def _row_comparison_supported(connection: BaseDatabaseWrapper) -> bool:
    """Whether the backend compares row values with ``<``/``>``.

    Django's ``supports_tuple_lookups`` is False on SQLite for tuple ``IN`` lists, but SQLite has
    compared row values since 3.15 (Django 5.2 requires 3.31); Oracle has neither.
    """
    return bool(connection.features.supports_tuple_lookups) or connection.vendor == "sqlite"


class KeysetPaginator(CursorPaginator):
    """CursorPaginator with index-friendly SQL for NOT NULL keys and base64 JSON cursors.

    - Keys that cannot be NULL (``field.null`` is False along the whole path) are ordered with
      plain ``ORDER BY col [DESC]`` and compared with typed values (a ``date`` for a DateField,
      an ``int`` for the id), which an index on those columns in that order serves without a
      Sort. The library emits ``NULLS LAST`` (an index declared ``DESC`` is ``NULLS FIRST``)
      and compares text parameters, which forces PostgreSQL to sort the whole organization
      on every page. Orderings with a nullable key keep the library's behaviour unchanged.
    - Cursors are base64 JSON lists instead of ``|``-joined strings: the library's format breaks
      when a key value contains its delimiter (a supplier named "A|B" on a page boundary would
      yield an unusable next link); JSON needs no escaping rules.
    """

    def __init__(self, queryset: QuerySet, ordering: Sequence[str]) -> None:
        # Set before super().__init__, which calls _nulls_ordering.
        self.fields = {key.lstrip("-"): _walk(queryset.model, key) for key in ordering}
        # For pages of value rows (KeysetPagination.paginate_rows): each ordering key's index in a row.
        self.row_columns: list[int] | None = None
        # Cursor values as keyset_sql.Slot (the query is compiled to be kept, never run) instead of Values.
        self.slot_values = False
        super().__init__(queryset, ordering)

    @property
    def index_friendly(self) -> bool:
        """True when no ordering key can be NULL, so the plain ORDER BY and keyset predicate apply."""
        return not any(nullable for _, nullable in self.fields.values())

    def _nulls_ordering(self, ordering: Sequence[str], from_last: bool = False) -> list[str | OrderBy]:
        plain: list[str | OrderBy] = []
        for key in ordering:
            if self.fields[key.lstrip("-")][1]:
                plain.extend(super()._nulls_ordering([key], from_last=from_last))
            else:
                # NULLS FIRST/LAST is moot for a NOT NULL column, and omitting it lets a plain index match.
                plain.append(key)
        return plain

    def apply_cursor(self, cursor: str, queryset: QuerySet, from_last: bool, reverse: bool = False) -> QuerySet:
        """Rows strictly after (or, with ``reverse``, before) the cursor's position in the ordering.

        For NOT NULL keys in one direction, ``(a DESC, b DESC)`` after ``(x, y)``, this is the row
        comparison ``(a, b) <= (x, y) AND NOT (a = x AND b = y)`` (``>=`` for ascending keys or a
        ``before`` page), which an index on ``(…, a DESC, b DESC)`` takes as its start condition, so
        a deep page costs what the first does. Mixed directions (and backends without row values)
        get ``a <= x AND (a < x OR (a = x AND b > y))``.
        """
        if not self.index_friendly:
            return super().apply_cursor(cursor, queryset, from_last, reverse=reverse)
        values = self.cursor_values(cursor)
        columns = [key.lstrip("-") for key in self.ordering]
        # Descending key walked forward, or ascending key walked backward: smaller values come next.
        ops = ["lt" if reverse != key.startswith("-") else "gt" for key in self.ordering]
        if self.compares_rows(queryset.db):
            # (a, b) <= (x, y) AND NOT (a = x AND b = y), not the equivalent (a, b) < (x, y): PostgreSQL
            # estimates a row comparison from its first column alone, and "a < x" leaves out every row
            # sharing the cursor's a (a whole month of activities). Underestimated, the page after a
            # cursor in the last month is planned as "read them all and sort"; "a <= x" counts them.
            # The index scan still starts at the cursor; the NOT removes the cursor row itself.
            lookup = LessThanOrEqual if ops[0] == "lt" else GreaterThanOrEqual
            row = RowValue(*(F(column) for column in columns))
            cursor_row = RowValue(*(self._cursor_value(index, value) for index, value in enumerate(values)))
            # Lookups on Values: the SQL of Q(a=x, b=y) (which sorts its keywords), with values keyset_sql can mark.
            equal = [
                Exact(F(column), self._cursor_value(i, value))
                for column, i, value in sorted(zip(columns, range(len(values)), values, strict=True))
            ]
            return queryset.filter(lookup(row, cursor_row), ~Q(*equal))
        return queryset.filter(self._expanded_predicate(columns, values, ops))

    def cursor_values(self, cursor: str) -> list[Any]:
        """The cursor's position as its keys' Python values (NOT NULL keys only). Raises ``InvalidCursor``."""
        position = self.decode_cursor(cursor)
        if len(position) != len(self.ordering):
            raise InvalidCursor(self.invalid_cursor_message)
        values: list[Any] = []
        for key, raw in zip(self.ordering, position, strict=True):
            field = self.fields[key.lstrip("-")][0]
            try:
                value = None if raw is None else field.to_python(raw)
            except DjangoValidationError as exc:
                raise InvalidCursor(self.invalid_cursor_message) from exc
            if value is None:  # a NOT NULL column has no NULL position
                raise InvalidCursor(self.invalid_cursor_message)
            values.append(value)
        return values

    def compares_rows(self, db: str) -> bool:
        """Whether a cursor is applied as a row comparison (``apply_cursor``): NOT NULL keys, more than one, all in
        one direction, on a backend comparing row values."""
        directions = {key.startswith("-") for key in self.ordering}
        return (
            self.index_friendly
            and len(self.ordering) > 1
            and len(directions) == 1
            and _row_comparison_supported(connections[db])
        )

    def _cursor_value(self, index: int, value: Any) -> Value:
        field = self.fields[self.ordering[index].lstrip("-")][0]
        if self.slot_values:
            return keyset_sql.Slot(value, field, index)
        return Value(value, output_field=field)

    @staticmethod
    def _expanded_predicate(columns: Sequence[str], values: Sequence[Any], ops: Sequence[str]) -> Q:
        """``a <op0>= x AND (a <op0> x OR (a = x AND b <op1> y) OR …)``: the keyset condition without row values.

        The OR is the exact condition; the redundant bound on the leading key gives an index a
        place to start (the first key's block of equal values is still read and filtered).
        """
        filtering = Q()
        equal: dict[str, Any] = {}
        for column, value, op in zip(columns, values, ops, strict=True):
            filtering |= Q(**equal, **{f"{column}__{op}": value})
            equal[column] = value
        if len(columns) > 1:
            filtering = Q(**{f"{columns[0]}__{ops[0]}e": values[0]}) & filtering
        return filtering

    def position_from_instance(self, instance: Any) -> list[str]:
        """The cursor position of a page row: a model instance, or a value row when ``row_columns`` is set."""
        if self.row_columns is None:
            return super().position_from_instance(instance)
        values = (instance[index] for index in self.row_columns)
        # As the library writes an instance's attributes: str() of each key, its none_string for NULL.
        return [self.none_string if value is None else str(value) for value in values]

    def page_queryset(
        self, first: int | None = None, last: int | None = None, after: str | None = None, before: str | None = None
    ) -> QuerySet:
        """The queryset ``page()`` evaluates for these arguments (for EXPLAIN and diagnostics)."""
        return self._apply_paginator_arguments(self.queryset, first, last, after, before)

    def encode_cursor(self, position: list[str]) -> str:
        return urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode("ascii")

    @classmethod
    def decode_cursor(cls, cursor: str) -> list[str | None]:  # a classmethod: reading a cursor needs no instance
        try:
            values = json.loads(urlsafe_b64decode(cursor.encode("ascii")))
        except (ValueError, UnicodeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
            raise InvalidCursor(cls.invalid_cursor_message) from exc
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidCursor(cls.invalid_cursor_message)
        return [None if v == cls.none_string else v for v in values]


class KeysetPagination(BasePagination):
    """``?limit=&after=|before=`` pages in the view's ``keyset_ordering``.

    Response: ``{"next": url|null, "previous": url|null, "results": [...]}``. ``after`` walks
    forward from a row, ``before`` walks backward to it; both cursors are opaque to clients.
    """

    default_limit = 100
    max_limit = 1000
    limit_query_param = "limit"
    after_query_param = "after"
    before_query_param = "before"
    default_ordering: tuple[str, ...] = ("-id",)

    def __init__(self) -> None:
        self.request: Request | None = None
        # _link's split of the request's absolute URL and its parsed query, for that request.
        self._parsed_url: tuple[Request, tuple[str, str, str, str], dict[str, list[str]]] | None = None
        self.paginator: KeysetPaginator | None = None
        self.page: Sequence[Any] = []
        self.has_next = False
        self.has_previous = False

    # -- request parsing -------------------------------------------------------------------

    def get_ordering(self, view: Any) -> tuple[str, ...]:
        return tuple(getattr(view, "keyset_ordering", self.default_ordering))

    def get_limit(self, request: Request) -> int:
        raw = request.query_params.get(self.limit_query_param)
        if raw is None or raw == "":
            return self.default_limit
        try:
            limit = int(raw)
        except ValueError:
            limit = 0
        if not 1 <= limit <= self.max_limit:
            raise ValidationError(
                {self.limit_query_param: [f"Must be an integer between 1 and {self.max_limit}; got '{raw}'."]}
            )
        return limit

    def _cursor(self, request: Request, param: str, queryset: QuerySet, ordering: tuple[str, ...]) -> str | None:
        """The cursor in ``param``, checked to decode to one valid value per ordering key.

        django-cursor-pagination compares the decoded strings in SQL, so a malformed value
        would otherwise surface as a database error (500) instead of a 400.
        """
        raw = request.query_params.get(param)
        if raw is None or raw == "":
            return None
        message = {param: ["Invalid cursor; use the next/previous links returned by this endpoint."]}
        try:
            values = KeysetPaginator.decode_cursor(raw)  # no paginator (a queryset clone) needed to read it
        except (InvalidCursor, UnicodeError):
            raise ValidationError(message) from None
        if len(values) != len(ordering):
            raise ValidationError(message)
        for key, value in zip(ordering, values, strict=True):
            field = path_field(queryset.model, key)
            if isinstance(field, ForeignObject):
                # A relation's own validators check nothing; its column's (the target's) bound a bigint.
                field = field.target_field
            if value is None:
                if not _nullable(queryset.model, key):
                    raise ValidationError(message)
                continue
            try:
                # to_python checks the type; the validators add the column's range (bigint, length). A time without
                # its offset (the cursors written here carry one) is refused, not read in the server's zone: a
                # DateTimeField warns of a date alone as it converts it, and passes a naive time through.
                with warnings.catch_warnings():
                    warnings.simplefilter("error", RuntimeWarning)
                    typed = field.to_python(value)
                field.run_validators(typed)
                if isinstance(typed, datetime) and settings.USE_TZ and timezone.is_naive(typed):
                    raise ValueError("naive datetime")
            except (DjangoValidationError, ValueError, TypeError, RuntimeWarning):
                raise ValidationError(message) from None
        return raw

    # -- DRF pagination API ----------------------------------------------------------------

    def paginate_queryset(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: Any = None
    ) -> list[Any]:
        """One page of ``queryset``. Precondition: a ``QuerySet``; keyset pages are found in SQL, not in a list."""
        return self._page(*self._prepare(queryset, request, view))

    def paginate_rows(
        self,
        queryset: QuerySet[Any, Any],
        request: Request,
        view: Any,
        columns: Sequence[str],
        *,
        text_loaded: Collection[str] = (),
    ) -> list[tuple[Any, ...]]:
        """``paginate_queryset`` as ``values_list(*columns)`` tuples, with the same links (ordering keys missing from
        ``columns`` are read too, after them). For ``perf.rows``: one query, no model instances.

        The page query's SQL is kept per shape (``perf.keyset_sql``): a page of a list whose query this process
        has compiled before binds its cursor's values to that SQL, without building or compiling the query.
        ``text_loaded``: PostgreSQL types the caller takes as text (``perf.rows.RowShape.text_loaded``), loaded so
        when the kept SQL runs, unless an ordering key is of one (its cursor is written from the Python value)."""
        ordering = self.get_ordering(view)
        names = self.row_names(columns, ordering)
        shape = keyset_sql.base_shape(queryset) if isinstance(queryset, QuerySet) else None
        if shape is None:
            return self._paginate_rows(queryset, request, view, names, ordering)
        limit, after, before = self._arguments(queryset, request, ordering)
        paginator = KeysetPaginator(queryset, ordering)
        if not paginator.compares_rows(queryset.db) and (after or before):
            return self._paginate_rows(queryset, request, view, names, ordering)
        cursor = after or before

        def build() -> QuerySet:
            return self.row_page_queryset(queryset, names, ordering, limit, after, before, slot_values=True)

        key = (shape, tuple(names), ordering, "before" if before else "after" if after else None, limit)
        page_sql = keyset_sql.compiled(key, build)
        if page_sql is None:
            return self._paginate_rows(queryset, request, view, names, ordering)
        values = paginator.cursor_values(cursor) if cursor else []
        if text_loaded and any(isinstance(field, DecimalField) for field, _ in paginator.fields.values()):
            text_loaded = ()
        rows = keyset_sql.execute(page_sql, values, queryset.db, text_loaded=text_loaded)
        self.request, self.paginator = request, paginator
        paginator.row_columns = [names.index(key.lstrip("-")) for key in ordering]
        # CursorPaginator.page's answer for these rows.
        self.page = rows[:limit]
        if before:
            self.page.reverse()
            self.has_previous, self.has_next = len(rows) > limit, True
        else:
            self.has_next, self.has_previous = len(rows) > limit, bool(after)
        return self.page

    def _paginate_rows(
        self, queryset: QuerySet[Any, Any], request: Request, view: Any, names: list[str], ordering: tuple[str, ...]
    ) -> list[tuple[Any, ...]]:
        limit, after, before = self._prepare(queryset.values_list(*names), request, view)
        assert self.paginator is not None
        self.paginator.row_columns = [names.index(key.lstrip("-")) for key in ordering]
        return self._page(limit, after, before)

    @classmethod
    def row_page_queryset(
        cls,
        queryset: QuerySet[Any, Any],
        names: Sequence[str],
        ordering: Sequence[str],
        limit: int,
        after: str | None,
        before: str | None,
        *,
        slot_values: bool = False,
    ) -> QuerySet:
        """The query ``paginate_rows`` runs for a page of ``names`` (``row_names``): ``limit`` + 1 rows after or
        before a cursor. ``slot_values``: the cursor's values as ``keyset_sql.Slot``s (to be compiled and kept)."""
        paginator = KeysetPaginator(queryset.values_list(*names), ordering)
        paginator.slot_values = slot_values
        if before:
            return paginator.page_queryset(last=limit, before=before)
        return paginator.page_queryset(first=limit, after=after)

    @staticmethod
    def row_names(columns: Sequence[Any], ordering: Sequence[str]) -> list[Any]:
        """What ``paginate_rows`` reads: ``columns``, then the ordering keys missing from them."""
        keys = [key.lstrip("-") for key in ordering]
        return [*columns, *(key for key in keys if key not in columns)]

    @classmethod
    def row_queryset(cls, queryset: QuerySet[Any, Any], columns: Sequence[Any], ordering: Sequence[str]) -> QuerySet:
        """The ``values_list`` queryset ``paginate_rows`` pages (for EXPLAIN and diagnostics)."""
        return queryset.values_list(*cls.row_names(columns, ordering))

    def _prepare(
        self, queryset: QuerySet[Any, Any] | Sequence[Any], request: Request, view: Any
    ) -> tuple[int, str | None, str | None]:
        """Check the request's parameters and set up the paginator: ``(limit, after, before)``."""
        if not isinstance(queryset, QuerySet):
            raise TypeError(f"{type(self).__name__} pages a QuerySet, not a {type(queryset).__name__}")
        ordering = self.get_ordering(view)
        arguments = self._arguments(queryset, request, ordering)
        self.request = request
        self.paginator = KeysetPaginator(queryset, ordering)
        return arguments

    def _arguments(
        self, queryset: QuerySet[Any, Any], request: Request, ordering: tuple[str, ...]
    ) -> tuple[int, str | None, str | None]:
        """The request's ``(limit, after, before)``, checked (a 400 for any bad one)."""
        limit = self.get_limit(request)
        after = self._cursor(request, self.after_query_param, queryset, ordering)
        before = self._cursor(request, self.before_query_param, queryset, ordering)
        if after and before:
            raise ValidationError({self.before_query_param: ["Use either 'after' or 'before', not both."]})
        return limit, after, before

    def _page(self, limit: int, after: str | None, before: str | None) -> list[Any]:
        assert self.paginator is not None
        if before:
            page = self.paginator.page(last=limit, before=before)
        else:
            page = self.paginator.page(first=limit, after=after)
        self.page = list(page)
        self.has_next = page.has_next
        self.has_previous = page.has_previous
        return self.page

    def _link(self, param: str, row: Any) -> str:
        """``replace_query_param(remove_query_param(url, other), param, cursor)`` (DRF's), for the request's absolute
        URL split and its query parsed once per request instead of twice per link: a page's two links cost as much
        as its query's Python side otherwise. The same URL: DRF's second parse reads back exactly what its first
        ``urlencode`` wrote (``parse_qs`` undoes ``urlencode``), and its ``urlsplit`` what its ``urlunsplit`` joined."""
        assert self.request is not None and self.paginator is not None
        parsed = self._parsed_url
        if parsed is None or parsed[0] is not self.request:
            scheme, netloc, path, query, fragment = urlsplit(self.request.build_absolute_uri())
            parsed = self._parsed_url = (
                self.request,
                (scheme, netloc, path, fragment),
                parse_qs(query, keep_blank_values=True),
            )
        _, (scheme, netloc, path, fragment), query_dict = parsed
        other = self.before_query_param if param == self.after_query_param else self.after_query_param
        params = {key: values for key, values in query_dict.items() if key != other}
        params[param] = [self.paginator.cursor(row)]
        return urlunsplit((scheme, netloc, path, urlencode(sorted(params.items()), doseq=True), fragment))

    def get_next_link(self) -> str | None:
        if not self.has_next or not self.page:
            return None
        return self._link(self.after_query_param, self.page[-1])

    def get_previous_link(self) -> str | None:
        if not self.has_previous or not self.page:
            return None
        return self._link(self.before_query_param, self.page[0])

    def get_paginated_data(self, data: Any) -> dict[str, Any]:
        """What ``get_paginated_response`` answers, without the response: for a body written from value rows
        (``perf.rows``), which makes its own."""
        return {"next": self.get_next_link(), "previous": self.get_previous_link(), "results": data}

    def get_paginated_response(self, data: Any) -> Response:
        return Response(self.get_paginated_data(data))

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {"next": link, "previous": link, "results": schema},
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "description": f"Page size, 1-{self.max_limit} (default {self.default_limit}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_limit},
            },
            {
                "name": self.after_query_param,
                "required": False,
                "in": "query",
                "description": "Cursor from a 'next' link: the page after that row.",
                "schema": {"type": "string"},
            },
            {
                "name": self.before_query_param,
                "required": False,
                "in": "query",
                "description": "Cursor from a 'previous' link: the page before that row.",
                "schema": {"type": "string"},
            },
        ]
