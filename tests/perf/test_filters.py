"""perf.filters: the filter set is skipped only where DjangoFilterBackend would have filtered nothing."""

from __future__ import annotations

from typing import Any

import django_filters
import pytest
from django import forms
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from emissions.api.filters import ActivityFilter, EmissionFilter, FactorFilter
from emissions.models import Emission
from perf.filters import FilterBackend, _inert

pytestmark = pytest.mark.django_db


def request(query: dict[str, Any] | None = None) -> Request:
    return Request(APIRequestFactory().get("/", query or {}))


class View:
    def __init__(self, filterset_class: type[django_filters.FilterSet]) -> None:
        self.filterset_class = filterset_class


def both(filterset_class: type[django_filters.FilterSet], query: dict[str, Any] | None = None) -> tuple[str, str]:
    queryset: QuerySet = Emission.objects.all()
    view = View(filterset_class)
    ours = FilterBackend().filter_queryset(request(query), queryset, view)
    theirs = DjangoFilterBackend().filter_queryset(request(query), queryset, view)
    return str(ours.query), str(theirs.query)


@pytest.mark.parametrize("filterset_class", [EmissionFilter, ActivityFilter, FactorFilter])
def test_the_api_s_filter_sets_filter_nothing_without_their_parameters(filterset_class):
    assert _inert(filterset_class)


@pytest.mark.parametrize(
    "query",
    [
        None,
        {"limit": "5", "after": "x"},
        {"category": "4"},
        {"supplier": "7", "period_from": "2025-01-01"},
        {"method": ""},
    ],
)
def test_the_queryset_is_drf_s(query):
    ours, theirs = both(EmissionFilter, query)
    assert ours == theirs


def test_a_bad_value_is_still_a_400():
    with pytest.raises(ValidationError):
        FilterBackend().filter_queryset(request({"category": "99"}), Emission.objects.all(), View(EmissionFilter))


class Required(django_filters.FilterSet):
    category = django_filters.NumberFilter(required=True)

    class Meta:
        model = Emission
        fields = ["category"]


class Ranged(django_filters.FilterSet):
    co2e_kg = django_filters.RangeFilter()  # reads co2e_kg_min / co2e_kg_max

    class Meta:
        model = Emission
        fields = ["co2e_kg"]


class NullChoice(django_filters.FilterSet):
    method = django_filters.ChoiceFilter(choices=[("a", "a")], null_value="")

    class Meta:
        model = Emission
        fields = ["method"]


class Always(django_filters.CharFilter):
    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        return qs.filter(method="spend")


class Custom(django_filters.FilterSet):
    method = Always()

    class Meta:
        model = Emission
        fields = ["method"]


class OwnFiltering(django_filters.FilterSet):
    method = django_filters.CharFilter()

    class Meta:
        model = Emission
        fields = ["method"]

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        return super().filter_queryset(queryset).filter(category=1)


class CleanedForm(forms.Form):
    def clean(self) -> dict[str, Any]:
        raise forms.ValidationError("never")


class OwnForm(django_filters.FilterSet):
    method = django_filters.CharFilter()

    class Meta:
        model = Emission
        fields = ["method"]
        form = CleanedForm


@pytest.mark.parametrize("filterset_class", [Required, Ranged, NullChoice, Custom, OwnFiltering, OwnForm])
def test_filter_sets_that_may_act_without_their_parameters_are_built(filterset_class):
    assert not _inert(filterset_class)
    try:
        theirs = DjangoFilterBackend().filter_queryset(request(), Emission.objects.all(), View(filterset_class))
    except ValidationError:
        with pytest.raises(ValidationError):
            FilterBackend().filter_queryset(request(), Emission.objects.all(), View(filterset_class))
        return
    ours = FilterBackend().filter_queryset(request(), Emission.objects.all(), View(filterset_class))
    assert str(ours.query) == str(theirs.query)
