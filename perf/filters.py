"""django-filter's DRF backend without the cost of a filter set that cannot filter anything.

``DjangoFilterBackend`` builds the view's ``FilterSet`` on every request: a form class made on the fly, its
fields deep-copied, the form cleaned, every filter applied to its empty value. For a request whose query names
none of the filters (a next page, an unfiltered first page) all that returns the queryset as it came, about
as long as writing a 100-row page from value rows. ``FilterBackend`` returns it at once, when the filter set
is one whose answer to an absent parameter is known to be "no filter": every filter optional, read from its
own name by a plain widget, and a no-op on an empty value (django-filter's own ``filter`` methods and
``method=`` filters, a ``ChoiceFilter`` whose ``null_value`` is not empty), and the ``FilterSet`` and its form
using django-filter's and Django's own validation and filtering. Any other filter set, and any request naming
one of its filters, goes through ``DjangoFilterBackend`` unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.forms.widgets import ChoiceWidget, MultiWidget, Widget
from django_filters.constants import EMPTY_VALUES
from django_filters.filters import FilterMethod
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request

# FilterSet methods whose stock behaviour makes an absent parameter a no-op (as the class resolves them).
_FILTERSET_METHODS = ("filter_queryset", "get_form_class", "is_valid")
_FILTERSET_PROPERTIES = ("qs", "form", "errors")


def _inert_filter(filter_: django_filters.Filter) -> bool:
    """Whether ``filter_`` leaves a queryset as it is when its parameter is absent from the query."""
    field_class, widget = filter_.field_class, filter_.extra.get("widget")
    if filter_.extra.get("required"):
        return False
    widget_class = widget if isinstance(widget, type) else type(widget) if widget is not None else None
    if widget_class is None:
        widget_class = field_class.widget if isinstance(field_class.widget, type) else type(field_class.widget)
    reads = getattr(widget_class, "value_from_datadict", None)
    if issubclass(widget_class, MultiWidget) or reads not in (
        Widget.value_from_datadict,
        ChoiceWidget.value_from_datadict,
    ):
        return False  # reads other keys (name_min, ...), or a checkbox's absent means False
    if getattr(widget_class, "allow_multiple_selected", False):
        return False
    applied = filter_.filter
    if isinstance(applied, FilterMethod):
        return type(applied).__call__ is FilterMethod.__call__  # returns the queryset for an empty value
    method = getattr(type(filter_), "filter", None)
    if method is django_filters.ChoiceFilter.filter:
        return filter_.null_value not in EMPTY_VALUES
    return method is django_filters.Filter.filter


@functools.cache
def _inert(filterset_class: type[django_filters.FilterSet]) -> bool:
    """Whether a request naming none of ``filterset_class``'s filters gets the queryset back as it came."""
    stock = django_filters.FilterSet
    if any(getattr(filterset_class, name) is not getattr(stock, name) for name in _FILTERSET_METHODS):
        return False
    if any(
        _class_attribute(stock, name) is not _class_attribute(filterset_class, name) for name in _FILTERSET_PROPERTIES
    ):
        return False
    if filterset_class._meta.form is not forms.Form:
        return False
    return all(_inert_filter(filter_) for filter_ in filterset_class.base_filters.values())


def _class_attribute(cls: type, name: str) -> Any:
    return next(vars(klass)[name] for klass in cls.__mro__ if name in vars(klass))


class FilterBackend(DjangoFilterBackend):
    """``DjangoFilterBackend``, which skips building the filter set for a request that names none of its filters
    when that filter set is known to filter nothing then (see the module)."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filterset_class = self.get_filterset_class(view, queryset)
        if (
            filterset_class is not None
            and type(self).get_filterset_kwargs is DjangoFilterBackend.get_filterset_kwargs
            and not any(name in request.query_params for name in filterset_class.base_filters)
            and _inert(filterset_class)
        ):
            return queryset.all()  # FilterSet.qs's copy
        return super().filter_queryset(request, queryset, view)
