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

A request naming some of the filters of a filter set made of django-filter's own parts (``_stock``: its
``FilterSet`` methods, filters whose ``filter`` and ``field`` are django-filter's ``Filter``/``ChoiceFilter``/
``NumberFilter``'s, no ``method=``) is validated by the form class ``FilterSet.get_form_class`` makes, built once
per filter set class and model instead of per request (with a deep copy of every filter and a label per field),
and filtered by the class's own filters in the form's order, as ``FilterSet.qs`` does: the same form, the same
errors (a 400 through ``translate_validation``), the same queryset.
"""

from __future__ import annotations

import functools
from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet
from django.forms.widgets import ChoiceWidget, MultiWidget, Widget
from django_filters import utils
from django_filters.constants import EMPTY_VALUES
from django_filters.filters import FilterMethod
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request

# FilterSet methods whose stock behaviour makes an absent parameter a no-op (as the class resolves them).
_FILTERSET_METHODS = ("filter_queryset", "get_form_class", "is_valid")
# A filter's ``field`` and ``filter`` from these classes read nothing of the request, the filter set or the model.
_STOCK_FIELD = frozenset({vars(django_filters.Filter)["field"], vars(django_filters.NumberFilter)["field"]})
_STOCK_FILTER = frozenset({django_filters.Filter.filter, django_filters.ChoiceFilter.filter})
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


def _stock_filterset(filterset_class: type[django_filters.FilterSet]) -> bool:
    """Whether ``filterset_class`` filters as ``_filter`` does: django-filter's own ``FilterSet`` methods and
    constructor, every filter's ``field`` and ``filter`` django-filter's own, none with a ``method``."""
    stock = django_filters.FilterSet
    if any(
        getattr(filterset_class, name) is not getattr(stock, name) for name in (*_FILTERSET_METHODS, "__init__")
    ) or any(
        _class_attribute(stock, name) is not _class_attribute(filterset_class, name) for name in _FILTERSET_PROPERTIES
    ):
        return False
    return all(
        "filter" not in vars(filter_)  # method=: a FilterMethod on the instance
        and _class_attribute(type(filter_), "field") in _STOCK_FIELD
        and getattr(type(filter_), "filter", None) in _STOCK_FILTER
        for filter_ in filterset_class.base_filters.values()
    )


_STOCK: dict[type, bool] = {}
_FORMS: dict[tuple[type, type], type[forms.Form]] = {}


class _SharedFields(dict[str, forms.Field]):
    """A form class's ``base_fields`` whose instances share the fields: ``Form.__init__``'s deep copy of them is a
    shallow copy of the dict. For forms that only validate: cleaning reads a field, never changes it (rendering,
    which may, is not done with these forms)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, forms.Field]:
        return dict(self)


def _form_class(filterset_class: type[django_filters.FilterSet], queryset: QuerySet) -> type[forms.Form]:
    """The form class ``FilterSet.get_form_class`` makes for ``filterset_class`` over ``queryset``'s model (its
    fields' labels name the model's fields), made once; on Django's own ``Form`` its instances share its fields
    (``_SharedFields``): forms deep-copy their class's fields per instance, which cost more than validating the
    query's values."""
    key = (filterset_class, queryset.model)
    form_class = _FORMS.get(key)
    if form_class is None:
        form_class = filterset_class(queryset=queryset).get_form_class()
        if filterset_class._meta.form is forms.Form:  # a form class of its own may change its fields per instance
            form_class.base_fields = _SharedFields(form_class.base_fields)
        _FORMS[key] = form_class
    return form_class


def _stock(filterset_class: type[django_filters.FilterSet]) -> bool:
    """``_stock_filterset(filterset_class)``, found once per class."""
    stock = _STOCK.get(filterset_class)
    if stock is None:
        stock = _STOCK[filterset_class] = _stock_filterset(filterset_class)
    return stock


def filter_form(filterset_class: type[django_filters.FilterSet]) -> type[forms.Form] | None:
    """The class of the form a filter set of django-filter's own parts (``_stock_filterset``) validates a query with,
    over its ``Meta.model``: the one ``FilterBackend`` uses, made once (``_form_class``), the class its
    ``FilterSet.form`` would be. None for any other filter set (its ``form`` or ``__init__`` may be its own): build it,
    ``filterset_class(data=...).form``.

    For reading a query's filter values outside the filter backend (a view's cache namespaces depend on its period):
    ``filterset_class(data=query).form`` would deep-copy every filter and make a form class each time.
    """
    if _stock(filterset_class):
        return _form_class(filterset_class, filterset_class._meta.model._default_manager.all())
    return None


class FilterBackend(DjangoFilterBackend):
    """``DjangoFilterBackend``, which skips building the filter set for a request that names none of its filters
    when that filter set is known to filter nothing then, and validates and filters with a form class made once for
    a filter set of django-filter's own parts (see the module)."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is None or type(self).get_filterset_kwargs is not DjangoFilterBackend.get_filterset_kwargs:
            return super().filter_queryset(request, queryset, view)
        if not any(name in request.query_params for name in filterset_class.base_filters):
            if _inert(filterset_class):
                return queryset.all()  # FilterSet.qs's copy
            return super().filter_queryset(request, queryset, view)
        if (
            not _stock(filterset_class)
            or not self.raise_exception
            or type(self).get_filterset is not DjangoFilterBackend.get_filterset
        ):
            return super().filter_queryset(request, queryset, view)
        return self._filter(filterset_class, request, queryset)

    @staticmethod
    def _filter(filterset_class: type[django_filters.FilterSet], request: Request, queryset: QuerySet) -> QuerySet:
        """``DjangoFilterBackend.filter_queryset`` for a stock filter set (``_stock_filterset``) and a request naming
        some of its filters: ``FilterSet.is_valid``, ``errors`` and ``qs`` on the same form."""
        form = _form_class(filterset_class, queryset)(request.query_params, prefix=None)
        if not form.is_valid():
            raise utils.translate_validation(form.errors)
        filtered = queryset.all()
        filters = filterset_class.base_filters
        for name, value in form.cleaned_data.items():
            filtered = filters[name].filter(filtered, value)
        return filtered
