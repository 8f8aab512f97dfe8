"""calculator.inputs: from the fields a caller sends to one CalculationInput (no database)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from calculator.inputs import calculation_input, factor_choice_errors, mass_times_distance
from calculator.rules import AMOUNT_LIMIT, AMOUNT_PLACES, DEFAULT_CURRENCY
from calculator.types import CalculationError, round_half_even

FREIGHT = {
    "category": 4,
    "method": "distance",
    "activity": "desnz:freight_hgv",
    "mass": Decimal("20"),
    "mass_unit": "t",
    "distance": Decimal("60"),
    "distance_unit": "km",
}
MASS_DISTANCE_OR_AMOUNT = (
    "Give amount + unit, or mass, mass_unit, distance and distance_unit; both only if they agree. "
    "(mass x distance is 1200.000000 t*km)"
)


def errors_of(**fields) -> dict[str, list[str]]:
    with pytest.raises(CalculationError) as caught:
        calculation_input(**fields)
    return caught.value.errors


# -- the factor ---------------------------------------------------------------------------------


def test_factor_id_or_activity_is_needed():
    assert errors_of(category=1, method="activity", amount=Decimal(1), unit="kg") == {
        "activity": ["Give either factor_id or activity."]
    }


@pytest.mark.parametrize(("factor_id", "activity"), [(7, ""), (None, "desnz:x")])
def test_a_factor_id_or_an_activity_is_enough(factor_id, activity):
    assert factor_choice_errors(method="activity", factor_id=factor_id, activity=activity, supplier_id=None) == {}


def test_a_blank_activity_is_no_activity():
    errors = factor_choice_errors(method="spend", factor_id=None, activity="   ", supplier_id=None)
    assert list(errors) == ["activity"]


def test_supplier_specific_without_factor_or_activity_needs_the_supplier():
    assert factor_choice_errors(method="supplier_specific", factor_id=None, activity="", supplier_id=None) == {
        "supplier": ["The supplier-specific method needs a supplier (or give factor_id)."]
    }
    assert factor_choice_errors(method="supplier_specific", factor_id=None, activity="", supplier_id=3) == {}


def test_the_factor_rule_comes_before_the_quantity():
    # Nothing else given either: the factor is the first thing asked for.
    assert list(errors_of(category=1, method="activity")) == ["activity"]


# -- amount and unit ----------------------------------------------------------------------------


def test_amount_and_unit_are_required_outside_spend():
    assert errors_of(category=3, method="activity", activity="desnz:x") == {
        "amount": ["This field is required."],
        "unit": ["This field is required."],
    }
    assert errors_of(category=3, method="activity", activity="desnz:x", amount=Decimal(1)) == {
        "unit": ["This field is required."]
    }


def test_spend_without_a_unit_is_in_its_currency():
    inp = calculation_input(category=1, method="spend", activity="naics:331110", amount=Decimal(1000), currency="EUR")
    assert (inp.amount, inp.unit, inp.currency) == (Decimal(1000), "EUR", "EUR")


def test_spend_without_a_currency_is_in_the_default_currency():
    inp = calculation_input(category=1, method="spend", activity="naics:331110", amount=Decimal(1000))
    assert (inp.unit, inp.currency) == (DEFAULT_CURRENCY, DEFAULT_CURRENCY)


def test_spend_keeps_the_unit_it_was_given():
    inp = calculation_input(category=1, method="spend", activity="naics:331110", amount=Decimal(5), unit="usd")
    assert inp.unit == "usd"


def test_spend_still_needs_an_amount():
    assert errors_of(category=1, method="spend", activity="naics:331110") == {"amount": ["This field is required."]}


def test_every_field_reaches_the_input_unchanged():
    fields = {
        "category": 3,
        "method": "activity",
        "amount": Decimal("2.5"),
        "unit": "MWh",
        "factor_id": 11,
        "activity": "desnz:x",
        "region": "GB",
        "year": 2024,
        "source": "desnz",
        "dataset_version": "2025",
        "currency": "GBP",
        "spend_year": 2023,
        "mass": Decimal(3),
        "mass_unit": "t",
        "distance": Decimal(4),
        "distance_unit": "km",
        "supplier_id": 5,
        "exchange_rate_set": "budget",
        "price_index_set": "sector-ppi",
    }
    # Outside the distance method, mass and distance are passed on as given (a supplier-specific line uses them).
    assert calculation_input(**fields).__dict__ == fields


# -- mass x distance ----------------------------------------------------------------------------


def test_mass_times_distance_is_the_amount():
    inp = calculation_input(**FREIGHT)
    assert (inp.amount, inp.unit) == (Decimal("1200.000000"), "t*km")
    assert str(inp.amount) == "1200.000000"
    assert (inp.mass, inp.mass_unit, inp.distance, inp.distance_unit) == (Decimal(20), "t", Decimal(60), "km")


@pytest.mark.parametrize("missing", ["mass", "mass_unit", "distance", "distance_unit"])
def test_a_partial_mass_distance_set_names_what_is_missing(missing):
    fields = {**FREIGHT, missing: None if missing in ("mass", "distance") else ""}
    given = [name for name in ("mass", "mass_unit", "distance", "distance_unit") if name != missing]
    assert errors_of(**fields) == {missing: ["Required together with " + ", ".join(given) + "."]}


def test_one_of_the_set_alone_names_the_other_three():
    errors = errors_of(category=4, method="distance", activity="desnz:freight_hgv", mass=Decimal(5))
    assert errors == {name: ["Required together with mass."] for name in ("mass_unit", "distance", "distance_unit")}


def test_mass_times_distance_only_for_the_distance_method():
    # Another method with an amount and a unit keeps them; mass and distance are not multiplied.
    inp = calculation_input(**{**FREIGHT, "method": "supplier_specific", "amount": Decimal(7), "unit": "kg"})
    assert (inp.amount, inp.unit) == (Decimal(7), "kg")


@pytest.mark.parametrize(
    "stated",
    [{"amount": Decimal(5), "unit": "t*km"}, {"amount": Decimal(5)}, {"unit": "t*km"}, {"amount": Decimal(1200)}],
)
def test_mass_times_distance_with_an_amount_that_disagrees(stated):
    assert errors_of(**FREIGHT, **stated) == {name: [MASS_DISTANCE_OR_AMOUNT] for name in stated}


def test_mass_times_distance_with_its_own_stored_form_is_accepted():
    inp = calculation_input(**FREIGHT, amount=Decimal("1200"), unit="t*km")
    assert (inp.amount, inp.unit) == (Decimal("1200"), "t*km")


def test_mass_times_distance_too_large_for_the_column():
    assert errors_of(**{**FREIGHT, "mass": Decimal(10**12), "distance": Decimal(10**9)}) == {
        "mass": ["mass x distance is too large."]
    }


def test_mass_times_distance_just_below_the_column_limit():
    largest = AMOUNT_LIMIT - Decimal(1).scaleb(-AMOUNT_PLACES)
    amount, unit = mass_times_distance(mass=largest, mass_unit="t", distance=Decimal(1), distance_unit="km")
    assert (amount, unit) == (largest, "t*km")


def test_a_product_that_rounds_up_to_the_limit_is_too_large():
    # Below the limit exactly, but its stored form (6 places) would need one more digit than the column has.
    with pytest.raises(CalculationError) as caught:
        mass_times_distance(
            mass=AMOUNT_LIMIT - Decimal("0.0000001"), mass_unit="t", distance=Decimal(1), distance_unit="km"
        )
    assert caught.value.errors == {"mass": ["mass x distance is too large."]}


def test_mass_times_distance_is_rounded_once_from_the_exact_product():
    # 35 significant digits. Multiplied in Decimal's default 28-digit context the product would first be
    # rounded to ...0.000001500000 and then, a tie, half-even up to ...0.000002; the exact value is below
    # the half and rounds down.
    mass = Decimal("1000000000000000.0000014999999999999")
    amount, _ = mass_times_distance(mass=mass, mass_unit="t", distance=Decimal(1), distance_unit="km")
    assert amount == round_half_even(Fraction(mass), AMOUNT_PLACES) == Decimal("1000000000000000.000001")
    assert (mass * 1).quantize(Decimal(1).scaleb(-AMOUNT_PLACES)) == Decimal("1000000000000000.000002")


def test_mass_times_distance_ties_round_half_even():
    amount, _ = mass_times_distance(
        mass=Decimal("0.0000025"), mass_unit="t", distance=Decimal(1), distance_unit="km"
    )  # 0.0000025 -> 0.000002
    assert amount == Decimal("0.000002")
    amount, _ = mass_times_distance(mass=Decimal("0.0000035"), mass_unit="t", distance=Decimal(1), distance_unit="km")
    assert amount == Decimal("0.000004")
