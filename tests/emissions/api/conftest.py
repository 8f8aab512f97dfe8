"""Fixtures for the API tests: the three headline factors with their published values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.models import FactorDataset
from tests.factories import EmissionFactorFactory, FactorDatasetFactory


@pytest.fixture
def steel_factor():
    """US EPA supply chain, NAICS 331110 (iron and steel mills): 0.787 kg CO2e per 2022 USD."""
    dataset = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, version="v1.3.0", basis_year=2022)
    return EmissionFactorFactory(
        dataset=dataset,
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
def desnz_dataset():
    return FactorDatasetFactory(source=FactorDataset.Source.DESNZ, version="2025", basis_year=2025)


@pytest.fixture
def electricity_factor(desnz_dataset):
    """DESNZ 2025 UK electricity generation: 0.177 kg CO2e per kWh."""
    return EmissionFactorFactory(
        dataset=desnz_dataset,
        activity="desnz:7_400_4000_5",
        name="UK electricity",
        region="GB",
        year=2025,
        unit="kWh",
        co2e_per_unit=Decimal("0.177"),
    )


@pytest.fixture
def diesel_factor(desnz_dataset):
    """DESNZ 2025 diesel (average biofuel blend): 2.57082 kg CO2e per litre."""
    return EmissionFactorFactory(
        dataset=desnz_dataset,
        activity="desnz:1_101_1011_8",
        name="Diesel (average biofuel blend)",
        region="GB",
        year=2025,
        unit="L",
        unit_label="litres",
        co2e_per_unit=Decimal("2.57082"),
    )
