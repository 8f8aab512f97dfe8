"""emissions.inputs: input shapes only; how fields relate is calculator.inputs' rule, every bound read from its home."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rest_framework import serializers

from calculator import rules
from calculator.types import CalculationInput
from emissions import inputs as i
from emissions.api.filters import EmissionFilter
from emissions.models import ID_MAX, currency_validator

# -- calculation input: shape here, rules in calculator.inputs ------------------------------------


def validated(**data) -> dict:
    serializer = i.CalculationInputSerializer(data=data, context={"organization_id": 1, "supplier_ids": set()})
    assert serializer.is_valid(), serializer.errors
    return serializer.validated_data


def test_validation_builds_the_input_once_by_the_calculators_rules():
    data = validated(category=1, method="spend", activity="naics:331110", amount="1000", currency="EUR")
    inp = i.calculation_input(data)
    assert isinstance(inp, CalculationInput)
    assert (inp.amount, inp.unit, inp.currency) == (Decimal(1000), "EUR", "EUR")  # spend: unit from the currency


def test_mass_times_distance_is_the_amount_of_the_input():
    data = validated(
        category=4, method="distance", activity="x", mass="20", mass_unit="t", distance="60", distance_unit="km"
    )
    inp = i.calculation_input(data)
    assert (inp.amount, inp.unit) == (Decimal("1200.000000"), "t*km")


def test_a_rule_broken_is_a_field_error():
    serializer = i.CalculationInputSerializer(
        data={"category": 4, "method": "distance", "activity": "x", "mass": "20"}, context={"organization_id": 1}
    )
    assert not serializer.is_valid()
    assert set(serializer.errors) == {"mass_unit", "distance", "distance_unit"}


def test_the_serializer_has_a_field_for_every_input_of_the_calculator():
    assert set(i.CalculationInputSerializer().fields) == {*i.INPUT_FIELDS, "supplier"}


# -- rules read from their one home ----------------------------------------------------------------


def test_currency_is_the_iso_rule_with_the_models_message():
    field = i.CalculationInputSerializer().fields["currency"]
    serializer = i.CalculationInputSerializer(data={"currency": "usd"})
    serializer.is_valid()
    assert serializer.errors["currency"] == [currency_validator.message]
    assert rules.DEFAULT_CURRENCY in field.help_text


def test_category_bounds_are_the_rules():
    field = i.CalculationInputSerializer().fields["category"]
    assert (field.min_value, field.max_value) == (rules.CATEGORY_MIN, rules.CATEGORY_MAX)


@pytest.mark.parametrize("name", ["year", "spend_year"])
def test_year_bounds_are_the_rules(name):
    field = i.ActivityInputSerializer().fields[name]
    assert (field.min_value, field.max_value) == (rules.YEAR_MIN, rules.YEAR_MAX)


def test_id_bounds_are_the_primary_keys():
    fields = i.CalculationInputSerializer().fields
    assert fields["factor_id"].max_value == fields["supplier"].max_value == ID_MAX
    assert EmissionFilter.base_filters["supplier"].extra["max_value"] == ID_MAX
    assert i.referenced_supplier_ids([{"supplier": ID_MAX}, {"supplier": ID_MAX + 1}]) == {ID_MAX}


# -- text a spreadsheet would run, unknown fields, numbers in unexpected spellings ---------------------------------


@pytest.mark.parametrize("text", ["=1+1", "+1", "-2+3+cmd|' /C calc'!A0", "-ACME", "-", "@SUM(A1)", "\t=1", "\r=1"])
def test_text_a_spreadsheet_would_read_as_a_formula_is_refused(text):
    with pytest.raises(serializers.ValidationError, match="Must not start with"):
        i.refuse_formula(text)


def activity_with_ref(external_ref: str) -> i.ActivityInputSerializer:
    data = {
        "category": 3,
        "method": "activity",
        "activity": "x",
        "amount": "1",
        "unit": "kWh",
        "period_start": "2025-01-01",
        "period_end": "2025-01-31",
        "external_ref": external_ref,
    }
    return i.ActivityInputSerializer(data=data, context={"organization_id": 1, "supplier_ids": set()})


@pytest.mark.parametrize(
    ("text", "kept"), [("", ""), ("ACME-1", "ACME-1"), ("a=b", "a=b"), ("'=1", "'=1"), (" x", "x"), ("ERP@1", "ERP@1")]
)
def test_text_that_does_not_start_a_formula_is_accepted(text, kept):
    serializer = activity_with_ref(text)
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data["external_ref"] == kept


def test_external_ref_starting_a_formula_is_an_error_naming_it():
    serializer = activity_with_ref('=HYPERLINK("http://x")')
    assert not serializer.is_valid()
    assert serializer.errors == {"external_ref": [i.FORMULA_MESSAGE]}


def test_unknown_fields_are_errors_naming_each():
    serializer = i.CalculationInputSerializer(
        data={"category": 1, "method": "spend", "activity": "x", "amount": "1", "amout": "2", "organization": 9},
        context={"organization_id": 1, "supplier_ids": set()},
    )
    assert not serializer.is_valid()
    assert serializer.errors == {"amout": ["Unknown field."], "organization": ["Unknown field."]}


def test_unknown_fields_are_reported_with_the_other_errors():
    serializer = i.CalculationInputSerializer(
        data={"category": 99, "method": "spend", "activity": "x", "amount": "1", "amout": "2"},
        context={"organization_id": 1, "supplier_ids": set()},
    )
    assert not serializer.is_valid()
    assert set(serializer.errors) == {"category", "amout"}


@pytest.mark.parametrize(
    "amount", ["1_000", "1_000.5", "\u0661\u0660\u0660", "\uff11\uff10\uff10", "1 000", "0x10", "1e1_0"]
)
def test_amount_in_an_unexpected_spelling_is_refused(amount):
    serializer = i.CalculationInputSerializer(
        data={"category": 1, "method": "spend", "activity": "x", "amount": amount},
        context={"organization_id": 1, "supplier_ids": set()},
    )
    assert not serializer.is_valid()
    assert set(serializer.errors) == {"amount"}


@pytest.mark.parametrize(("amount", "expected"), [(" 1000 ", "1000"), ("+1.5", "1.5"), ("1e3", "1000"), (".5", "0.5")])
def test_plain_decimal_spellings_are_accepted(amount, expected):
    assert validated(category=1, method="spend", activity="x", amount=amount)["amount"] == Decimal(expected)


@pytest.mark.parametrize(
    ("name", "value"), [("category", "1_0"), ("year", "2_024"), ("supplier", "\u0661"), ("category", "\uff13")]
)
def test_integer_in_an_unexpected_spelling_is_refused(name, value):
    serializer = i.CalculationInputSerializer(
        data={"category": 1, "method": "spend", "activity": "x", "amount": "1", name: value},
        context={"organization_id": 1, "supplier_ids": {1}},
    )
    assert not serializer.is_valid()
    assert set(serializer.errors) == {name}


def test_plain_integer_spellings_are_accepted():
    data = validated(category=" 3 ", method="spend", activity="x", amount="1", year="2024", spend_year=2022.0)
    assert (data["category"], data["year"], data["spend_year"]) == (3, 2024, 2022)
