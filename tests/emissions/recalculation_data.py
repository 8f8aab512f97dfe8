"""Data for the recalculation tests: the real DESNZ 2025 import, a "modified 2025" version of it that changes three
factors, and an inventory of stored activities that uses changed, unchanged and other-source factors.

The modified version is imported by ``factor_dataset_import`` itself (its parser wrapped to rename the version and
scale three factors by 1.1), as a publisher's corrected edition would be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from calculator.types import CalculationInput
from emissions.importers import desnz
from emissions.importers.base import ParsedDataset, decimal_str, quantize_factor
from emissions.models import Emission, EmissionFactor, FactorDataset, Organization, Supplier
from emissions.services import factors as factor_service
from emissions.services.activities import ActivityInput, activities_create
from emissions.services.factors import factor_dataset_import
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, SupplierFactory
from tests.published import EPA_SUPPLY_CHAIN_2022, STEEL

DATA = Path(settings.FACTOR_DATA_DIR)
MODIFIED_VERSION = "2025-mod"
# The factors the modified version changes (x 1.1), and ones it leaves as published that the inventory uses.
ELECTRICITY = "desnz:7_400_4000_5"  # kWh, with a biogenic figure
DIESEL = "desnz:1_101_1011_8"  # L
FREIGHT = "desnz:27_304_3120_14"  # t*km
CHANGED = (ELECTRICITY, DIESEL, FREIGHT)
TRANSMISSION = "desnz:13_402_4000_5"  # kWh
PLASTICS = "desnz:19_505_5120_15"  # t
SCALE = Decimal("1.1")


def desnz_imported() -> FactorDataset:
    factor_dataset_import(source="desnz", directory=DATA)
    return FactorDataset.objects.get(source="desnz", version="2025", organization__isnull=True)


def _scaled(spec: Any) -> Any:
    gases = {gas: decimal_str(Decimal(value) * SCALE) for gas, value in spec.gases.items()}
    biogenic = spec.biogenic_co2_per_unit
    return dataclasses.replace(
        spec,
        co2e_per_unit=quantize_factor(spec.co2e_per_unit * SCALE),
        biogenic_co2_per_unit=None if biogenic is None else quantize_factor(biogenic * SCALE),
        gases=gases,
    )


def modified_imported(monkeypatch: Any, changed: tuple[str, ...] = CHANGED) -> FactorDataset:
    """DESNZ "2025-mod": every 2025 factor, the ``changed`` ones x 1.1 (CO2e, gases, biogenic CO2)."""
    spec = dataclasses.replace(desnz.DATASET, version=MODIFIED_VERSION, name="UK DESNZ 2025, modified (test)")

    def parse(directory: Path, *, gwp: Any = None) -> list[ParsedDataset]:
        (parsed,) = desnz.parse(directory, gwp=gwp)
        factors = [_scaled(f) if f.activity in changed else f for f in parsed.factors]
        return [ParsedDataset(dataset=spec, factors=factors, skipped=parsed.skipped)]

    importer = dataclasses.replace(desnz.IMPORTER, datasets=(spec,), parse=parse)
    monkeypatch.setitem(factor_service.IMPORTERS, "desnz", importer)
    factor_dataset_import(source="desnz", directory=DATA)
    return FactorDataset.objects.get(source="desnz", version=MODIFIED_VERSION)


def epa_steel() -> EmissionFactor:
    dataset = FactorDatasetFactory.create(**EPA_SUPPLY_CHAIN_2022)
    return EmissionFactorFactory.create(dataset=dataset, **STEEL)


def _activity(
    activity: str, amount: str, unit: str, start: dt.date, *, category: int = 3, **fields: Any
) -> ActivityInput:
    method = fields.pop("method", "activity")
    calculation = CalculationInput(
        category=category, method=method, amount=Decimal(amount), unit=unit, activity=activity, **fields
    )
    end = start.replace(day=28)
    return ActivityInput(calculation, start, end, external_ref=f"{activity}-{amount}-{start.isoformat()}")


def inventory(organization: Organization, electricity_2025: EmissionFactor, *, repeat: int = 1) -> None:
    """Precondition: ``epa_steel()`` and ``desnz_imported()`` ran, and no other DESNZ version.

    Activities in 2025 (and a few in 2024, outside a 2025 scope) over changed, unchanged and EPA factors;
    suppliers ``S1`` and ``S2``. The same inventory for any organization (external refs, amounts, order);
    ``repeat`` times the same lines, their external refs numbered."""
    s1 = SupplierFactory.create(organization=organization, external_id="S1", name="Supplier one")
    s2 = SupplierFactory.create(organization=organization, external_id="S2", name="Supplier two")
    items: list[ActivityInput] = []
    for month in range(1, 13):
        start = dt.date(2025, month, 1)
        items += [
            _activity(ELECTRICITY, f"{1000 + month * 37}", "kWh", start, supplier_id=s1.pk),
            _activity(ELECTRICITY, f"{2 + month}.5", "MWh", start),
            _activity(DIESEL, f"{300 + month}", "L", start, category=4, supplier_id=s2.pk),
            _distance(start, month, s2),
            _activity(TRANSMISSION, f"{5000 + month}", "kWh", start, supplier_id=s1.pk),
            _activity(PLASTICS, f"{month}.25", "t", start, category=1),
            _spend(start, month, s1),
        ]
    # A line pinned to the electricity factor by id: re-selected by its activity key.
    items.append(
        ActivityInput(
            CalculationInput(
                category=3, method="activity", amount=Decimal("777"), unit="kWh", factor_id=electricity_2025.pk
            ),
            dt.date(2025, 6, 1),
            dt.date(2025, 6, 30),
            external_ref="pinned-electricity",
        )
    )
    for month in (3, 9):  # 2024: outside a 2025 scope, on changed factors
        start = dt.date(2024, month, 1)
        items += [_activity(ELECTRICITY, f"{400 + month}", "kWh", start), _distance(start, month, s2)]
    for copy in range(repeat):
        numbered = [dataclasses.replace(item, external_ref=f"{item.external_ref}#{copy}") for item in items]
        activities_create(organization=organization, items=numbered)


def _distance(start: dt.date, month: int, supplier: Supplier) -> ActivityInput:
    calculation = CalculationInput(
        category=4,
        method="distance",
        amount=Decimal(0),
        unit="",
        activity=FREIGHT,
        mass=Decimal(f"{month}.5"),
        mass_unit="t",
        distance=Decimal(120 + month),
        distance_unit="km",
        supplier_id=supplier.pk,
    )
    return ActivityInput(calculation, start, start.replace(day=28), external_ref=f"freight-{start.isoformat()}")


def _spend(start: dt.date, month: int, supplier: Supplier) -> ActivityInput:
    calculation = CalculationInput(
        category=1,
        method="spend",
        amount=Decimal(10_000 + month),
        unit="USD",
        activity=STEEL["activity"],
        currency="USD",
        spend_year=2022,
        supplier_id=supplier.pk,
    )
    return ActivityInput(calculation, start, start.replace(day=28), external_ref=f"steel-{start.isoformat()}")


def emission_rows(organization: Organization) -> dict[int, tuple[Any, ...]]:
    """Every stored emission of ``organization`` as its row's values, by id."""
    return {
        row[0]: row
        for row in Emission.objects.for_org(organization).values_list(
            "id",
            "factor_id",
            "co2e_kg",
            "biogenic_co2_kg",
            "gases",
            "data_quality",
            "fallbacks",
            "warnings",
            "calculated_at",
        )
    }


def sql_sum(organization: Organization, where: str = "", params: tuple[Any, ...] = ()) -> Decimal:
    """SUM(co2e_kg) of the organization's emissions straight from the table (``where``: extra SQL conditions)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT coalesce(sum(co2e_kg), 0) FROM emissions_emission WHERE organization_id = %s {where}",
            [organization.pk, *params],
        )
        return cursor.fetchone()[0]
