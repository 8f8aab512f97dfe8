"""Request bodies shared by the API tests, and the supplier rows some of them refer to."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from emissions.models import EmissionFactor, Organization, Supplier
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, SupplierFactory

FREIGHT_ACTIVITY = "desnz:27_304_3120_14"


# Hub 2024 table 1: biodiesel (100 %), per US gallon: 9.45 kg CO2 (biogenic), 0.14 g CH4, 0.01 g N2O.
HUB_BIODIESEL = "epa_hub:stationary:biodiesel-100:gallon"


def biodiesel_input(**overrides: Any) -> dict[str, Any]:
    """100 US gallons of biodiesel burnt: 0.657 kg CO2e (CH4 and N2O at AR5) and 945 kg of biogenic CO2."""
    return electricity_input(**{"activity": HUB_BIODIESEL, "amount": "100", "unit": "US_gallon", **overrides})


def electricity_input(**overrides: Any) -> dict[str, Any]:
    """A valid calculate/activity payload for 1 MWh of UK electricity."""
    data = {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": "1", "unit": "MWh"}
    data.update(overrides)
    return data


def activity_input(**overrides: Any) -> dict[str, Any]:
    """A valid activity payload (electricity input plus a period)."""
    data = electricity_input(period_start="2025-01-01", period_end="2025-01-31")
    data.update(overrides)
    return data


def steel_spend_input(**overrides: Any) -> dict[str, Any]:
    """1000 spent on NAICS 331110 (iron and steel mills); no unit, so in the default currency, USD."""
    data: dict[str, Any] = {"category": 1, "method": "spend", "activity": "naics:331110", "amount": "1000"}
    data.update(overrides)
    return data


def freight_input(**overrides: Any) -> dict[str, Any]:
    """20 t carried 60 km by the ``FREIGHT_ACTIVITY`` HGV factor, given as mass x distance (no amount)."""
    data: dict[str, Any] = {
        "category": 4,
        "method": "distance",
        "activity": FREIGHT_ACTIVITY,
        "mass": "20",
        "mass_unit": "t",
        "distance": "60",
        "distance_unit": "km",
    }
    data.update(overrides)
    return data


def supplier_specific_input(supplier: Supplier, **overrides: Any) -> dict[str, Any]:
    """``amount`` kg (default 10) bought from ``supplier``, with no activity: the supplier's own newest factor."""
    data: dict[str, Any] = {
        "category": 1,
        "method": "supplier_specific",
        "supplier": supplier.pk,
        "amount": "10",
        "unit": "kg",
    }
    data.update(overrides)
    return data


def supplier_with_factor(org: Organization, *, co2e: str = "2.5") -> tuple[Supplier, EmissionFactor]:
    """A supplier of ``org`` with its own factor (kg CO2e per kg of product) in ``org``'s supplier dataset."""
    supplier = SupplierFactory.create(organization=org)
    dataset = FactorDatasetFactory.create(
        organization=org, source="supplier", version=f"supplier-{supplier.pk}", basis_year=2024
    )
    factor = EmissionFactorFactory.create(
        dataset=dataset,
        supplier=supplier,
        activity=f"supplier:{supplier.pk}:widget",
        region="US",
        year=2024,
        unit="kg",
        co2e_per_unit=Decimal(co2e),
    )
    return supplier, factor
