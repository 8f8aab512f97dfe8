"""calculator.resolve: gas factors (IPCC GWP tables) use the factor datasets' GWP set unless pinned (no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from calculator.rules import DATASET_GWP_SET
from tests.calculator.helpers import World, calculate, make_input

# CH4 GWP-100 by assessment report (IPCC; AR6 is the generic, not fossil/non-fossil, value).
CH4 = {"AR4": Decimal("25"), "AR5": Decimal("28"), "AR6": Decimal("27.9")}
BASIS_YEAR = {"AR4": 2007, "AR5": 2013, "AR6": 2021}


@pytest.fixture
def methane(org: World) -> dict[str, object]:
    """``gwp:CH4`` in three GWP tables, as the ipcc_gwp importer stores them."""
    return {
        report: org.add_factor(
            dataset=org.add_dataset(source="ipcc_gwp", version=report, basis_year=BASIS_YEAR[report]),
            activity="gwp:CH4",
            region="GLOBAL",
            year=BASIS_YEAR[report],
            unit="kg",
            co2e_per_unit=value,
        )
        for report, value in CH4.items()
    }


def _codes(notes) -> list[str]:
    return [note.code for note in notes]


def test_the_factor_datasets_gwp_set_is_ar5():
    assert DATASET_GWP_SET == "AR5"


def test_a_gas_without_a_dataset_version_uses_the_datasets_gwp_set(org, methane):
    result = calculate(make_input(activity="gwp:CH4", amount=Decimal("10"), unit="kg"), organization=org)
    assert result.factor is methane["AR5"]
    assert result.co2e_kg == Decimal("280")  # 10 kg x 28, not x 27.9 (AR6, the newest table)
    assert _codes(result.fallbacks) == ["gwp_set_default"]
    assert "used AR5" in result.fallbacks[0].detail and "AR4, AR6" in result.fallbacks[0].detail
    assert "gwp_set_mismatch" not in _codes(result.warnings)


def test_a_pinned_other_gwp_set_is_used_and_warned_about(org, methane):
    inp = make_input(activity="gwp:CH4", amount=Decimal("10"), unit="kg", dataset_version="AR6")
    result = calculate(inp, organization=org)
    assert result.factor is methane["AR6"]
    assert result.co2e_kg == Decimal("279")
    assert "gwp_set_default" not in _codes(result.fallbacks)
    assert _codes(result.warnings)[-1] == "gwp_set_mismatch"
    assert {"code": "gwp_set_mismatch", "detail": result.warnings[-1].detail} in result.as_dict()["warnings"]


def test_a_gas_factor_pinned_by_id_on_another_set_is_warned_about(org, methane):
    result = calculate(make_input(factor_id=methane["AR4"].pk, unit="kg"), organization=org)
    assert result.co2e_kg == Decimal("25")
    assert "gwp_set_mismatch" in _codes(result.warnings)


def test_a_species_without_the_datasets_set_keeps_the_newest_with_a_warning(org):
    only_ar6 = org.add_factor(
        dataset=org.add_dataset(source="ipcc_gwp", version="AR6", basis_year=2021),
        activity="gwp:HFC-new",
        region="GLOBAL",
        year=2021,
        unit="kg",
        co2e_per_unit=Decimal("100"),
    )
    result = calculate(make_input(activity="gwp:HFC-new", unit="kg"), organization=org)
    assert result.factor is only_ar6
    assert "gwp_set_default" not in _codes(result.fallbacks)
    assert "gwp_set_mismatch" in _codes(result.warnings)


def test_factors_of_other_sources_are_not_narrowed(org, electricity_factor):
    result = calculate(make_input(activity=electricity_factor.activity, unit="kWh"), organization=org)
    assert result.fallbacks == [] and "gwp_set_mismatch" not in _codes(result.warnings)
