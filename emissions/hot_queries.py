"""The emissions domain's hot queries, registered for ``manage.py check_indexes``.

Each ``build(organization)`` returns the QuerySet the application itself runs: list pages come
from the view's own ``scoped()`` queryset, its filter set and ``KeysetPaginator.page_queryset()``
(the exact query ``KeysetPagination`` evaluates, LIMIT included); summaries are
``RollupQuerySet.summary()`` of the table ``summary_rollups`` picks, as the summary endpoint runs them, and
``EmissionQuerySet.summary()``, which the admin and the endpoint's other windows run, and factor
resolution is ``EmissionFactorQuerySet.average_candidates()``, which the calculator's resolver calls.

Filter values are drawn from the organization's data (its most frequent category, supplier and
method; its latest twelve months; a cursor half-way down its list), so the plans are explained
for realistic, not empty, selections.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlencode

from django.db.models import Count, Model, QuerySet
from django.http import QueryDict
from django_filters import FilterSet

from emissions.api.views import ActivityViewSet, EmissionViewSet, FactorViewSet, SupplierViewSet
from emissions.models import (
    SUMMARY_KEYS,
    ActivityRecord,
    Emission,
    EmissionFactor,
    EmissionQuerySet,
    EmissionRollup,
    Method,
    Organization,
    Supplier,
    SupplierRollup,
    SupplierYearRollup,
)
from emissions.rollups import summary_rollups
from perf.hot_queries import HotQuery, register
from perf.pagination import KeysetPagination, KeysetPaginator

# A term the factor search is typically given; three or more letters, so trigrams can narrow it down.
SEARCH_TERM = "steel"

EMISSIONS = Emission._meta.db_table
ACTIVITIES = ActivityRecord._meta.db_table
FACTORS = EmissionFactor._meta.db_table
SUPPLIERS = Supplier._meta.db_table


# -- building blocks -----------------------------------------------------------------------------


def _filtered(filterset_class: type[FilterSet], queryset: QuerySet, params: Mapping[str, str]) -> QuerySet:
    """``queryset`` filtered by query-string ``params`` the way DjangoFilterBackend filters the view's."""
    filterset = filterset_class(data=dict(params), queryset=queryset)
    if not filterset.is_valid():
        raise ValueError(f"Hot query filter {dict(params)} is invalid: {filterset.errors.as_json()}")
    return filterset.qs


def _page(queryset: QuerySet, ordering: tuple[str, ...], *, after: str | None = None) -> QuerySet:
    """The query ``KeysetPagination`` runs for a default-size page of ``queryset`` (after ``after``)."""
    paginator = KeysetPaginator(queryset, ordering)
    return paginator.page_queryset(first=KeysetPagination.default_limit, after=after)


def _middle_cursor(model: type[Model], organization: Organization, ordering: tuple[str, ...]) -> str | None:
    """A cursor half-way down the organization's list: the position of its middle row (None when empty).

    Found with one OFFSET query over the ordering's index; the page after it is what a client reaches
    after paging through half the list.
    """
    rows = model._default_manager.filter(organization=organization)
    count = rows.count()
    if count == 0:
        return None
    columns = [key.lstrip("-") for key in ordering]
    values = rows.order_by(*ordering).values_list(*columns)[count // 2]
    row = model(**dict(zip(columns, values, strict=True)))
    return KeysetPaginator(rows, ordering).cursor(row)


def _most_frequent(queryset: QuerySet, column: str, default: Any) -> Any:
    """The value of ``column`` with the most rows (ties by value); ``default`` when there is none."""
    top = (
        queryset.exclude(**{f"{column}__isnull": True})
        .order_by()
        .values(column)
        .annotate(n=Count("pk"))
        .order_by("-n", column)
        .first()
    )
    return default if top is None else top[column]


def _filter_values(model: type[Model], organization: Organization) -> dict[str, str]:
    """The organization's most frequent category, supplier and method, as query-string values."""
    rows = model._default_manager.filter(organization=organization)
    supplier = _most_frequent(rows, "supplier_id", None)
    if supplier is None:
        supplier = Supplier.objects.for_org(organization).order_by("pk").values_list("pk", flat=True).first() or 1
    return {
        "category": str(_most_frequent(rows, "category", 1)),
        "supplier": str(supplier),
        "method": str(_most_frequent(rows, "method", Method.SPEND.value)),
    }


def _last_twelve_months(organization: Organization) -> dict[str, str]:
    """``period_from``/``period_to`` covering the twelve months up to the organization's latest period."""
    latest = (
        Emission.objects.for_org(organization).order_by("-period_start").values_list("period_start", flat=True).first()
    ) or dt.date.today()
    first = dt.date(latest.year, 1, 1) if latest.month == 12 else dt.date(latest.year - 1, latest.month + 1, 1)
    following = dt.date(latest.year + 1, 1, 1) if latest.month == 12 else dt.date(latest.year, latest.month + 1, 1)
    return {"period_from": first.isoformat(), "period_to": (following - dt.timedelta(days=1)).isoformat()}


# -- emissions and activities lists ----------------------------------------------------------------


def _list_queries(prefix: str, viewset: type[ActivityViewSet | EmissionViewSet], table: str, kind: str) -> None:
    """First page, a deep page and each filter of one keyset-paginated, period-ordered list."""
    ordering = tuple(viewset.keyset_ordering)
    model = viewset.model
    assert viewset.filterset_class is not None

    def scoped(organization: Organization) -> QuerySet:
        return viewset().scoped(organization.pk)

    def page(queryset: QuerySet, *, after: str | None = None) -> QuerySet:
        # The list pages value rows (perf.rows): the columns of the view's row shape.
        rows = KeysetPagination.row_queryset(queryset, viewset.row_shape().columns, ordering)
        return _page(rows, ordering, after=after)

    def first_page(organization: Organization) -> QuerySet:
        return page(_filtered(viewset.filterset_class, scoped(organization), {}))

    def deep_page(organization: Organization) -> QuerySet:
        after = _middle_cursor(model, organization, ordering)
        return page(_filtered(viewset.filterset_class, scoped(organization), {}), after=after)

    def by(param: str) -> Callable[[Organization], QuerySet]:
        def build(organization: Organization) -> QuerySet:
            value = _filter_values(model, organization)[param]
            return page(_filtered(viewset.filterset_class, scoped(organization), {param: value}))

        return build

    register(HotQuery(f"{prefix}.list.first_page", first_page, f"{kind}_org_period_idx", table))
    register(
        HotQuery(
            f"{prefix}.list.deep_page",
            deep_page,
            f"{kind}_org_period_idx",
            table,
            "The page after the middle row: keyset pages cost the same at any depth.",
        )
    )
    register(HotQuery(f"{prefix}.list.category", by("category"), f"{kind}_org_cat_period_idx", table))
    register(HotQuery(f"{prefix}.list.supplier", by("supplier"), f"{kind}_org_sup_period_idx", table))
    register(HotQuery(f"{prefix}.list.method", by("method"), f"{kind}_org_meth_period_idx", table))


_list_queries("emissions", EmissionViewSet, EMISSIONS, "emission")


def _emissions_period_page(organization: Organization) -> QuerySet:
    scoped = EmissionViewSet().scoped(organization.pk)
    filtered = _filtered(EmissionViewSet.filterset_class, scoped, _last_twelve_months(organization))
    ordering = tuple(EmissionViewSet.keyset_ordering)
    rows = KeysetPagination.row_queryset(filtered, EmissionViewSet.row_shape().columns, ordering)
    return _page(rows, ordering)


register(HotQuery("emissions.list.period", _emissions_period_page, "emission_org_period_idx", EMISSIONS))
_list_queries("activities", ActivityViewSet, ACTIVITIES, "activity")


# -- emissions summary ---------------------------------------------------------------------------


def _summary(group_by: str, *, last_twelve_months: bool = False) -> Callable[[Organization], QuerySet]:
    def build(organization: Organization) -> QuerySet:
        params = _last_twelve_months(organization) if last_twelve_months else {}
        scoped = EmissionViewSet().scoped(organization.pk)
        filtered = cast(EmissionQuerySet, _filtered(EmissionViewSet.filterset_class, scoped, params))
        return filtered.summary(group_by)

    return build


for _group_by in SUMMARY_KEYS:
    register(
        HotQuery(
            f"emissions.summary.{_group_by}",
            _summary(_group_by),
            "emission_org_cat_period_idx",
            EMISSIONS,
            "Index-only scan of the covering index: no heap rows read.",
        )
    )
register(
    HotQuery(
        "emissions.summary.category.last_12_months",
        _summary("category", last_twelve_months=True),
        "emission_org_cat_period_idx",
        EMISSIONS,
    )
)


def _rollup_summary(group_by: str, *, one_supplier: bool = False) -> Callable[[Organization], QuerySet]:
    """The summary as the endpoint runs it on PostgreSQL: from the rollup table ``summary_rollups`` picks."""

    def build(organization: Organization) -> QuerySet:
        supplier = _filter_values(Emission, organization)["supplier"] if one_supplier else None
        params = {"supplier": supplier} if supplier else {}
        filters = EmissionViewSet.filterset_class.cleaned(QueryDict(urlencode(params)))
        rollups = summary_rollups(organization.pk, group_by=group_by, filters=filters)
        if rollups is None:
            raise ValueError("The rollups answer no summary here: not PostgreSQL, or ROLLUP_READS is off.")
        return rollups.summary(group_by)

    return build


register(
    HotQuery(
        "emissions.summary.rollups.category",
        _rollup_summary("category"),
        "emission_rollup_key",
        EmissionRollup._meta.db_table,
        "The summaries by category, method and month read a few hundred groups per organization.",
    )
)
register(
    HotQuery(
        "emissions.summary.rollups.supplier",
        _rollup_summary("supplier"),
        "supplier_year_rollup_key",
        SupplierYearRollup._meta.db_table,
    )
)
register(
    HotQuery(
        "emissions.summary.rollups.one_supplier_by_month",
        _rollup_summary("month", one_supplier=True),
        "supplier_rollup_key",
        SupplierRollup._meta.db_table,
    )
)


# -- factors and suppliers -----------------------------------------------------------------------


def _factor_search(organization: Organization) -> QuerySet:
    scoped = FactorViewSet().scoped(organization.pk)
    filtered = _filtered(FactorViewSet.filterset_class, scoped, {"search": SEARCH_TERM})
    return _page(filtered, tuple(FactorViewSet.keyset_ordering))


def _factor_resolution(organization: Organization) -> QuerySet:
    # The activity key the organization's latest record selected, else any public factor's.
    activity = (
        ActivityRecord.objects.for_org(organization)
        .exclude(activity="")
        .order_by("-period_start", "-id")
        .values_list("activity", flat=True)
        .first()
    ) or EmissionFactor.objects.order_by("pk").values_list("activity", flat=True).first()
    return EmissionFactor.objects.average_candidates(organization, [activity or ""])


def _supplier_list(organization: Organization) -> QuerySet:
    return _page(SupplierViewSet().scoped(organization.pk), tuple(SupplierViewSet.keyset_ordering))


register(HotQuery("factors.search", _factor_search, "factor_search_trgm_idx", FACTORS))
register(HotQuery("factors.resolve", _factor_resolution, "factor_activity_id_idx", FACTORS))
register(HotQuery("suppliers.list", _supplier_list, "supplier_org_name_idx", SUPPLIERS))
