"""Factors at their published values, shared by the database suites and the pure calculator suite.

Each is a dict of ``EmissionFactor`` / ``calculator.types.Factor`` fields (the dataset apart), so
``tests/conftest.py`` stores them and ``tests/calculator/conftest.py`` keeps them in memory: both
check the same numbers.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

EPA_SUPPLY_CHAIN_2022: dict[str, Any] = {"source": "epa_supply_chain", "version": "v1.3.0", "basis_year": 2022}
DESNZ_2025: dict[str, Any] = {"source": "desnz", "version": "2025", "basis_year": 2025}

# EPA Supply Chain v1.3.0, NAICS 331110 (iron and steel mills), with margins: 0.787 kg CO2e per 2022 USD.
STEEL: dict[str, Any] = {
    "activity": "naics:331110",
    "name": "Iron and steel mills and ferroalloy manufacturing",
    "region": "US",
    "year": 2022,
    "unit": "USD",
    "unit_label": "kg CO2e/2022 USD, purchaser price",
    "currency": "USD",
    "co2e_per_unit": Decimal("0.787"),
}

# DESNZ 2025, UK electricity generated: 0.17700 kg CO2e per kWh.
ELECTRICITY: dict[str, Any] = {
    "activity": "desnz:7_400_4000_5",
    "name": "Electricity generated, UK",
    "region": "GB",
    "year": 2025,
    "unit": "kWh",
    "unit_label": "kWh",
    "co2e_per_unit": Decimal("0.17700"),
    "gases": {"CO2": "0.17489", "CH4": "0.00089", "N2O": "0.00122"},
}

# DESNZ 2025, diesel (average biofuel blend): 2.57082 kg CO2e per litre.
DIESEL: dict[str, Any] = {
    "activity": "desnz:1_101_1011_8",
    "name": "Diesel (average biofuel blend)",
    "region": "GB",
    "year": 2025,
    "unit": "L",
    "unit_label": "litres",
    "co2e_per_unit": Decimal("2.57082"),
}

EPA_HUB_2024: dict[str, Any] = {"source": "epa_hub", "version": "2024", "basis_year": 2024}

# EPA GHG Emission Factors Hub 2024, table 1, biodiesel (100 %), per US gallon: 9.45 kg CO2 (biogenic,
# reported outside the scopes), 0.14 g CH4 and 0.01 g N2O. CO2e with the Hub's AR5 GWPs (CH4 28, N2O 265):
# 0.14 x 28 + 0.01 x 265 = 6.57 g = 0.00657 kg.
HUB_BIODIESEL: dict[str, Any] = dict(
    activity="epa_hub:stationary:biodiesel-100:gallon",
    name="Biodiesel (100%) (stationary combustion, per gallon)",
    region="US",
    year=2024,
    unit="gallon",
    unit_label="gallon",
    co2e_per_unit=Decimal("0.00657"),
    biogenic_co2_per_unit=Decimal("9.45"),
    gases={"CH4": "0.00392", "N2O": "0.00265"},
)
