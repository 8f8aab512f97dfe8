"""emissions.api.serializers: shapes only; every rule they apply is read from its one home."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from calculator import rules, shapes
from emissions.api import serializers as s
from emissions.models import SUMMARY_KEYS

# -- the calculation result's shape ----------------------------------------------------------------

SHAPES = [
    (s.CalculationResultSerializer, shapes.CalculationResultDict),
    (s.FactorRefSerializer, shapes.FactorRefDict),
    (s.DataQualitySerializer, shapes.DataQualityDict),
    (s.NoteSerializer, shapes.NoteDict),
]


@pytest.mark.parametrize(("serializer", "shape"), SHAPES)
def test_result_schema_declares_the_result_shape_in_order(serializer, shape):
    assert list(serializer().fields) == list(shape.__annotations__)
    assert set(shape.__required_keys__) == set(shape.__annotations__)


def test_result_schema_nests_the_shapes_parts():
    fields = s.CalculationResultSerializer().fields
    assert isinstance(fields["factor"], s.FactorRefSerializer)
    assert isinstance(fields["data_quality"], s.DataQualitySerializer)
    for name in ("fallbacks", "warnings"):
        assert isinstance(fields[name], serializers.ListSerializer)
        assert isinstance(fields[name].child, s.NoteSerializer)


# -- rules read from their one home -------------------------------------------------------------


def test_tonnes_are_presented_at_the_rules_places():
    field = s.EmissionSerializer().fields["co2e_t"]
    assert field.decimal_places == rules.CO2E_T_PLACES


def test_summary_groups_are_the_querysets():
    assert list(s.SummarySerializer().fields["group_by"].choices) == list(SUMMARY_KEYS)
