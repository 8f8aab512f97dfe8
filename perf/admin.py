"""Admin helpers that keep changelists fast on tables with millions of rows.

Django's admin runs ``SELECT COUNT(*)`` on every changelist page. On PostgreSQL a count
is a full scan of the table (or of an index), which on tens of millions of rows takes
seconds and holds a worker. ``EstimatedCountPaginator`` avoids it:

* an unfiltered queryset on PostgreSQL reads the planner's row estimate
  (``pg_class.reltuples``, refreshed by autovacuum/ANALYZE) instead of counting;
* any other queryset (filtered, other database) is counted with a cap, so the worst
  case is reading ``count_cap`` rows rather than the whole table.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet


class EstimatedCountPaginator(Paginator):
    """Paginator whose ``count`` never scans a whole large table.

    ``count`` is exact below ``estimate_threshold`` rows and approximate above it; with a
    filter it stops counting at ``count_cap`` rows, so only the first ``count_cap``
    results can be paged through (narrow the filter to reach the rest).
    """

    # Below this many (estimated) rows an exact count is cheap, and exact numbers read better.
    estimate_threshold = 100_000
    # An upper bound on how many rows a filtered count may read.
    count_cap = 100_000

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if not isinstance(object_list, QuerySet):
            return len(object_list)
        estimate = self._estimated_rows(object_list)
        if estimate is not None and estimate >= self.estimate_threshold:
            return estimate
        # Ordering is irrelevant to a count and would only make PostgreSQL sort.
        return object_list.order_by()[: self.count_cap].count()

    @staticmethod
    def _is_unfiltered(queryset: QuerySet[Any]) -> bool:
        query = queryset.query
        return (
            not query.where
            and not query.distinct
            and query.combinator is None
            and query.low_mark == 0
            and query.high_mark is None
        )

    def _estimated_rows(self, queryset: QuerySet[Any]) -> int | None:
        """``pg_class.reltuples`` for an unfiltered PostgreSQL queryset, else None.

        ``reltuples`` is -1 for a table that was never vacuumed or analyzed; that is
        treated as "no estimate" so the exact (capped) count is used instead.
        """
        if not self._is_unfiltered(queryset):
            return None
        connection = connections[queryset.db]
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                [connection.ops.quote_name(queryset.model._meta.db_table)],
            )
            row = cursor.fetchone()
        if row is None or row[0] is None or row[0] < 0:
            return None
        return int(row[0])
