"""Calculator-only factors; the published-value factors (steel, UK electricity, diesel) live in tests/conftest.py."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.models import EmissionFactor, FactorDataset
from tests.factories import EmissionFactorFactory


@pytest.fixture
def hgv_factor(desnz_2025: FactorDataset) -> EmissionFactor:
    """A freight factor per tonne.km."""
    return EmissionFactorFactory.create(
        dataset=desnz_2025,
        activity="desnz:freight_hgv",
        name="HGV, average laden, tonne.km",
        region="GB",
        year=2025,
        unit="t*km",
        unit_label="tonne.km",
        co2e_per_unit=Decimal("0.10700"),
    )
