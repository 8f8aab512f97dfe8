"""emissions.api.serializers: shapes only; every rule they apply is read from its one home."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework import serializers

from calculator import rules, shapes
from calculator.types import CalculationInput
from emissions.api import serializers as s
from emissions.api.filters import EmissionFilter
from emissions.models import AMOUNT_DIGITS, ID_MAX, SUMMARY_KEYS, currency_validator

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


# -- calculation input: shape here, rules in calculator.inputs ------------------------------------


def validated(**data) -> dict:
    serializer = s.CalculationInputSerializer(data=data, context={"organization_id": 1, "supplier_ids": set()})
    assert serializer.is_valid(), serializer.errors
    return serializer.validated_data


def test_validation_builds_the_input_once_by_the_calculators_rules():
    data = validated(category=1, method="spend", activity="naics:331110", amount="1000", currency="EUR")
    inp = s.calculation_input(data)
    assert isinstance(inp, CalculationInput)
    assert (inp.amount, inp.unit, inp.currency) == (Decimal(1000), "EUR", "EUR")  # spend: unit from the currency


def test_mass_times_distance_is_the_amount_of_the_input():
    data = validated(
        category=4, method="distance", activity="x", mass="20", mass_unit="t", distance="60", distance_unit="km"
    )
    inp = s.calculation_input(data)
    assert (inp.amount, inp.unit) == (Decimal("1200.000000"), "t*km")


def test_a_rule_broken_is_a_field_error():
    serializer = s.CalculationInputSerializer(
        data={"category": 4, "method": "distance", "activity": "x", "mass": "20"}, context={"organization_id": 1}
    )
    assert not serializer.is_valid()
    assert set(serializer.errors) == {"mass_unit", "distance", "distance_unit"}


def test_the_serializer_has_a_field_for_every_input_of_the_calculator():
    assert set(s.CalculationInputSerializer().fields) == {*s.INPUT_FIELDS, "supplier"}


# -- rules read from their one home -------------------------------------------------------------


def test_currency_is_the_iso_rule_with_the_models_message():
    field = s.CalculationInputSerializer().fields["currency"]
    serializer = s.CalculationInputSerializer(data={"currency": "usd"})
    serializer.is_valid()
    assert serializer.errors["currency"] == [currency_validator.message]
    assert rules.DEFAULT_CURRENCY in field.help_text


def test_category_bounds_are_the_rules():
    field = s.CalculationInputSerializer().fields["category"]
    assert (field.min_value, field.max_value) == (rules.CATEGORY_MIN, rules.CATEGORY_MAX)


@pytest.mark.parametrize("name", ["year", "spend_year"])
def test_year_bounds_are_the_rules(name):
    field = s.ActivityInputSerializer().fields[name]
    assert (field.min_value, field.max_value) == (rules.YEAR_MIN, rules.YEAR_MAX)


def test_id_bounds_are_the_primary_keys():
    fields = s.CalculationInputSerializer().fields
    assert fields["factor_id"].max_value == fields["supplier"].max_value == ID_MAX
    assert EmissionFilter.base_filters["supplier"].extra["max_value"] == ID_MAX
    assert s.referenced_supplier_ids([{"supplier": ID_MAX}, {"supplier": ID_MAX + 1}]) == {ID_MAX}


def test_the_amount_column_is_the_rules():
    # The column's digits bound mass and distance; calculator.inputs rounds their product to the same column.
    assert (AMOUNT_DIGITS["max_digits"], AMOUNT_DIGITS["decimal_places"]) == (
        rules.AMOUNT_MAX_DIGITS,
        rules.AMOUNT_PLACES,
    )


def test_tonnes_are_presented_at_the_rules_places():
    field = s.EmissionSerializer().fields["co2e_t"]
    assert field.decimal_places == rules.CO2E_T_PLACES


def test_summary_groups_are_the_querysets():
    assert list(s.SummarySerializer().fields["group_by"].choices) == list(SUMMARY_KEYS)
