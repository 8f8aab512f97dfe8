"""Query-string filters for the list endpoints (django-filter FilterSets).

Bad filter values (``?year=abc``, ``?category=99``) become a 400 naming the parameter.
"""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from emissions.models import ActivityRecord, Category, Emission, EmissionFactor, FactorDataset, Method


class FactorFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", help_text="Case-insensitive text in name or activity")
    source = django_filters.ChoiceFilter(field_name="dataset__source", choices=FactorDataset.Source.choices)
    region = django_filters.CharFilter(field_name="region", lookup_expr="iexact")
    year = django_filters.NumberFilter(field_name="year")
    unit = django_filters.CharFilter(field_name="unit")
    activity = django_filters.CharFilter(field_name="activity")
    dataset_version = django_filters.CharFilter(field_name="dataset__version")

    class Meta:
        model = EmissionFactor
        fields = ["search", "source", "region", "year", "unit", "activity", "dataset_version"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(name__icontains=value) | Q(activity__icontains=value))


class PeriodFilterSet(django_filters.FilterSet):
    """Filters shared by activities and emissions.

    ``period_from``/``period_to`` select rows whose whole period lies inside the window
    (``period_start >= period_from`` and ``period_end <= period_to``), so a yearly report
    never counts a line that straddles the year end twice. ``supplier`` is a plain id: an id
    of another organization's supplier simply matches nothing.
    """

    category = django_filters.TypedChoiceFilter(choices=Category.choices, coerce=int)
    supplier = django_filters.NumberFilter(field_name="supplier_id")
    method = django_filters.ChoiceFilter(choices=Method.choices)
    period_from = django_filters.DateFilter(field_name="period_start", lookup_expr="gte")
    period_to = django_filters.DateFilter(field_name="period_end", lookup_expr="lte")


class ActivityFilter(PeriodFilterSet):
    class Meta:
        model = ActivityRecord
        fields = ["category", "supplier", "method", "period_from", "period_to"]


class EmissionFilter(PeriodFilterSet):
    class Meta:
        model = Emission
        fields = ["category", "supplier", "method", "period_from", "period_to"]
