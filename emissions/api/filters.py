"""Query-string filters for the list endpoints (django-filter FilterSets).

Bad filter values (``?year=abc``, ``?category=99``, ``?supplier=1.5``) become a 400 naming the
parameter.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import QueryDict
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from calculator import rules
from emissions.models import ID_MAX, ActivityRecord, Category, Emission, EmissionFactor, FactorDataset, Method
from perf.filters import filter_form

INTEGER_RE = re.compile(r"[0-9]+")


class StrictIntegerField(forms.IntegerField):
    """A whole number written with digits only.

    Django's ``IntegerField`` accepts ``2025.0`` and django-filter's ``NumberFilter`` a decimal
    that the integer column then truncates (``?supplier=1.5`` matched supplier 1); here both are
    errors.
    """

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not INTEGER_RE.fullmatch(text):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return int(text)


@extend_schema_field(OpenApiTypes.INT)  # drf-spectacular would say "number" for a filter on a foreign key id
class IntegerFilter(django_filters.NumberFilter):
    """A ``NumberFilter`` (integer in the schema) taking whole numbers only; bounds via ``min_value``/``max_value``."""

    field_class = StrictIntegerField

    def __init__(self, *args: Any, min_value: int | None = None, max_value: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, min_value=min_value, max_value=max_value, **kwargs)
        # The schema states the bounds, so that a value it allows is one the filter accepts.
        bounds = {key: value for key, value in (("minimum", min_value), ("maximum", max_value)) if value is not None}
        extend_schema_field({"type": "integer", **bounds})(self)

    def get_max_validator(self) -> None:
        # NumberFilter adds a 1e50 bound for decimals; the field's own max_value applies instead.
        return None


class FactorFilter(django_filters.FilterSet):
    search = django_filters.CharFilter(method="filter_search", help_text="Case-insensitive text in name or activity")
    source = django_filters.ChoiceFilter(field_name="dataset__source", choices=FactorDataset.Source.choices)
    region = django_filters.CharFilter(field_name="region", lookup_expr="iexact")
    year = IntegerFilter(field_name="year", min_value=rules.YEAR_MIN, max_value=rules.YEAR_MAX)
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
    supplier = IntegerFilter(field_name="supplier_id", min_value=1, max_value=ID_MAX, help_text="Supplier id")
    method = django_filters.ChoiceFilter(choices=Method.choices)
    period_from = django_filters.DateFilter(
        field_name="period_start", lookup_expr="gte", help_text="period_start on or after"
    )
    period_to = django_filters.DateFilter(
        field_name="period_end", lookup_expr="lte", help_text="period_end on or before"
    )

    @classmethod
    def cleaned(cls, query: QueryDict) -> dict[str, Any]:
        """The filters' values in ``query``, parsed by these filters' own form; None where absent, left out where
        invalid (an invalid value makes the request a 400 anyway).

        Every read of a cached list or summary runs this for its cache namespaces (``period_bounds``), hits
        included: the form class is the one the filter backend validates with, made once (``perf.filters
        .filter_form``), not a whole filter set per call (some 5 % of the workers' CPU under load,
        docs/capacity/analysis.md section 12)."""
        form_class = filter_form(cls)
        form = form_class(query) if form_class is not None else cls(data=query).form
        form.is_valid()
        return getattr(form, "cleaned_data", {})

    @classmethod
    def period_bounds(cls, query: QueryDict) -> tuple[dt.date | None, dt.date | None]:
        """(period_from, period_to) of ``query`` (``cleaned``)."""
        cleaned = cls.cleaned(query)
        return cleaned.get("period_from"), cleaned.get("period_to")


class ActivityFilter(PeriodFilterSet):
    class Meta:
        model = ActivityRecord
        fields = ["category", "supplier", "method", "period_from", "period_to"]


class EmissionFilter(PeriodFilterSet):
    class Meta:
        model = Emission
        fields = ["category", "supplier", "method", "period_from", "period_to"]
