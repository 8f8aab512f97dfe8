"""calculator.types: the one rounding, and the presentation of converted amounts."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from calculator import rules
from calculator.types import present_amount, present_kg, present_t, round_half_even, round_ratio_half_even


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (Fraction("0.3901175"), 6, "0.390118"),  # a tie, the 7 odd: up
        (Fraction("0.3901165"), 6, "0.390116"),  # a tie, the 6 even: stays
        (Fraction("-0.0000015"), 6, "-0.000002"),  # ties of negative values go to the even neighbour too
        (Fraction("-0.0000025"), 6, "-0.000002"),
        (Fraction(2, 3), 6, "0.666667"),
        (Fraction(1, 3), 0, "0"),
        (Decimal("2.5"), 0, "2"),
        (Decimal("3.5"), 0, "4"),
        (0, 6, "0.000000"),
    ],
)
def test_round_half_even_rounds_the_exact_value_once(value, places, expected):
    assert str(round_half_even(value, places)) == expected


def test_the_integer_rounding_agrees_with_fractions_everywhere():
    values = [Fraction(n, d) for n in range(-2000, 2001, 7) for d in (1, 2, 3, 4, 8, 10, 16, 40, 125, 999)]
    for value in values:
        exact = Decimal(round(value * 10**2)).scaleb(-2)  # round() on a Fraction is half-even, exactly
        assert round_ratio_half_even(value.numerator, value.denominator, 2) == exact


def test_present_amount_is_plain_and_rounded_to_twelve_places():
    assert present_amount(Fraction(10**9, 3_600_000)) == "277.777777777778"
    assert present_amount(Fraction(1000)) == "1000"
    assert present_amount(Decimal("1E+3")) == "1000"


# -- presenting kg and tonnes: one home for every output (API, summaries, export, import report) ---


@pytest.mark.parametrize(
    ("kg", "text_kg", "text_t"),
    [
        (Decimal("787"), "787.000000", "0.787000000"),
        (Decimal("0.3901175"), "0.390118", "0.000390118"),  # a tie: half-even on kg; tonnes keep all of it
        (Decimal("0.3901165"), "0.390116", "0.000390116"),
        (Decimal("123456789012345678.123456"), "123456789012345678.123456", "123456789012345.678123456"),
    ],
)
def test_kg_and_tonnes_are_presented_fixed_point_at_the_rules_places(kg, text_kg, text_t):
    assert present_kg(kg) == text_kg
    assert present_t(Decimal(text_kg)) == text_t
    assert len(text_kg.split(".")[1]) == rules.CO2E_PLACES
    assert len(text_t.split(".")[1]) == rules.CO2E_T_PLACES
