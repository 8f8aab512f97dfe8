"""Shared builders for the calculator tests: factors built to published values with the suite's factories."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.models import FactorDataset
from tests.factories import EmissionFactorFactory, FactorDatasetFactory


@pytest.fixture
def epa_2022():
    return FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="v1.3.0", basis_year=2022)


@pytest.fixture
def desnz_2025():
    return FactorDatasetFactory(source=FactorDataset.Source.DESNZ, version="2025", basis_year=2025)


@pytest.fixture
def steel_spend(epa_2022):
    """EPA Supply Chain v1.3.0, NAICS 331110, with margins: 0.787 kg CO2e per 2022 USD."""
    return EmissionFactorFactory(
        dataset=epa_2022,
        activity="naics:331110",
        name="Iron and steel mills and ferroalloy manufacturing",
        region="US",
        year=2022,
        unit="USD",
        unit_label="kg CO2e/2022 USD, purchaser price",
        currency="USD",
        co2e_per_unit=Decimal("0.787"),
    )


@pytest.fixture
def uk_electricity(desnz_2025):
    """DESNZ 2025, UK electricity: 0.17700 kg CO2e per kWh."""
    return EmissionFactorFactory(
        dataset=desnz_2025,
        activity="desnz:7_400_4000_5",
        name="Electricity generated, UK",
        region="GB",
        year=2025,
        unit="kWh",
        unit_label="kWh",
        co2e_per_unit=Decimal("0.17700"),
        gases={"CO2": "0.17489", "CH4": "0.00089", "N2O": "0.00122"},
    )


@pytest.fixture
def diesel(desnz_2025):
    """DESNZ 2025, diesel (average biofuel blend): 2.57082 kg CO2e per litre."""
    return EmissionFactorFactory(
        dataset=desnz_2025,
        activity="desnz:1_101_1011_8",
        name="Diesel (average biofuel blend), litres",
        region="GB",
        year=2025,
        unit="L",
        unit_label="litres",
        co2e_per_unit=Decimal("2.57082"),
    )


@pytest.fixture
def hgv(desnz_2025):
    """A freight factor per tonne.km."""
    return EmissionFactorFactory(
        dataset=desnz_2025,
        activity="desnz:freight_hgv",
        name="HGV, average laden, tonne.km",
        region="GB",
        year=2025,
        unit="t*km",
        unit_label="tonne.km",
        co2e_per_unit=Decimal("0.10700"),
    )
