"""End to end on the publishers' real files: import, then calculate through the API.

The three published checks: 1,000 USD of 2022 spend on NAICS 331110 -> 787 kg CO2e; 1 MWh of UK
grid electricity (DESNZ 2025) -> 177 kg; 1 m³ of diesel (DESNZ 2025) -> 2,570.82 kg. And the README's spend
examples in other currencies and years, with the shipped ECB rates and US CPI-U.
"""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
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


def _readme_spend_examples() -> list[tuple[dict, str]]:
    """The README's spend examples in another currency: (request body, the kg CO2e the README prints for it)."""
    text = (Path(settings.BASE_DIR) / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"-> ([\d.]+) kg CO2e.*?\n(?:#.*\n)*curl [^\n]*\n\s*-d '(\{[^']*\})'", text)
    examples = [(json.loads(body), kg) for kg, body in found]
    return [(body, kg) for body, kg in examples if body.get("currency") not in (None, "USD")]


def test_the_readme_spend_examples_answer_what_it_prints_out_of_the_box(api) -> None:
    """As a new user after ``make run``: ``import_factors`` as it runs there (the shipped reference sets included, no
    table loaded by hand), then the README's EUR and GBP examples through the API."""
    call_command("import_factors", "--source", "ipcc_gwp", "epa_supply_chain", "--no-progress", stdout=io.StringIO())
    examples = _readme_spend_examples()
    assert {body["currency"] for body, _ in examples} == {"EUR", "GBP"}
    for body, kg in examples:
        response = api.post(reverse("calculate"), body, format="json")
        assert response.status_code == 200, response.json()
        data = response.json()
        assert Decimal(data["co2e_kg"]) == Decimal(kg), body
        assert data["fallbacks"] == []
        conversion = data["conversion"]
        (rate,) = conversion["exchange_rate"]["rows"]
        assert (rate["currency"], rate["quote_currency"], rate["year"]) == (body["currency"], "USD", body["spend_year"])
        assert rate["source"].startswith("ECB euro foreign exchange reference rates")
        index = conversion["price_index"]
        assert index["set"] == "cpi-u"
        assert (index["from"]["year"], index["to"]["year"]) == (body["spend_year"], 2022)
        for row in (index["from"], index["to"]):
            assert row["source"].startswith("US BLS CPI-U")
    eur = next(body for body, _ in examples if body["currency"] == "EUR")
    conversion = api.post(reverse("calculate"), eur, format="json").json()["conversion"]
    assert conversion["exchange_rate"]["value"] == "1.0823804688"
    assert Decimal(conversion["price_index"]["from"]["value"]) == Decimal("313.689")
    assert Decimal(conversion["price_index"]["to"]["value"]) == Decimal("292.655")
