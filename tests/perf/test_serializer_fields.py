from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework import serializers

from perf.serializer_fields import CopiedFieldsMixin, _shareable


class _Fields(serializers.Serializer):
    """Leaf fields of the kinds the input serializers declare, with validators, choices and error messages."""

    name = serializers.CharField(max_length=8)
    note = serializers.CharField(required=False, allow_blank=True, default="")
    count = serializers.IntegerField(min_value=1, max_value=10)
    kind = serializers.ChoiceField(choices=[("a", "A"), ("b", "B")])
    code = serializers.RegexField(r"^[A-Z]{3}$", required=False, error_messages={"invalid": "Three capitals."})
    amount = serializers.DecimalField(max_digits=6, decimal_places=2, min_value=Decimal(0), required=False)
    when = serializers.DateField(required=False, allow_null=True)


class Copied(CopiedFieldsMixin, _Fields):
    pass


class _Holding(serializers.Serializer):
    """Fields that hold objects one request could change or rebind: these must be deep-copied."""

    tags = serializers.ListField(child=serializers.CharField())
    nested = _Fields(required=False)
    user = serializers.PrimaryKeyRelatedField(queryset=User.objects.all(), required=False)
    extra = serializers.JSONField(default={"a": []})  # a mutable default, on purpose
    created = serializers.JSONField(default=serializers.CreateOnlyDefault([]))  # type: ignore[arg-type]  # a callable object holding a list
    stamped = serializers.DateTimeField(default=timezone.now)  # a plain function: shareable
    plain = serializers.CharField()


class CopiedHolding(CopiedFieldsMixin, _Holding):
    pass


PAYLOADS: list[dict[str, Any]] = [
    {"name": "ok", "count": 3, "kind": "a", "code": "ABC", "amount": "12.50", "when": "2026-01-31"},
    {"name": "ok", "count": "7", "kind": "b"},
    {"name": "far too long", "count": 0, "kind": "c", "code": "abc", "amount": "-1", "when": "31/01/2026"},
    {"count": 11, "kind": None, "amount": "12345.678"},
    {"name": None, "count": "x", "kind": "a", "amount": "NaN", "when": None},
    {},
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_validation_gives_what_drfs_deep_copies_give(payload: dict[str, Any]) -> None:
    drf, copied = _Fields(data=payload), Copied(data=payload)
    assert drf.is_valid() == copied.is_valid()
    assert copied.errors == drf.errors
    assert copied.validated_data == drf.validated_data


def test_each_instance_gets_its_own_bound_copies_and_the_declared_fields_stay_unbound() -> None:
    first, second = Copied(context={"caller": 1}), Copied(context={"caller": 2})
    for name in _Fields._declared_fields:
        one, two, declared = first.fields[name], second.fields[name], Copied._declared_fields[name]
        assert one is not two and one is not declared and two is not declared
        assert (one.parent, two.parent) == (first, second)
        assert (one.context, two.context) == ({"caller": 1}, {"caller": 2})
        assert one.field_name == two.field_name == name
        assert declared.parent is None and declared.field_name is None
    # Changing a field on one instance (as a view may: required=False for a partial form) leaves the others alone.
    first.fields["name"].required = False
    assert second.fields["name"].required is True
    assert Copied().fields["name"].required is True
    assert Copied._declared_fields["name"].required is True


def _field(serializer: serializers.Serializer, name: str) -> Any:
    """A bound field, typed loosely: each test reads its own class's attributes."""
    return serializer.fields[name]


def test_leaf_fields_are_copied_shallow_the_others_deep() -> None:
    assert all(_shareable(field) for field in _Fields._declared_fields.values())
    declared = CopiedHolding._declared_fields
    assert {name for name, field in declared.items() if _shareable(field)} == {"stamped", "plain"}
    first, second = CopiedHolding(), CopiedHolding()
    assert _field(first, "tags").child is not _field(second, "tags").child
    assert _field(first, "tags").child.parent is first.fields["tags"]
    assert first.fields["nested"] is not second.fields["nested"]
    assert _field(first, "nested").fields["name"] is not _field(second, "nested").fields["name"]
    assert _field(first, "user").queryset is not _field(second, "user").queryset
    assert first.fields["extra"].default is not second.fields["extra"].default
    assert first.fields["extra"].default == {"a": []}
    assert _field(first, "created").default.default is not _field(second, "created").default.default
    assert first.fields["stamped"].default is timezone.now


def test_fields_holding_state_still_validate_as_drfs() -> None:
    payload = {"tags": ["x", 1], "nested": {"name": "n", "count": 2, "kind": "a"}, "plain": "p"}
    drf, copied = _Holding(data=payload), CopiedHolding(data=payload)
    assert drf.is_valid() and copied.is_valid()
    # The default function ran for each: two instants.
    assert drf.validated_data.pop("stamped") <= copied.validated_data.pop("stamped")
    assert copied.validated_data == drf.validated_data
    assert copied.validated_data["extra"] == {"a": []}


class _UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email"]


class CopiedUserSerializer(CopiedFieldsMixin, _UserSerializer):
    pass


def test_a_model_serializer_keeps_drfs_fields() -> None:
    drf, copied = _UserSerializer(), CopiedUserSerializer()
    assert list(copied.fields) == list(drf.fields) == ["id", "username", "email"]
    assert [type(field) for field in copied.fields.values()] == [type(field) for field in drf.fields.values()]
    assert _field(copied, "username").max_length == _field(drf, "username").max_length == 150
