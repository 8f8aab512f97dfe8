"""calculator.engine: every method, conversions, spend currency/price-year handling and input errors (no database)."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest

from calculator.engine import period_defaults
from calculator.resolve import MISSING_DEFAULT_SETS
from calculator.types import CalculationError, round_half_even
from tests.calculator.helpers import calculate, freight_input, make_input


def codes(notes) -> list[str]:
    return [n.code for n in notes]


# -- the three headline numbers ------------------------------------------------------------


def test_spend_1000_usd_2022_on_naics_331110_is_787_kg(org, steel_factor):
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("1000"), unit="USD", currency="USD", spend_year=2022
    )
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("787")
    assert str(result.co2e_kg) == "787.000000"
    assert result.converted_amount == Decimal("1000")
    assert result.factor == steel_factor
    assert result.fallbacks == []


def test_one_mwh_of_uk_electricity_is_177_kg(org, electricity_factor):
    inp = make_input(activity="desnz:7_400_4000_5", amount=Decimal("1"), unit="MWh", region="GB", year=2025)
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("177")
    assert result.converted_amount == Decimal("1000")
    assert result.gases == {"CO2": Decimal("174.89"), "CH4": Decimal("0.89"), "N2O": Decimal("1.22")}
    assert result.data_quality.as_dict() == {
        "technology": 2,
        "time": 1,
        "geography": 1,
        "completeness": 2,
        "reliability": 2,
        "score": "1.6",
    }


def test_one_cubic_metre_of_diesel_is_2570_82_kg(org, diesel_factor):
    result = calculate(make_input(activity="desnz:1_101_1011_8", amount=Decimal("1"), unit="m³"), organization=org)
    assert result.co2e_kg == Decimal("2570.82")
    assert result.converted_amount == Decimal("1000")


def test_as_dict_is_json_ready(org, electricity_factor):
    data = calculate(make_input(activity="desnz:7_400_4000_5", unit="MWh"), organization=org).as_dict()
    assert data["co2e_kg"] == "177.000000"
    assert data["converted_amount"] == "1000"
    assert data["factor"]["activity"] == "desnz:7_400_4000_5"
    assert data["factor"]["source"] == "desnz"


# -- activity conversions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factor_unit", "amount", "unit", "expected_converted"),
    [
        ("kWh", "2", "MWh", "2000"),
        ("kWh", "3.6", "GJ", "1000"),
        ("L", "1", "m³", "1000"),
        ("L", "1", "m**3", "1000"),
        ("L", "10", "US gallon", "37.85411784"),
        ("L", "10", "US_gallon", "37.85411784"),
        ("L", "10", "imperial_gallon", "45.4609"),
        ("kg", "100", "lb", "45.359237"),
        ("t", "2000", "kg", "2"),
        ("km", "10", "mile", "16.09344"),
    ],
)
def test_activity_converts_any_compatible_unit(org, factor_unit, amount, unit, expected_converted):
    factor = org.add_factor(unit=factor_unit, co2e_per_unit=Decimal("2"))
    result = calculate(make_input(activity=factor.activity, amount=Decimal(amount), unit=unit), organization=org)
    assert result.converted_amount == Decimal(expected_converted)
    expected = (Decimal(expected_converted) * 2).quantize(Decimal("0.000001"))
    assert result.co2e_kg == expected


def test_result_is_quantized_half_even_to_six_places(org):
    factor = org.add_factor(unit="kWh", co2e_per_unit=Decimal("0.0000005"))
    # 1 x 0.0000005 = 0.0000005 -> half-even rounds to 0.000000; 3 x -> 0.0000015 -> 0.000002.
    one = calculate(make_input(activity=factor.activity, amount=Decimal("1")), organization=org)
    three = calculate(make_input(activity=factor.activity, amount=Decimal("3")), organization=org)
    assert one.co2e_kg == Decimal("0.000000")
    assert three.co2e_kg == Decimal("0.000002")


def test_exact_decimal_arithmetic_beyond_28_digits(org):
    factor = org.add_factor(unit="kWh", co2e_per_unit=Decimal("0.123456789012345"))
    amount = Decimal("123456789012345678.123456")
    result = calculate(make_input(activity=factor.activity, amount=amount), organization=org)
    assert result.converted_amount == amount
    with localcontext(prec=80):
        exact = amount * factor.co2e_per_unit  # 39 significant digits
    assert result.co2e_kg == exact.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


def test_unknown_unit(org, electricity_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", unit="furlongs-ish"), organization=org)
    assert exc.value.errors == {"unit": ["Unknown unit 'furlongs-ish'."]}


def test_incompatible_unit_names_both_units(org, electricity_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", unit="kg"), organization=org)
    message = exc.value.errors["unit"][0]
    assert "'kg'" in message
    assert "'kWh'" in message


def test_activity_method_refuses_a_spend_factor(org, steel_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="naics:331110", unit="USD"), organization=org)
    assert "spend" in exc.value.errors["method"][0]


# -- spend ---------------------------------------------------------------------------------


def test_spend_eur_2024_converted_to_usd_and_deflated_to_2022(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.082"))
    org.add_index(currency="USD", year=2022, value=Decimal("292.655"))
    org.add_index(currency="USD", year=2024, value=Decimal("313.689"))
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("1000"), unit="EUR", currency="EUR", spend_year=2024
    )
    result = calculate(inp, organization=org)
    # 1000 EUR = 1082 USD at 2024 prices -> x CPI 2022/2024 -> 2022 USD, exactly.
    converted = Fraction(1000) * Fraction("1.082") * Fraction("292.655") / Fraction("313.689")
    assert result.converted_amount == converted
    assert Decimal("1009.4") < converted < Decimal("1009.5")
    assert result.co2e_kg == round(converted * Fraction("0.787") * 10**6) / Decimal(10**6)
    assert result.fallbacks == []


def test_spend_inverse_rate_is_used_when_only_usd_to_eur_is_stored(org, steel_factor):
    org.add_rate(currency="USD", quote_currency="EUR", year=2022, rate=Decimal("0.8"))
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("800"), unit="", currency="EUR", spend_year=2022
    )
    result = calculate(inp, organization=org)
    assert result.converted_amount == Decimal("1000")
    assert result.co2e_kg == Decimal("787")


def test_spend_without_the_default_rate_set_names_currency_and_the_loader(org, steel_factor):
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("10"), unit="", currency="GBP", spend_year=2022
    )
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert exc.value.errors == {"currency": ["No exchange-rate set 'ecb' is loaded: " + MISSING_DEFAULT_SETS]}


def test_spend_missing_exchange_rate_names_currency_and_row(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.05"))
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("10"), unit="", currency="GBP", spend_year=2022
    )
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert exc.value.errors == {
        "currency": [
            "No exchange rate GBP->USD in the set 'ecb' for any year: load an ExchangeRate row "
            "(set=ecb, currency=GBP, quote_currency=USD, year=2022)."
        ]
    }


def test_spend_year_before_or_between_a_sets_rates_is_an_error_on_spend_year(org, steel_factor):
    for year in (2019, 2020, 2022, 2023):
        org.add_rate(currency="EUR", quote_currency="USD", year=year, rate=Decimal("1.1"))
    for spend_year in (2018, 2021):
        inp = make_input(
            method="spend",
            unit="",
            activity="naics:331110",
            amount=Decimal("10"),
            currency="EUR",
            spend_year=spend_year,
        )
        with pytest.raises(CalculationError) as exc:
            calculate(inp, organization=org)
        assert exc.value.errors == {
            "spend_year": [
                f"No exchange rate EUR->USD for {spend_year} in the set 'ecb' (it has 2019-2020, 2022-2023): load an "
                f"ExchangeRate row (set=ecb, currency=EUR, quote_currency=USD, year={spend_year})."
            ]
        }


def test_spend_missing_price_index_names_year_and_row(org, steel_factor):
    org.add_index(currency="USD", year=2022, value=Decimal("292.655"))
    org.add_index(currency="USD", year=2024, value=Decimal("313.689"))
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("10"), unit="USD", spend_year=2023)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert exc.value.errors == {
        "spend_year": [
            "No price index for USD 2023 in the set 'cpi-u' (it has 2022, 2024): load a PriceIndex row "
            "(set=cpi-u, currency=USD, year=2023)."
        ]
    }


def test_spend_year_after_the_newest_rate_and_index_uses_the_newest_and_records_it(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2025, rate=Decimal("1.13"), source="ECB")
    org.add_index(currency="USD", year=2022, value=Decimal("292.655"), source="CPI-U")
    org.add_index(currency="USD", year=2025, value=Decimal("322.2"), source="CPI-U")
    inp = make_input(
        method="spend", unit="", activity="naics:331110", amount=Decimal("1000"), currency="EUR", spend_year=2027
    )
    result = calculate(inp, organization=org)
    # 1000 x 1.13 x 292.655 / 322.2 x 0.787, computed exactly and rounded once.
    expected = Fraction(1000) * Fraction("1.13") * Fraction("292.655") / Fraction("322.2") * Fraction("0.787")
    assert result.co2e_kg == round_half_even(expected, 6)
    assert [note.code for note in result.fallbacks] == ["exchange_rate_year_fallback", "price_index_year_fallback"]
    assert "no EUR->USD rate for 2027; used 2025's, its newest" in result.fallbacks[0].detail
    assert "taken to be in 2025 prices" in result.fallbacks[1].detail
    conversion = result.as_dict()["conversion"]
    assert conversion is not None
    assert conversion["spend_year"] == 2027
    assert conversion["exchange_rate"] == {
        "set": "ecb",
        "year": 2025,
        "value": "1.13",
        "how": "direct",
        "rows": [{"currency": "EUR", "quote_currency": "USD", "year": 2025, "value": "1.13", "source": "ECB"}],
    }
    assert conversion["price_index"] == {
        "set": "cpi-u",
        "from": {"currency": "USD", "quote_currency": None, "year": 2025, "value": "322.2", "source": "CPI-U"},
        "to": {"currency": "USD", "quote_currency": None, "year": 2022, "value": "292.655", "source": "CPI-U"},
    }


def test_a_currency_the_set_stopped_quoting_does_not_fall_back_to_its_last_rate(org, steel_factor):
    org.add_rate(currency="RUB", quote_currency="USD", year=2021, rate=Decimal("0.0136"))
    org.add_rate(currency="EUR", quote_currency="USD", year=2025, rate=Decimal("1.13"))  # the set goes on to 2025
    inp = make_input(
        method="spend", unit="", activity="naics:331110", amount=Decimal(1), currency="RUB", spend_year=2024
    )
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == ["spend_year"]
    assert "No exchange rate RUB->USD for 2024 in the set 'ecb' (it has 2021)" in exc.value.errors["spend_year"][0]


def test_the_factors_price_year_is_never_approximated(org):
    factor = org.add_factor(
        activity="test:priced-2026", unit="USD", currency="USD", dataset=org.add_dataset(basis_year=2026)
    )
    org.add_index(currency="USD", year=2020, value=Decimal("100"))
    org.add_index(currency="USD", year=2025, value=Decimal("120"))
    inp = make_input(method="spend", unit="", activity=factor.activity, amount=Decimal(1), spend_year=2020)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert exc.value.errors == {
        "price_index_set": [
            "No price index for USD 2026 in the set 'cpi-u' (it has 2020, 2025): load a PriceIndex row "
            "(set=cpi-u, currency=USD, year=2026)."
        ]
    }


def test_the_conversion_shows_the_amount_as_stored_however_it_was_written(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.05"))
    texts = set()
    for amount in ("1000", "1000.00", "1000.000000", "1E+3"):
        inp = make_input(
            method="spend", unit="", activity="naics:331110", amount=Decimal(amount), currency="EUR", spend_year=2022
        )
        conversion = calculate(inp, organization=org).as_dict()["conversion"]
        assert conversion is not None
        texts.add(conversion["amount"])
    assert texts == {"1000.000000"}


def test_spend_converts_with_the_sets_the_input_names(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.05"))
    org.add_rate(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.2"), set_name="budget")
    base = make_input(
        method="spend", unit="", activity="naics:331110", amount=Decimal("1000"), currency="EUR", spend_year=2022
    )
    default = calculate(base, organization=org)
    budget = calculate(replace(base, exchange_rate_set="budget"), organization=org)
    assert default.co2e_kg == Decimal("826.35")  # 1000 x 1.05 x 0.787
    assert budget.co2e_kg == Decimal("944.4")  # 1000 x 1.2 x 0.787
    assert budget.conversion is not None and budget.conversion.exchange_rate is not None
    assert budget.conversion.exchange_rate.set_name == "budget"
    assert budget.conversion.price_index is None  # spent in the factor's price year


def test_spend_naming_an_unknown_set_is_an_error_on_that_field(org, steel_factor):
    org.add_rate(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    org.add_index(currency="USD", year=2022, value=Decimal("292.655"))
    org.add_index(currency="USD", year=2024, value=Decimal("313.689"))
    base = make_input(
        method="spend", unit="", activity="naics:331110", amount=Decimal("1"), currency="EUR", spend_year=2024
    )
    for field in ("exchange_rate_set", "price_index_set"):
        with pytest.raises(CalculationError) as exc:
            calculate(replace(base, **{field: "nope"}), organization=org)
        assert list(exc.value.errors) == [field]
        assert "set 'nope' is loaded: check the name" in exc.value.errors[field][0]
    with pytest.raises(CalculationError) as exc:
        calculate(replace(base, price_index_set="Not A Name"), organization=org)
    assert list(exc.value.errors) == ["price_index_set"]


def test_spend_cross_rate_records_both_rows(org):
    gbp_factor = org.add_factor(
        activity="test:gbp-spend",
        unit="GBP",
        currency="GBP",
        co2e_per_unit=Decimal("0.5"),
        dataset=org.add_dataset(basis_year=2022),
    )
    org.add_rate(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.05"))
    org.add_rate(currency="USD", quote_currency="GBP", year=2022, rate=Decimal("0.8"))
    inp = make_input(
        method="spend", unit="", activity=gbp_factor.activity, amount=Decimal("100"), currency="EUR", spend_year=2022
    )
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("42")  # 100 x 1.05 x 0.8 x 0.5
    rate = result.as_dict()["conversion"]["exchange_rate"]
    assert rate["how"] == "cross"
    assert rate["value"] == "0.84"
    assert [(row["currency"], row["quote_currency"]) for row in rate["rows"]] == [("EUR", "USD"), ("USD", "GBP")]


def test_a_result_without_money_has_no_conversion(org, electricity_factor):
    result = calculate(make_input(activity=electricity_factor.activity), organization=org)
    assert result.conversion is None
    assert result.as_dict()["conversion"] is None


def test_spend_same_currency_and_year_needs_no_reference_rows(org, steel_factor):
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("5"), unit="USD", spend_year=2022)
    result = calculate(inp, organization=org)
    assert org.asked == {"candidates": 1}  # the factor only: no exchange rate, no price index
    assert result.co2e_kg == Decimal("3.935")


def test_spend_year_assumed_when_missing(org, steel_factor):
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("1000"), unit="USD")
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("787")
    assert codes(result.fallbacks) == ["spend_year_assumed"]
    assert "2022" in result.fallbacks[0].detail


@pytest.mark.parametrize("currency", ["EURO", "E1", "12$"])
def test_spend_currency_must_be_three_letters(org, steel_factor, currency):
    inp = make_input(
        method="spend", activity="naics:331110", amount=Decimal("1"), unit="", currency=currency, spend_year=2022
    )
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert "currency" in exc.value.errors


def test_spend_unit_must_be_empty_or_the_currency(org, steel_factor):
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("1"), unit="kg", spend_year=2022)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert "unit" in exc.value.errors


def test_spend_method_needs_a_spend_factor(org, electricity_factor):
    inp = make_input(method="spend", activity="desnz:7_400_4000_5", amount=Decimal("1"), unit="USD", spend_year=2025)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert "method" in exc.value.errors


# -- distance ------------------------------------------------------------------------------


def test_distance_mass_times_distance(org, hgv_factor):
    inp = freight_input(mass=Decimal("20"), mass_unit="t", distance=Decimal("60"), distance_unit="km")
    result = calculate(inp, organization=org)
    assert result.converted_amount == Decimal("1200")
    assert result.co2e_kg == Decimal("128.4")
    assert result.data_quality.technology == 3


def test_distance_amount_in_tonne_km_directly(org, hgv_factor):
    for unit in ("tonne.km", "t*km"):
        inp = make_input(method="distance", category=4, activity="desnz:freight_hgv", amount=Decimal("1200"), unit=unit)
        assert calculate(inp, organization=org).co2e_kg == Decimal("128.4")


def test_distance_short_ton_miles_converted_to_tonne_km(org, hgv_factor):
    inp = freight_input(mass=Decimal("1"), mass_unit="short_ton", distance=Decimal("1"), distance_unit="mile")
    result = calculate(inp, organization=org)
    # 1 short ton = 0.90718474 t, 1 mile = 1.609344 km
    assert result.converted_amount == Decimal("0.90718474") * Decimal("1.609344")


def test_distance_passenger_km_factor(org):
    factor = org.add_factor(unit="passenger*km", co2e_per_unit=Decimal("0.03546"))
    inp = make_input(
        method="distance", category=6, activity=factor.activity, amount=Decimal("100"), unit="passenger*mile"
    )
    assert calculate(inp, organization=org).co2e_kg == Decimal("5.706734")  # 160.9344 pkm x 0.03546


def test_distance_missing_pieces_name_the_fields(org, hgv_factor):
    inp = freight_input(mass=Decimal("20"), mass_unit="t")
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert set(exc.value.errors) == {"distance", "distance_unit"}


def test_distance_wrong_unit_kinds(org, hgv_factor):
    inp = freight_input(mass=Decimal("20"), mass_unit="km", distance=Decimal("5"), distance_unit="km")
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert set(exc.value.errors) == {"mass_unit"}


def test_distance_method_needs_a_distance_factor(org, electricity_factor):
    inp = make_input(method="distance", activity="desnz:7_400_4000_5", amount=Decimal("1"), unit="kWh")
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert "method" in exc.value.errors


def test_passenger_factor_refuses_mass_times_distance(org):
    factor = org.add_factor(unit="passenger*km", co2e_per_unit=Decimal("0.03"))
    inp = make_input(
        method="distance",
        category=6,
        activity=factor.activity,
        amount=Decimal("0"),
        unit="",
        mass=Decimal("1"),
        mass_unit="t",
        distance=Decimal("5"),
        distance_unit="km",
    )
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert "passenger" in exc.value.errors["mass_unit"][0]


# -- supplier-specific -----------------------------------------------------------------------


def _supplier_factor(org, supplier, **kwargs):
    dataset = org.add_dataset(source="supplier", basis_year=2024)
    values = {
        "dataset": dataset,
        "supplier": supplier,
        "activity": "naics:331110",
        "region": "US",
        "year": 2024,
        "unit": "kg",
        "co2e_per_unit": Decimal("1.9"),
    }
    values.update(kwargs)
    return org.add_factor(**values)


def test_supplier_specific_prefers_the_suppliers_own_factor(org, steel_factor):
    supplier = org.add_supplier()
    own = _supplier_factor(org, supplier, unit="t", co2e_per_unit=Decimal("1850"))
    inp = make_input(
        method="supplier_specific",
        activity="naics:331110",
        amount=Decimal("2"),
        unit="t",
        supplier_id=supplier.pk,
        year=2024,
    )
    result = calculate(inp, organization=org)
    assert result.factor == own
    assert result.co2e_kg == Decimal("3700")
    assert result.fallbacks == []
    assert (result.data_quality.reliability, result.data_quality.technology) == (1, 1)


def test_supplier_specific_falls_back_to_average_data(org, electricity_factor):
    supplier = org.add_supplier()
    inp = make_input(
        method="supplier_specific",
        activity="desnz:7_400_4000_5",
        amount=Decimal("1"),
        unit="MWh",
        supplier_id=supplier.pk,
    )
    result = calculate(inp, organization=org)
    assert result.factor == electricity_factor
    assert result.co2e_kg == Decimal("177")
    assert codes(result.fallbacks) == ["supplier_factor_missing"]
    assert (result.data_quality.reliability, result.data_quality.technology) == (2, 2)


def test_supplier_specific_fallback_to_spend_factor_computes_as_spend(org, steel_factor):
    supplier = org.add_supplier()
    inp = make_input(
        method="supplier_specific",
        activity="naics:331110",
        amount=Decimal("1000"),
        unit="USD",
        supplier_id=supplier.pk,
        spend_year=2022,
    )
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("787")
    assert codes(result.fallbacks) == ["supplier_factor_missing"]


def test_supplier_specific_needs_a_supplier_of_this_org(org, other_org, electricity_factor):
    foreign = other_org.add_supplier()
    for supplier_id in (None, foreign.pk):
        inp = make_input(method="supplier_specific", activity="desnz:7_400_4000_5", supplier_id=supplier_id)
        with pytest.raises(CalculationError) as exc:
            calculate(inp, organization=org)
        assert list(exc.value.errors) == ["supplier"]


def test_another_orgs_supplier_factor_is_invisible(org, other_org, steel_factor):
    theirs = other_org.add_supplier()
    their_factor = _supplier_factor(other_org, theirs, unit="USD", currency="USD")
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(method="spend", factor_id=their_factor.pk, unit="USD"), organization=org)
    assert list(exc.value.errors) == ["factor_id"]
    # ... and the average-data search for the same activity does not pick it either.
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("1000"), unit="USD", spend_year=2022)
    assert calculate(inp, organization=org).factor == steel_factor


def test_supplier_factor_not_used_for_other_purchases(org, steel_factor):
    supplier = org.add_supplier()
    _supplier_factor(org, supplier, unit="USD", currency="USD", co2e_per_unit=Decimal("0.1"))
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("1000"), unit="USD", spend_year=2022)
    assert calculate(inp, organization=org).factor == steel_factor


# -- input validation ------------------------------------------------------------------------


@pytest.mark.parametrize("category", [0, 16, -1])
def test_category_out_of_range(org, electricity_factor, category):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", category=category), organization=org)
    assert list(exc.value.errors) == ["category"]


@pytest.mark.parametrize(
    "amount", [Decimal("-1"), Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN"), 1.5]
)
def test_amount_must_be_finite_and_non_negative(org, electricity_factor, amount):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", amount=amount), organization=org)
    assert list(exc.value.errors) == ["amount"]
    assert exc.value.errors["amount"][0].startswith("must be a finite, non-negative number")


def test_unknown_method(org, electricity_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", method="magic"), organization=org)
    assert list(exc.value.errors) == ["method"]


def test_unknown_activity(org):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="x"), organization=org)
    assert exc.value.errors == {"activity": ["Unknown activity 'x'."]}


def test_neither_factor_id_nor_activity(org):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity=""), organization=org)
    assert list(exc.value.errors) == ["activity"]


def test_zero_amount_is_zero_emissions(org, electricity_factor):
    result = calculate(make_input(activity="desnz:7_400_4000_5", amount=Decimal("0")), organization=org)
    assert result.co2e_kg == Decimal("0")


def test_several_errors_reported_together(org):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="", category=0, amount=Decimal("-1")), organization=org)
    assert set(exc.value.errors) == {"category", "amount", "activity"}


def test_pinned_factor_id(org, electricity_factor):
    result = calculate(make_input(factor_id=electricity_factor.pk, unit="MWh"), organization=org)
    assert result.co2e_kg == Decimal("177")


def test_supplier_id_of_another_org_is_rejected_for_any_method(org, other_org, electricity_factor):
    foreign = other_org.add_supplier()
    inp = make_input(activity="desnz:7_400_4000_5", supplier_id=foreign.pk)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == ["supplier"]


def test_outdated_factor_and_cv_mismatch_warnings(org):
    dataset = org.add_dataset(basis_year=2015)
    factor = org.add_factor(dataset=dataset, year=2015, unit="kWh", unit_label="kWh (Net CV)")
    result = calculate(
        make_input(activity=factor.activity, unit="kWh (Gross CV)", year=2024, region="GB"), organization=org
    )
    assert codes(result.warnings) == ["factor_outdated", "cv_mismatch"]


def test_pinned_factor_of_another_supplier_is_refused(org):
    mine, other = org.add_supplier(), org.add_supplier()
    theirs = _supplier_factor(org, other)
    inp = make_input(method="supplier_specific", factor_id=theirs.pk, unit="kg", supplier_id=mine.pk)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == ["factor_id"]
    # Pinned with the right supplier it is used, and scored as supplier-specific.
    result = calculate(
        make_input(method="supplier_specific", factor_id=theirs.pk, unit="kg", supplier_id=other.pk), organization=org
    )
    assert result.co2e_kg == Decimal("1.9")
    assert result.data_quality.reliability == 1


def test_supplier_specific_with_pinned_factor_still_needs_supplier(org, electricity_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(method="supplier_specific", factor_id=electricity_factor.pk), organization=org)
    assert list(exc.value.errors) == ["supplier"]


def test_result_too_large_to_store_is_an_error_on_amount(org, electricity_factor):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", amount=Decimal("1E+30"), unit="MWh"), organization=org)
    assert list(exc.value.errors) == ["amount"]


# -- malformed units are errors on the field that carried them ---------------------------------

BAD_UNITS = ["kWh/0", "1/0", "((", "kWh)", "kWh**0", "t/0", "1", "percent", "kWh**1j", "mwh"]


@pytest.mark.parametrize("text", BAD_UNITS)
def test_bad_activity_unit_is_an_error_on_unit(org, electricity_factor, text):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", unit=text), organization=org)
    assert list(exc.value.errors) == ["unit"]
    assert exc.value.errors["unit"][0].startswith(f"Unknown unit '{text}'")


@pytest.mark.parametrize("text", BAD_UNITS)
@pytest.mark.parametrize("field", ["mass_unit", "distance_unit"])
def test_bad_mass_or_distance_unit_is_an_error_on_that_field(org, hgv_factor, field, text):
    units = {"mass_unit": "t", "distance_unit": "km", field: text}
    inp = freight_input(mass=Decimal("20"), distance=Decimal("60"), **units)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == [field]
    assert exc.value.errors[field][0].startswith(f"Unknown unit '{text}'")


@pytest.mark.parametrize("text", BAD_UNITS)
def test_bad_unit_for_a_supplier_specific_activity_factor(org, electricity_factor, text):
    supplier = org.add_supplier()
    inp = make_input(method="supplier_specific", supplier_id=supplier.pk, activity="desnz:7_400_4000_5", unit=text)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == ["unit"]


def test_milliwatt_hours_are_not_megawatt_hours(org, electricity_factor):
    milli = calculate(
        make_input(activity="desnz:7_400_4000_5", amount=Decimal("1000000000"), unit="mWh"), organization=org
    )
    mega = calculate(make_input(activity="desnz:7_400_4000_5", amount=Decimal("1"), unit="MWh"), organization=org)
    assert milli.converted_amount == Decimal("1000")  # 10^9 mWh = 1 MWh = 1000 kWh
    assert milli.co2e_kg == mega.co2e_kg == Decimal("177")
    assert calculate(make_input(activity="desnz:7_400_4000_5", unit="mWh"), organization=org).co2e_kg == 0


@pytest.mark.parametrize(("amount", "unit"), [("1E+999999", "kWh"), ("9E+999999", "GWh"), ("1E+999990", "GJ")])
def test_amount_overflowing_decimal_is_an_error_on_amount(org, electricity_factor, amount, unit):
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity="desnz:7_400_4000_5", amount=Decimal(amount), unit=unit), organization=org)
    assert list(exc.value.errors) == ["amount"]


def test_mass_times_distance_overflowing_decimal_is_an_error_on_mass(org, hgv_factor):
    inp = freight_input(mass=Decimal("1E+999990"), mass_unit="t", distance=Decimal("1E+999990"), distance_unit="km")
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == ["mass"]


# -- the JSON echo --------------------------------------------------------------------------------


def test_as_dict_leaves_currency_out_unless_money_was_converted(org, electricity_factor, steel_factor):
    activity = calculate(make_input(activity="desnz:7_400_4000_5"), organization=org).as_dict()
    assert "currency" not in activity["input"]
    spend = make_input(method="spend", activity="naics:331110", unit="", spend_year=2022)
    assert calculate(spend, organization=org).as_dict()["input"]["currency"] == "USD"
    supplier = org.add_supplier()
    as_spend = make_input(
        method="supplier_specific", supplier_id=supplier.pk, activity="naics:331110", unit="", spend_year=2022
    )
    result = calculate(as_spend, organization=org)
    assert result.basis == "spend"
    assert result.as_dict()["input"]["currency"] == "USD"
    as_activity = make_input(method="supplier_specific", supplier_id=supplier.pk, activity="desnz:7_400_4000_5")
    assert "currency" not in calculate(as_activity, organization=org).as_dict()["input"]


def test_as_dict_rounds_converted_amount_but_co2e_uses_the_exact_value(org):
    factor = org.add_factor(unit="kWh", co2e_per_unit=Decimal("1000000000"))
    result = calculate(make_input(activity=factor.activity, amount=Decimal("1"), unit="GJ"), organization=org)
    data = result.as_dict()
    assert data["converted_amount"] == "277.777777777778"  # 10^9 J / 3.6x10^6 J, 12 places
    with localcontext(prec=60):
        exact = Decimal(10**9) / Decimal(3_600_000) * Decimal(10**9)
    assert result.co2e_kg == exact.quantize(Decimal("0.000001")) == Decimal("277777777777.777778")
    assert Decimal(data["converted_amount"]) * factor.co2e_per_unit != result.co2e_kg  # the rounded one would differ
    assert result.converted_amount == Fraction(10**9, 3_600_000)  # the attribute keeps the exact value


# -- one rounding, of the exact value ---------------------------------------------------------------


def test_a_tie_of_the_exact_value_rounds_half_even_once(org):
    """DESNZ 2025 ``5_305_3127_9`` (refrigerated articulated HGV, 100 % laden): 1.74192 kg CO2e per mile.

    0.360426 km is exactly 0.3901175 kg CO2e, a tie: half-even gives 0.390118. Dividing first (km to miles
    in 40 digits) and rounding the product again gave 0.390117.
    """
    factor = org.add_factor(activity="desnz:5_305_3127_9", unit="mile", co2e_per_unit=Decimal("1.74192"))
    result = calculate(make_input(activity=factor.activity, amount=Decimal("0.360426"), unit="km"), organization=org)
    assert result.converted_amount * Fraction("1.74192") == Fraction("0.3901175")
    assert result.co2e_kg == Decimal("0.390118")


def test_a_tie_through_a_volume_conversion_rounds_half_even_once(org):
    """EPA Hub 2024 blast furnace gas: 0.02524 kg CO2 + 0.000002 g CH4 x 28 + 0.000009 g N2O x 265 per scf.

    6489.277344 m³ is exactly 5784.7260625 kg CO2e: half-even gives 5784.726062 (not 5784.726063).
    """
    factor = org.add_factor(activity="epa_hub:blast_furnace_gas", unit="ft**3", co2e_per_unit=Decimal("0.025242441"))
    inp = make_input(activity=factor.activity, amount=Decimal("6489.277344"), unit="m**3")
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("5784.726062")


def test_a_tie_in_a_gas_rounds_half_even_once(org):
    factor = org.add_factor(unit="mile", co2e_per_unit=Decimal("1.74192"), gases={"CO2": "1.74192"})
    result = calculate(make_input(activity=factor.activity, amount=Decimal("0.360426"), unit="km"), organization=org)
    assert result.gases == {"CO2": Decimal("0.390118")}


def test_spend_is_exact_through_rate_inverse_and_indexes(org, steel_factor):
    # Only USD->EUR is stored, so EUR->USD is its inverse; 1/0.9 repeats forever, and is kept exact.
    org.add_rate(currency="USD", quote_currency="EUR", year=2024, rate=Decimal("0.9"))
    org.add_index(currency="USD", year=2022, value=Decimal("292.655"))
    org.add_index(currency="USD", year=2024, value=Decimal("313.689"))
    inp = make_input(method="spend", activity="naics:331110", amount=Decimal("900"), unit="", currency="EUR")
    result = calculate(replace(inp, spend_year=2024), organization=org)
    exact = Fraction(900) / Fraction("0.9") * Fraction("292.655") / Fraction("313.689")
    assert result.converted_amount == exact
    assert result.co2e_kg == round(exact * Fraction("0.787") * 10**6) / Decimal(10**6)


# -- ambiguous unit spellings are refused, with the unambiguous ones listed ---------------------------


@pytest.mark.parametrize(
    ("text", "listed"),
    [
        ("mt", ["t", "tonne", "short_ton", "long_ton", "Mt"]),
        ("MT", ["t", "tonne", "short_ton", "long_ton"]),
        ("ton", ["t", "tonne", "short_ton", "long_ton"]),
        ("tons", ["t", "tonne", "short_ton", "long_ton"]),
        ("Tons", ["t", "tonne", "short_ton", "long_ton"]),
        ("therm", ["therm_us", "therm_ec"]),
        ("therms", ["therm_us", "therm_ec"]),
        ("gallon", ["US_gallon", "imperial_gallon"]),
        ("gal", ["US_gallon", "imperial_gallon"]),
        ("barrel", ["oil_barrel", "US_liquid_barrel"]),
        ("cwt", ["short_hundredweight", "long_hundredweight"]),
        ("pint", ["US_pint", "imperial_pint"]),
    ],
)
def test_an_ambiguous_unit_is_refused_on_its_field_with_the_alternatives(org, text, listed):
    factor = org.add_factor(unit="kg")
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity=factor.activity, amount=Decimal("1"), unit=text), organization=org)
    assert list(exc.value.errors) == ["unit"]
    message = exc.value.errors["unit"][0]
    assert f"Unit '{text}' is ambiguous" in message
    for spelling in listed:
        assert spelling in message


def test_an_ambiguous_unit_is_refused_even_on_a_factor_it_would_convert_to(org):
    """``ton`` used to be read as a US short ton even on a tonnes factor: a 10 % understatement, unflagged."""
    factor = org.add_factor(unit="t", co2e_per_unit=Decimal("1850"))
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity=factor.activity, amount=Decimal("2"), unit="tons"), organization=org)
    assert "short_ton" in exc.value.errors["unit"][0]


@pytest.mark.parametrize(("field", "text"), [("mass_unit", "tons"), ("mass_unit", "MT"), ("distance_unit", "ton")])
def test_an_ambiguous_mass_or_distance_unit_is_refused_on_that_field(org, hgv_factor, field, text):
    units = {"mass_unit": "t", "distance_unit": "km", field: text}
    inp = freight_input(mass=Decimal("20"), distance=Decimal("60"), **units)
    with pytest.raises(CalculationError) as exc:
        calculate(inp, organization=org)
    assert list(exc.value.errors) == [field]
    assert "ambiguous" in exc.value.errors[field][0]


def test_a_ton_mile_is_ambiguous_but_a_short_ton_mile_is_not(org, hgv_factor):
    ambiguous = make_input(method="distance", category=4, activity="desnz:freight_hgv", unit="ton-mile")
    with pytest.raises(CalculationError) as exc:
        calculate(ambiguous, organization=org)
    assert "short_ton" in exc.value.errors["unit"][0]
    result = calculate(replace(ambiguous, unit="short_ton*mile"), organization=org)
    assert result.converted_amount == Fraction("0.90718474") * Fraction("1.609344")


@pytest.mark.parametrize(
    ("unit", "expected_kg"),
    [
        ("t", "1000"),
        ("tonne", "1000"),
        ("short_ton", "907.18474"),
        ("long_ton", "1016.0469088"),
        ("Mt", "1000000000"),
    ],
)
def test_the_unambiguous_mass_spellings_convert(org, unit, expected_kg):
    factor = org.add_factor(unit="kg")
    result = calculate(make_input(activity=factor.activity, unit=unit), organization=org)
    assert result.converted_amount == Fraction(expected_kg)


@pytest.mark.parametrize(
    ("unit", "expected_kwh"),
    [
        # The EC therm is 100,000 ISO Btu (1,055.056 J each); the US therm 105,480,400 J.
        ("therm_ec", Fraction("105505600") / 3_600_000),
        ("therm_us", Fraction("105480400") / 3_600_000),
    ],
)
def test_the_two_therms_differ(org, unit, expected_kwh):
    factor = org.add_factor(unit="kWh")
    assert calculate(make_input(activity=factor.activity, unit=unit), organization=org).converted_amount == expected_kwh


# -- defaults from the reporting period ----------------------------------------------------------------


def test_period_defaults_fill_only_what_is_missing():
    inp, notes = period_defaults(make_input(), period_year=2012)
    assert (inp.year, inp.spend_year) == (2012, None)  # no spend year on an activity-data line
    assert [note.code for note in notes] == ["year_from_period"]

    given = make_input(year=2020)
    assert period_defaults(given, period_year=2012) == (given, [])

    spend = make_input(method="spend", activity="naics:331110", unit="")
    inp, notes = period_defaults(spend, period_year=2024)
    assert (inp.year, inp.spend_year) == (2024, 2024)
    assert [note.code for note in notes] == ["year_from_period", "spend_year_from_period"]


# -- biogenic CO2: reported beside co2e_kg, never in it ---------------------------------------------


def test_biogenic_co2_is_reported_apart_from_co2e(org, biodiesel_factor):
    # 100 US gallons of biodiesel: 100 x 0.00657 kg CO2e (CH4 and N2O); 100 x 9.45 kg biogenic CO2.
    inp = make_input(activity=biodiesel_factor.activity, amount=Decimal("100"), unit="US_gallon", category=3)
    result = calculate(inp, organization=org)
    assert result.co2e_kg == Decimal("0.657000")
    assert result.biogenic_co2_kg == Decimal("945.000000")
    assert result.gases == {"CH4": Decimal("0.392"), "N2O": Decimal("0.265")}
    assert sum(result.gases.values()) == result.co2e_kg  # the gases add up to co2e_kg, which has no biogenic CO2
    data = result.as_dict()
    assert (data["co2e_kg"], data["biogenic_co2_kg"]) == ("0.657000", "945.000000")
    assert data["factor"]["biogenic_co2_per_unit"] == "9.45"


def test_biogenic_co2_is_exact_and_rounded_once_like_co2e(org, biodiesel_factor):
    # 1 litre = 1/3.785411784 US gallon: both figures are rounded once from the exact product.
    result = calculate(make_input(activity=biodiesel_factor.activity, unit="L"), organization=org)
    litre = Fraction(1) / Fraction("3.785411784")
    for value, per_gallon in ((result.biogenic_co2_kg, "9.45"), (result.co2e_kg, "0.00657")):
        with localcontext() as ctx:
            ctx.prec = 60
            exact = Decimal(litre.numerator) * Decimal(per_gallon) / Decimal(litre.denominator)
        assert value == exact.quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)
    assert result.biogenic_co2_kg == Decimal("2.496426")
    assert result.co2e_kg == Decimal("0.001736")


def test_a_biogenic_tie_rounds_half_even_once(org):
    # As the co2e tie above: 0.360426 km at 1.74192 kg per mile is exactly 0.3901175 kg.
    factor = org.add_factor(unit="mile", co2e_per_unit=Decimal("0"), biogenic_co2_per_unit=Decimal("1.74192"))
    result = calculate(make_input(activity=factor.activity, amount=Decimal("0.360426"), unit="km"), organization=org)
    assert (result.co2e_kg, result.biogenic_co2_kg) == (Decimal("0.000000"), Decimal("0.390118"))


def test_no_biogenic_figure_is_none_not_zero(org, electricity_factor):
    result = calculate(make_input(activity=electricity_factor.activity, unit="MWh"), organization=org)
    assert result.biogenic_co2_kg is None
    assert result.as_dict()["biogenic_co2_kg"] is None
    assert result.as_dict()["factor"]["biogenic_co2_per_unit"] is None


def test_a_biogenic_figure_too_large_to_store_is_an_error_on_the_amount(org):
    factor = org.add_factor(unit="kWh", co2e_per_unit=Decimal("0"), biogenic_co2_per_unit=Decimal("1e10"))
    with pytest.raises(CalculationError) as exc:
        calculate(make_input(activity=factor.activity, amount=Decimal("1e10")), organization=org)
    assert list(exc.value.errors) == ["amount"]


def test_no_factor_and_no_activity_is_the_same_error_as_at_input(org, electricity_factor):
    # The calculator re-checks calculator.inputs' factor rule, with its message.
    with pytest.raises(CalculationError) as caught:
        calculate(make_input(activity="  ", factor_id=None), organization=org)
    assert caught.value.errors == {"activity": ["Give either factor_id or activity."]}


def test_a_factor_with_biogenic_co2_only_says_its_zero_co2e_is_missing_data(org):
    # As the Hub's mobile table gives biodiesel and ethanol: CO2 only, all of it biogenic, no CH4 or N2O.
    co2_only = org.add_factor(unit="US_gallon", co2e_per_unit=Decimal("0"), biogenic_co2_per_unit=Decimal("9.45"))
    result = calculate(make_input(activity=co2_only.activity, amount=Decimal("10"), unit="US_gallon"), organization=org)
    assert (result.co2e_kg, result.biogenic_co2_kg) == (Decimal("0.000000"), Decimal("94.500000"))
    assert [note.code for note in result.warnings] == ["co2e_biogenic_only"]
    assert "co2e_biogenic_only" in [note["code"] for note in result.as_dict()["warnings"]]


def test_a_factor_with_co2e_and_biogenic_co2_has_no_such_warning(org, biodiesel_factor):
    result = calculate(
        make_input(activity=biodiesel_factor.activity, amount=Decimal("10"), unit="US_gallon"), organization=org
    )
    assert result.co2e_kg > 0 and result.biogenic_co2_kg > 0
    assert "co2e_biogenic_only" not in [note.code for note in result.warnings]
