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
from perf.filters import FilterBackend, _form_class, _inert, _stock_filterset, filter_form

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


# Queries naming some filters: valid ones, several at once, empty values, and each kind of bad value.
NAMED_QUERIES = [
    {"category": "4"},
    {"supplier": "7", "period_from": "2025-01-01"},
    {"method": ""},
    {"method": "spend", "category": "1", "period_to": "2025-12-31", "limit": "5"},
    {"category": "99"},
    {"supplier": "1.5"},
    {"supplier": "0"},
    {"period_from": "2025-13-01", "method": "nope"},
]


def outcome(backend: DjangoFilterBackend, filterset_class: type[django_filters.FilterSet], query: dict) -> Any:
    try:
        queryset = filterset_class._meta.model._default_manager.all()
        return str(backend.filter_queryset(request(query), queryset, View(filterset_class)).query)
    except ValidationError as exc:
        return ("400", exc.detail)


@pytest.mark.parametrize("filterset_class", [EmissionFilter, ActivityFilter])
@pytest.mark.parametrize("query", NAMED_QUERIES)
def test_a_named_filter_filters_and_fails_as_drf_s(filterset_class, query):
    assert _stock_filterset(filterset_class)
    assert outcome(FilterBackend(), filterset_class, query) == outcome(DjangoFilterBackend(), filterset_class, query)


def test_the_form_class_is_made_once(monkeypatch):
    FilterBackend().filter_queryset(request({"category": "1"}), Emission.objects.all(), View(EmissionFilter))

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a filter set was built")

    monkeypatch.setattr(EmissionFilter, "__init__", refused)
    filtered = FilterBackend().filter_queryset(request({"category": "2"}), Emission.objects.all(), View(EmissionFilter))
    assert "category" in str(filtered.query)


def test_forms_share_their_class_s_fields_on_django_s_form_only():
    shared = _form_class(EmissionFilter, Emission.objects.all())
    first, second = shared({"category": "1"}), shared({"category": "99"})
    assert first.fields["category"] is second.fields["category"] is shared.base_fields["category"]
    assert first.fields is not second.fields
    assert first.is_valid() and not second.is_valid()  # each form its own data and errors
    assert first.cleaned_data["category"] == 1 and list(second.errors) == ["category"]
    own = _form_class(OwnForm, Emission.objects.all())  # a form class of its own: its instances get copies
    assert own({}).fields["method"] is not own.base_fields["method"]
    query = {"method": "x"}
    assert outcome(FilterBackend(), OwnForm, query) == outcome(DjangoFilterBackend(), OwnForm, query) == (
        "400", {"__all__": ["never"]})  # fmt: skip


class WithMethod(django_filters.FilterSet):
    method = django_filters.CharFilter(method="by_method")

    class Meta:
        model = Emission
        fields = ["method"]

    def by_method(self, queryset: QuerySet, name: str, value: Any) -> QuerySet:
        return queryset.filter(method=value, category=1)


class OwnInit(django_filters.FilterSet):
    method = django_filters.CharFilter()

    class Meta:
        model = Emission
        fields = ["method"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters["method"].lookup_expr = "iexact"


class ByModel(django_filters.FilterSet):
    supplier = django_filters.ModelChoiceFilter(queryset=lambda request: Emission.objects.none())

    class Meta:
        model = Emission
        fields = ["supplier"]


@pytest.mark.parametrize("filterset_class", [WithMethod, OwnInit, ByModel, Custom, OwnFiltering, FactorFilter])
def test_other_filter_sets_are_built_per_request(filterset_class):
    assert not _stock_filterset(filterset_class)
    name = next(iter(filterset_class.base_filters))
    query = {name: "spend"}
    assert outcome(FilterBackend(), filterset_class, query) == outcome(DjangoFilterBackend(), filterset_class, query)


def test_filter_form_is_made_once_for_a_stock_filter_set():
    form_class = filter_form(EmissionFilter)

    assert filter_form(EmissionFilter) is form_class is _form_class(EmissionFilter, Emission.objects.all())
    assert filter_form(ActivityFilter) is not form_class
    assert list(form_class.base_fields) == list(EmissionFilter.base_filters)


def test_filter_form_of_another_filter_set_is_none():
    class Searched(django_filters.FilterSet):  # method=: not django-filter's own filtering
        search = django_filters.CharFilter(method="filter_search")

        class Meta:
            model = Emission
            fields = ["search"]

    assert filter_form(Searched) is None
