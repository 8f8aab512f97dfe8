"""``PeriodFilterSet.cleaned`` and ``period_bounds``: what the filter set's own form cleans."""

from __future__ import annotations

import datetime as dt

import django_filters
import pytest
from django.http import QueryDict

from emissions.api.filters import ActivityFilter, EmissionFilter

QUERIES = [
    "",
    "period_from=2025-01-01&period_to=2025-03-31",
    "period_from=2025-02-30",  # not a date: left out, as the filter set's own form leaves it out
    "category=3&supplier=12&method=spend",
    "category=99&supplier=1.5&period_to=2025-12-31",
    "period_from=2025-01-01&period_from=2026-01-01",  # repeated: the last value, as a form reads a QueryDict
    "unknown=1&period_to=",
]


@pytest.mark.parametrize("filterset_class", [EmissionFilter, ActivityFilter])
@pytest.mark.parametrize("query", QUERIES)
def test_cleaned_is_what_the_filter_sets_own_form_cleans(filterset_class, query):
    data = QueryDict(query)
    # The form django-filter makes for the filter set on each request, the reference.
    form = django_filters.FilterSet.get_form_class(filterset_class(data=data))(data)
    form.is_valid()

    assert filterset_class.cleaned(data) == form.cleaned_data
    assert filterset_class.period_bounds(data) == (
        form.cleaned_data.get("period_from"),
        form.cleaned_data.get("period_to"),
    )


def test_period_bounds_are_the_cleaned_dates():
    assert EmissionFilter.period_bounds(QueryDict("period_from=2025-01-01&period_to=2025-03-31")) == (
        dt.date(2025, 1, 1),
        dt.date(2025, 3, 31),
    )
    assert EmissionFilter.period_bounds(QueryDict("period_from=nope")) == (None, None)


def test_a_filter_set_of_its_own_is_cleaned_by_its_own_form():
    class Searched(EmissionFilter):  # method=: not django-filter's own filtering, so its own form is built
        search = django_filters.CharFilter(method="filter_search")

    cleaned = Searched.cleaned(QueryDict("search=steel&period_to=2025-01-31"))

    assert (cleaned["search"], cleaned["period_to"]) == ("steel", dt.date(2025, 1, 31))
