"""End to end on the publishers' real files: import, then calculate through the API.

The three published checks: 1,000 USD of 2022 spend on NAICS 331110 -> 787 kg CO2e; 1 MWh of UK
grid electricity (DESNZ 2025) -> 177 kg; 1 m³ of diesel (DESNZ 2025) -> 2,570.82 kg.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from emissions.services.factors import factor_dataset_import

pytestmark = pytest.mark.django_db


@pytest.fixture
def imported() -> None:
    directory = Path(settings.FACTOR_DATA_DIR)
    for source in ("ipcc_gwp", "epa_supply_chain", "desnz"):
        factor_dataset_import(source=source, directory=directory)


@pytest.mark.parametrize(
    ("body", "co2e_kg", "factor"),
    [
        (
            {
                "category": 1,
                "method": "spend",
                "activity": "naics:331110",
                "amount": "1000",
                "unit": "USD",
                "spend_year": 2022,
            },
            "787.000000",
            {
                "source": "epa_supply_chain",
                "dataset_version": "1.3.0",
                "unit": "USD",
                "year": 2022,
                "co2e_per_unit": "0.787000000000000",
                "name": "Iron and Steel Mills and Ferroalloy Manufacturing",
            },
        ),
        (
            {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": "1", "unit": "MWh"},
            "177.000000",
            {
                "source": "desnz",
                "dataset_version": "2025",
                "unit": "kWh",
                "region": "GB",
                "co2e_per_unit": "0.177000000000000",
            },
        ),
        (
            {"category": 3, "method": "activity", "activity": "desnz:1_101_1011_8", "amount": "1", "unit": "m³"},
            "2570.820000",
            {
                "source": "desnz",
                "dataset_version": "2025",
                "unit": "L",
                "region": "GB",
                "co2e_per_unit": "2.570820000000000",
            },
        ),
    ],
    ids=["naics-331110-spend", "uk-grid-1-mwh", "diesel-1-m3"],
)
def test_published_values_through_the_api(imported, api, body, co2e_kg, factor) -> None:
    response = api.post(reverse("calculate"), body, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["co2e_kg"] == co2e_kg
    assert data["factor"]["activity"] == body["activity"]
    assert {key: data["factor"][key] for key in factor} == factor
    assert data["fallbacks"] == []
