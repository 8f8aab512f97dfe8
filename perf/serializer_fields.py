"""A serializer's declared fields copied per instance without re-running each field's ``__init__``.

DRF gives every serializer instance its own fields (``Serializer.get_fields``: ``copy.deepcopy`` of the class's
declared fields), and ``Field.__deepcopy__`` copies a field by calling its class again with the arguments it was
made with: every validator, choice map and error-message dict is built anew, for every request. For the
calculation input (19 fields) that was two thirds to three quarters of validating one item, and 41 % of a single
calculation's samples in a 500-user profile (docs/capacity/analysis.md, section 15).

``CopiedFieldsMixin`` copies a field whose state is safe to share by copying its attributes (a shallow copy).
Binding sets the copy's own name, parent, label, source and source attributes; what the copies share is what DRF
builds in ``__init__`` and only reads afterwards: the validators, the error messages, the choices. (DRF's lazily
formatted validator messages keep their text once formatted: shared, they are formatted once per process, which
is right while the language does not change between requests.) A field is copied so only when nothing in it can
carry one request's state into another (``_shareable``): not a serializer or a relation, no field inside it
(``ListField.child``, a many-related field's ``child_relation``), no queryset, and a default and initial value that
are immutable or a plain function or class. Anything else is deep-copied, as DRF does.
"""

from __future__ import annotations

import copy
import datetime as dt
import types
from decimal import Decimal
from typing import Any

from rest_framework import serializers
from rest_framework.fields import Field, empty
from rest_framework.relations import RelatedField

# Values a field may share between its copies: nothing can change them in place. Plain functions and classes too
# (a default of ``dict``, ``timezone.now``); a callable object may hold a mutable value, so it is not among them.
_STATELESS = (
    str,
    bytes,
    int,
    float,
    Decimal,
    bool,
    dt.date,
    dt.time,
    dt.timedelta,
    frozenset,
    type(None),
    types.FunctionType,
    types.BuiltinFunctionType,
    type,
)


def _stateless(value: Any) -> bool:
    """Nothing a request could change in place: not given, immutable, or a plain function or class (DRF's
    ``CreateOnlyDefault([])``, a callable object, holds a list)."""
    return value is empty or isinstance(value, _STATELESS)


def _shareable(field: Field) -> bool:
    """Whether copying ``field``'s attributes gives a copy that shares nothing one request could change."""
    if isinstance(field, (serializers.BaseSerializer, RelatedField)) or hasattr(field, "queryset"):
        return False
    if not (_stateless(field.default) and _stateless(field.initial)):
        return False
    # A field holding a field (ListField.child, DictField.child) binds it in its own __init__: a shallow copy would
    # share a child whose parent is the declared field, never bound, so the child would see no context.
    return not any(isinstance(value, (Field, serializers.BaseSerializer)) for value in vars(field).values())


def _copy(field: Field) -> Field:
    """A shallow copy: the class's ``__new__`` and ``__init__`` are not run, the attributes are copied."""
    clone: Field = object.__new__(type(field))
    clone.__dict__.update(field.__dict__)
    return clone


class CopiedFieldsMixin:
    """For a ``Serializer`` declaring its fields (not a ``ModelSerializer``, whose fields are built from the model):
    each instance gets copies of the declared fields, shallow where ``_shareable`` allows, else DRF's deep copy.

    The plan (which fields may be copied shallow) is made once per class, on first use."""

    _declared_fields: dict[str, Field]

    def get_fields(self) -> dict[str, Field]:
        if isinstance(self, serializers.ModelSerializer):
            return super().get_fields()  # type: ignore[misc]  # the serializer's own get_fields
        cls = type(self)
        plan: list[tuple[str, Field, bool]] | None = cls.__dict__.get("_copied_fields_plan")
        if plan is None:
            plan = [(name, field, _shareable(field)) for name, field in self._declared_fields.items()]
            cls._copied_fields_plan = plan  # type: ignore[attr-defined]  # per class, set once
        return {name: _copy(field) if shallow else copy.deepcopy(field) for name, field, shallow in plan}
