"""A serializer's declared fields copied per instance without re-running each field's ``__init__``.

DRF gives every serializer instance its own fields (``Serializer.get_fields``: ``copy.deepcopy`` of the class's
declared fields), and ``Field.__deepcopy__`` copies a field by calling its class again with the arguments it was
made with: every validator, choice map and error-message dict is built anew, for every request. For the
calculation input (21 fields) that is about three quarters of validating one item, and most of a single
calculation's CPU after the calculation itself.

``CopiedFieldsMixin`` copies a field whose state is safe to share by copying its attributes (a shallow copy):
the copy has its own name, parent and label once bound, and shares what DRF only reads after ``__init__`` (the
validators, the error messages, the choices). A field is copied so only when nothing in it can carry one request's
state into another (``_shareable``): not a serializer, no field inside it (``ListField.child``, a many-related
field's ``child_relation``), no queryset, and a default and initial value that are immutable. Anything else is
deep-copied, as DRF does.
"""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

from rest_framework import serializers
from rest_framework.fields import Field, empty
from rest_framework.relations import RelatedField

# Values a field may share between its copies: nothing can change them in place.
_IMMUTABLE = (str, bytes, int, float, Decimal, bool, dt.date, dt.time, dt.timedelta, frozenset, type(None))


def _immutable_or_callable(value: Any) -> bool:
    return value is empty or callable(value) or isinstance(value, _IMMUTABLE)


def _shareable(field: Field) -> bool:
    """Whether copying ``field``'s attributes gives a copy that shares nothing one request could change."""
    if isinstance(field, (serializers.BaseSerializer, RelatedField)):
        return False
    if not (_immutable_or_callable(field.default) and _immutable_or_callable(field.initial)):
        return False
    # A field holding a field (ListField.child, DictField.child) would share it, and binding it would rebind the
    # shared one to whichever copy was bound last.
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
