"""The calculator's tests are pure: in-memory factors (``helpers.World``), no database, cache or data files.

The published-value factors come from ``tests/published.py``, as the database suites' do, so both
check the same figures.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from calculator.types import Dataset, Factor
from tests import published
from tests.calculator.helpers import World


@pytest.fixture
def org() -> World:
    return World()


@pytest.fixture
def other_org() -> World:
    return World()


@pytest.fixture
def epa_2022(org: World) -> Dataset:
    return org.add_dataset(**published.EPA_SUPPLY_CHAIN_2022)


@pytest.fixture
def desnz_2025(org: World) -> Dataset:
    return org.add_dataset(**published.DESNZ_2025)


@pytest.fixture
def steel_factor(org: World, epa_2022: Dataset) -> Factor:
    return org.add_factor(dataset=epa_2022, **published.STEEL)


@pytest.fixture
def electricity_factor(org: World, desnz_2025: Dataset) -> Factor:
    return org.add_factor(dataset=desnz_2025, **published.ELECTRICITY)


@pytest.fixture
def diesel_factor(org: World, desnz_2025: Dataset) -> Factor:
    return org.add_factor(dataset=desnz_2025, **published.DIESEL)


@pytest.fixture
def hgv_factor(org: World, desnz_2025: Dataset) -> Factor:
    """A freight factor per tonne.km."""
    return org.add_factor(
        dataset=desnz_2025,
        activity="desnz:freight_hgv",
        name="HGV, average laden, tonne.km",
        unit="t*km",
        unit_label="tonne.km",
        co2e_per_unit=Decimal("0.10700"),
    )


@pytest.fixture
def biodiesel_factor(org: World) -> Factor:
    """A factor whose publisher separates biogenic CO2 (kept out of co2e_per_unit): ``published.HUB_BIODIESEL``."""
    return org.add_factor(dataset=org.add_dataset(**published.EPA_HUB_2024), **published.HUB_BIODIESEL)
