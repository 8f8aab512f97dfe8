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
