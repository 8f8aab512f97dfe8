"""Admin helpers: changelists that stay fast on tables with millions of rows, a raw-id widget
that names only the rows its form field accepts, and the login lockout's backend and client address.

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

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.admin.sites import AdminSite
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import ManyToOneRel, QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.text import Truncator


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


class ScopedRawIdWidget(ForeignKeyRawIdWidget):
    """A raw-id widget whose label names a row only when it is in ``queryset``.

    Django's widget labels any id through the related model's default manager: an id put in the
    add form's URL (``?supplier=41``) or in a submission the form then rejects is shown by name and
    linked, whoever may see that row. This one looks the id up in ``queryset`` (the form field's
    choices), so an id outside it gets no label, in one query as Django's does.
    """

    def __init__(
        self,
        rel: ManyToOneRel,
        admin_site: AdminSite,
        queryset: QuerySet[Any],
        attrs: dict[str, Any] | None = None,
        using: str | None = None,
    ) -> None:
        super().__init__(rel, admin_site, attrs, using)
        self.queryset = queryset

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        key = self.rel.get_related_field().name
        try:
            obj = self.queryset.using(self.db).get(**{key: value})
        except (ValueError, ValidationError, self.queryset.model.DoesNotExist):
            return "", ""
        opts = obj._meta
        try:
            url = reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=(obj.pk,))
        except NoReverseMatch:
            url = ""  # no admin for the related model
        return Truncator(obj).words(14), url


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check (``AUTHENTICATION_BACKENDS``, first), for logins that come with a request.

    The admin's login form always passes its request, and so is checked and counted. ``authenticate()``
    without one comes from code, not from a client (the test client's ``login``, a script): there is no
    client address to count it under, so it goes on to the password check, where axes' own backend would
    raise instead.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        super().authenticate(request, username, password, **kwargs)
        return None


def login_client_address(request: HttpRequest) -> str | None:
    """The client address a failed login is counted under (``AXES_CLIENT_IP_CALLABLE``).

    ``REMOTE_ADDR``, the peer gunicorn sees; when that peer is a reverse proxy listed in
    ``ADMIN_LOGIN_TRUSTED_PROXIES``, the last address in ``X-Forwarded-For``: the one that proxy
    appended. Earlier entries come from the client and could be anything, so they are never used.
    """
    peer = request.META.get("REMOTE_ADDR")
    if peer in settings.ADMIN_LOGIN_TRUSTED_PROXIES:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if forwarded[-1]:
            return forwarded[-1]
    return peer
