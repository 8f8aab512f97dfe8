"""calculator.units: parsing, publisher wording and exact Decimal conversion."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import pytest

from calculator import units
from calculator.units import (
    PUBLISHER_UNITS,
    UnitError,
    base_factor,
    convert,
    dimensions,
    parse_unit,
    publisher_unit,
)


@pytest.mark.parametrize(
    ("amount", "source", "target", "expected"),
    [
        ("1", "MWh", "kWh", "1000"),
        ("3.6", "GJ", "kWh", "1000"),
        ("1", "m³", "L", "1000"),
        ("1", "cubic metres", "L", "1000"),
        ("10", "US gallon", "L", "37.85411784"),
        ("1", "lb", "kg", "0.45359237"),
        ("1", "mile", "km", "1.609344"),
        ("1", "short_ton*mile", "t*km", "1.45997231821056"),
        ("1200", "tonne.km", "t*km", "1200"),
        ("1", "passenger.mile", "passenger*km", "1.609344"),
        ("1", "MMBtu", "GJ", "1.055056"),  # pint Btu = ISO 1055.056 J
    ],
)
def test_convert_is_exact(amount, source, target, expected):
    assert convert(Decimal(amount), source, target) == Decimal(expected)


def test_convert_returns_decimal_and_plain_integers():
    result = convert(Decimal("2"), "MWh", "kWh")
    assert isinstance(result, Decimal)
    assert str(result) == "2000"


def test_repeating_conversion_keeps_full_precision():
    assert convert(Decimal("1"), "GJ", "kWh") == Decimal(10**9) / Decimal(3_600_000)


def test_base_factor_strips_pint_rounding_noise():
    assert base_factor("gallon") == Decimal("0.003785411784")


def test_incompatible_units_name_both():
    with pytest.raises(UnitError, match="'kg' cannot be converted to 'kWh'"):
        convert(Decimal(1), "kg", "kWh")


def test_passenger_km_never_converts_to_tonne_km():
    with pytest.raises(UnitError):
        convert(Decimal(1), "passenger*km", "t*km")


def test_unknown_unit():
    with pytest.raises(UnitError, match="Unknown unit 'bananas'"):
        parse_unit("bananas")


def test_publisher_unit_mapping():
    assert publisher_unit("kWh (Net CV)") == "kWh"
    assert publisher_unit("tonne.km") == "t*km"
    with pytest.raises(UnitError):
        publisher_unit("per widget")


def test_dimensions():
    assert dimensions("t*km") == {"[mass]": 1, "[length]": 1}
    assert dimensions("vehicle*mile") == {"[vehicle]": 1, "[length]": 1}


def test_huge_integral_result_does_not_overflow_the_context():
    assert convert(Decimal("1E+30"), "kWh", "Wh") == Decimal("1E+33")


# -- every malformed unit is a UnitError (the API's 400), nothing else ---------------------------

MALFORMED = [
    "kWh/0",
    "1/0",
    "((",
    "kWh)",
    "kWh**0",
    "t/0",
    "kWh**(1/0)",
    "kWh**1e9",
    "9**9**9 kWh",
    "kWh**1j",
    "kWh**0.5",
]
MEASURES_NOTHING = ["1", "percent", "dimensionless", "kWh/kWh"]


@pytest.mark.parametrize("text", MALFORMED + MEASURES_NOTHING)
@pytest.mark.parametrize("call", ["parse_unit", "base_factor", "convert_from", "convert_to", "dimensions"])
def test_malformed_units_raise_unit_error_only(call, text):
    calls = {
        "parse_unit": lambda: parse_unit(text),
        "base_factor": lambda: base_factor(text),
        "convert_from": lambda: convert(Decimal(1), text, "kWh"),
        "convert_to": lambda: convert(Decimal(1), "kWh", text),
        "dimensions": lambda: dimensions(text),
    }
    with pytest.raises(UnitError, match=f"^Unknown unit '{re.escape(text)}'"):
        calls[call]()


@pytest.mark.parametrize("text", MEASURES_NOTHING)
def test_dimensionless_units_say_why(text):
    with pytest.raises(UnitError, match="a unit must measure something"):
        parse_unit(text)


# -- letter case: SI prefixes are never changed by an alias ---------------------------------------


def test_milliwatt_hour_is_not_megawatt_hour():
    assert convert(Decimal(1), "mWh", "Wh") == Decimal("0.001")
    assert convert(Decimal(10**9), "mWh", "kWh") == Decimal(1000)
    assert convert(Decimal(1), "MWh", "kWh") == Decimal(1000)


@pytest.mark.parametrize("text", ["mwh", "MWH", "Mwh"])
def test_case_ambiguous_spellings_are_refused(text):
    with pytest.raises(UnitError, match=f"Unknown unit '{text}': letter case sets its SI prefix"):
        parse_unit(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kwh", "kWh"),
        ("KWH", "kWh"),
        ("Litres", "L"),
        ("TONNES", "t"),
        ("m3", "m**3"),
        ("M3", "m**3"),
        ("passenger.km", "passenger*km"),
        ("Tonne.KM", "t*km"),
        ("US gallon", "gallon"),
        ("us gallon", "gallon"),  # pint alone would read microsecond x gallon
        ("room per night", "room*night"),  # pint alone would read room / night
        ("kWh (Net CV)", "kWh"),
        ("GJ", "GJ"),
    ],
)
def test_case_unambiguous_aliases_are_accepted(text, expected):
    assert parse_unit(text) == parse_unit(expected)
    assert base_factor(text) == base_factor(expected)


def test_every_publisher_wording_still_maps():
    for wording, expression in PUBLISHER_UNITS.items():
        assert publisher_unit(wording) == expression
        assert publisher_unit(wording.upper()) == expression
    assert publisher_unit("MWh") == "MWh"  # publishers' wording is case-insensitive, mega by convention


@pytest.mark.parametrize("text", ["tons", "therms", "gallons", "gals", "bbls", "barrels", "pints", "quarts", "cwts"])
def test_a_plural_is_as_ambiguous_as_its_singular(text):
    with pytest.raises(units.AmbiguousUnitError) as exc:
        units.check_unambiguous(text)
    assert exc.value.alternatives == units.AMBIGUOUS_UNITS[text.lower().removesuffix("s")]


@pytest.mark.parametrize("text", ["Mt", "US gallons", "imperial gallons", "tonnes", "hours", "ms", "short_ton*mile"])
def test_unambiguous_spellings_pass(text):
    assert units.check_unambiguous(text) is None  # it raises on an ambiguous word


def test_ratio_is_exact_and_refuses_offset_units():
    assert units.ratio("GJ", "kWh") == Fraction(2500, 9)
    with pytest.raises(units.UnitError, match="by a factor"):
        units.ratio("degC", "K")
    with pytest.raises(units.UnitError, match="cannot be converted"):
        units.ratio("kg", "km")
