"""calculator.units: parsing, publisher wording and exact Decimal conversion."""

from __future__ import annotations

from decimal import Decimal

import pytest

from calculator.units import UnitError, base_factor, convert, dimensions, parse_unit, publisher_unit


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
