"""Activity writes: calculate a batch of activities and store them with their emissions, all or nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from django.db import transaction

from calculator.engine import calculate
from calculator.resolve import FactorResolver
from calculator.types import CalculationError, CalculationInput, CalculationResult
from emissions.models import ActivityRecord, Emission, Organization, Supplier

FieldErrors = dict[str, list[str]]

BULK_BATCH_SIZE = 1000


@dataclass(frozen=True)
class ActivityInput:
    """One activity line to store: what to calculate plus the reporting period it covers."""

    calculation: CalculationInput
    period_start: dt.date
    period_end: dt.date
    external_ref: str = ""


@dataclass(frozen=True)
class ItemError:
    """The errors of the item at ``index`` of the submitted list."""

    index: int
    errors: FieldErrors

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "errors": self.errors}


class ActivitiesInvalidError(Exception):
    """At least one item could not be validated or calculated; nothing was written."""

    def __init__(self, errors: list[ItemError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} invalid item(s): indexes {[e.index for e in errors][:20]}")


def _suppliers(organization: Organization, items: Sequence[ActivityInput]) -> dict[int, Supplier]:
    ids = {item.calculation.supplier_id for item in items if item.calculation.supplier_id is not None}
    if not ids:
        return {}
    return Supplier.objects.for_org(organization).in_bulk(ids)


def _calculate_one(
    item: ActivityInput, *, organization: Organization, resolver: FactorResolver, suppliers: dict[int, Supplier]
) -> CalculationResult | FieldErrors:
    errors: FieldErrors = {}
    if item.period_end < item.period_start:
        errors["period_end"] = ["period_end must be on or after period_start."]
    supplier_id = item.calculation.supplier_id
    if supplier_id is not None and supplier_id not in suppliers:
        # Same message for "does not exist" and "belongs to another organization": no leak.
        errors["supplier"] = [f"Unknown supplier id {supplier_id}."]
    if errors:
        return errors
    try:
        result = calculate(item.calculation, organization=organization, resolver=resolver)
    except CalculationError as exc:
        return exc.errors
    return result


def _calculate_all(
    organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None
) -> tuple[list[CalculationResult | FieldErrors], dict[int, Supplier]]:
    # One resolver serves the whole batch so repeated factor, rate and index lookups hit memory.
    resolver = resolver or FactorResolver(organization)
    suppliers = _suppliers(organization, items)
    outcomes = [
        _calculate_one(item, organization=organization, resolver=resolver, suppliers=suppliers) for item in items
    ]
    return outcomes, suppliers


def activities_calculate(
    *, organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None = None
) -> list[CalculationResult | FieldErrors]:
    """Calculate every item without writing anything; each outcome is a result or its field errors."""
    return _calculate_all(organization, items, resolver)[0]


def _record(item: ActivityInput, organization: Organization, supplier: Supplier | None) -> ActivityRecord:
    inp = item.calculation
    return ActivityRecord(
        organization=organization,
        supplier=supplier,
        category=inp.category,
        method=inp.method,
        factor_id=inp.factor_id,
        activity=inp.activity,
        region=inp.region,
        year=inp.year,
        source=inp.source,
        dataset_version=inp.dataset_version,
        amount=inp.amount,
        unit=inp.unit,
        # Only spend is denominated in a currency; storing the default on a kWh line would mislead.
        currency=inp.currency if inp.method == "spend" else "",
        spend_year=inp.spend_year,
        mass=inp.mass,
        mass_unit=inp.mass_unit,
        distance=inp.distance,
        distance_unit=inp.distance_unit,
        period_start=item.period_start,
        period_end=item.period_end,
        external_ref=item.external_ref,
    )


def _emission(record: ActivityRecord, result: CalculationResult) -> Emission:
    return Emission(
        organization=record.organization,
        activity=record,
        supplier=record.supplier,
        category=record.category,
        method=record.method,
        period_start=record.period_start,
        period_end=record.period_end,
        factor=result.factor,
        # The calculator already rounds to the column's 6 decimal places (and rejects values it cannot hold).
        co2e_kg=result.co2e_kg,
        gases={gas: str(value) for gas, value in result.gases.items()},
        data_quality=result.data_quality.as_dict(),
        fallbacks=[note.as_dict() for note in result.fallbacks],
        warnings=[note.as_dict() for note in result.warnings],
    )


@transaction.atomic
def activities_create(
    *, organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None = None
) -> list[ActivityRecord]:
    """Calculate all items, then store every activity and its emission in one transaction.

    Pass a ``resolver`` to share memoized factor lookups across several calls (bulk loads).

    Raises ``ActivitiesInvalidError`` listing every failing item (by index) before anything is
    written. The returned records carry ``supplier`` and ``emission`` (with its factor) in memory,
    so serializing them needs no further queries.
    """
    outcomes, suppliers = _calculate_all(organization, items, resolver)
    errors = [ItemError(i, outcome) for i, outcome in enumerate(outcomes) if isinstance(outcome, dict)]
    if errors:
        raise ActivitiesInvalidError(errors)

    records = [_record(item, organization, suppliers.get(item.calculation.supplier_id or 0)) for item in items]
    ActivityRecord.objects.bulk_create(records, batch_size=BULK_BATCH_SIZE)
    # No error above, so every outcome is a CalculationResult.
    emissions = [
        _emission(record, cast(CalculationResult, outcome)) for record, outcome in zip(records, outcomes, strict=True)
    ]
    Emission.objects.bulk_create(emissions, batch_size=BULK_BATCH_SIZE)
    for record, emission in zip(records, emissions, strict=True):
        record.emission = emission  # fills the reverse one-to-one cache
    return records
