"""Activity writes: calculate a batch of activities and store them with their emissions, all or nothing.

A stored activity describes its own period, so what the caller leaves out is taken from it by the
calculator's period rule (``calculator.engine.calculate_in_period``). The record stores the values
used, not the blanks sent, so recalculating a stored row gives the same answer whatever the
default rule becomes; the emission's ``fallbacks`` say which values came from the period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from django.db import connection, transaction
from django.utils import timezone

from calculator.engine import is_spend_factor
from calculator.rules import Method
from calculator.types import CalculationError, CalculationInput
from emissions.cache import emissions_added, emissions_changed
from emissions.calculation import FactorResolver, Result, calculate_in_period
from emissions.metrics import observe_activity_batch
from emissions.models import ActivityRecord, Emission, Organization, Supplier
from emissions.services.bulk import activity_pairs_copy
from perf.admission import cooperate

FieldErrors = dict[str, list[str]]

BULK_BATCH_SIZE = 1000
# How activities_create writes: COPY (PostgreSQL only; the default there, measured faster by bench_db)
# or bulk_create's multi-row INSERTs (the default elsewhere).
WriteMethod = Literal["copy", "bulk_create"]


@dataclass(frozen=True)
class ActivityInput:
    """One activity line to store: what to calculate plus the reporting period it covers.

    ``calculation.year`` / ``spend_year`` may be None: they then default to ``period_start.year``
    (see the module docstring).
    """

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
) -> Result | FieldErrors:
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
        return calculate_in_period(
            item.calculation, period_year=item.period_start.year, organization=organization, resolver=resolver
        )
    except CalculationError as exc:
        return exc.errors


def _calculate_all(
    organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None
) -> tuple[list[Result | FieldErrors], dict[int, Supplier]]:
    # One resolver serves the whole batch so repeated factor, rate and index lookups hit memory.
    resolver = resolver or FactorResolver(organization)
    suppliers = _suppliers(organization, items)
    # Everything the items look up (factors, activities, suppliers, spend years) in one read per kind, not one
    # per distinct selector: from L1 a read costs about as much for a hundred keys as for one.
    resolver.prime(item.calculation for item in items)
    outcomes: list[Result | FieldErrors] = []
    for item in items:
        # A long batch shares the worker's CPU with its other requests (perf.admission.cooperate).
        cooperate()
        outcomes.append(_calculate_one(item, organization=organization, resolver=resolver, suppliers=suppliers))
    return outcomes, suppliers


def activities_calculate(
    *, organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None = None
) -> list[Result | FieldErrors]:
    """Calculate every item without writing anything; each outcome is a result or its field errors."""
    return _calculate_all(organization, items, resolver)[0]


def activity_record_build(
    item: ActivityInput, result: Result, organization: Organization, supplier: Supplier | None
) -> ActivityRecord:
    """The row to store. Precondition: ``result`` is ``item``'s outcome, so ``result.input`` holds the values used."""
    inp = result.input
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
        # Only an amount of money has a currency; storing the default on a kWh line would mislead.
        currency=inp.currency if is_spend_factor(result.factor) else "",
        spend_year=inp.spend_year,
        exchange_rate_set=inp.exchange_rate_set,
        price_index_set=inp.price_index_set,
        mass=inp.mass,
        mass_unit=inp.mass_unit,
        distance=inp.distance,
        distance_unit=inp.distance_unit,
        period_start=item.period_start,
        period_end=item.period_end,
        external_ref=item.external_ref,
    )


def emission_build(record: ActivityRecord, result: Result) -> Emission:
    """The unsaved result row for ``record`` (which may itself be unsaved: its pk is read at insert time)."""
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
        biogenic_co2_kg=result.biogenic_co2_kg,
        gases={gas: str(value) for gas, value in result.gases.items()},
        data_quality=result.data_quality.as_dict(),
        fallbacks=[note.as_dict() for note in result.fallbacks],
        warnings=[note.as_dict() for note in result.warnings],
        conversion=None if result.conversion is None else result.conversion.as_dict(),
    )


def activities_prepare(
    *, organization: Organization, items: Sequence[ActivityInput], resolver: FactorResolver | None = None
) -> list[tuple[ActivityRecord, Emission]]:
    """Calculate all items and build each unsaved activity row with its emission row, in order.

    Raises ``ActivitiesInvalidError`` listing every failing item (by index); nothing is built then.
    Shared by both of ``activities_create``'s write methods (and the benchmark), so they store
    identical rows.
    """
    outcomes, suppliers = _calculate_all(organization, items, resolver)
    errors = [ItemError(i, outcome) for i, outcome in enumerate(outcomes) if isinstance(outcome, dict)]
    if errors:
        raise ActivitiesInvalidError(errors)
    # No error above, so every outcome is a Result.
    return [
        _pair_build(item, cast(Result, outcome), organization, suppliers)
        for item, outcome in zip(items, outcomes, strict=True)
    ]


def _pair_build(
    item: ActivityInput, result: Result, organization: Organization, suppliers: Mapping[int, Supplier]
) -> tuple[ActivityRecord, Emission]:
    """The unsaved activity row of ``item`` and its emission row. Precondition: ``result`` is ``item``'s outcome
    and ``suppliers`` holds its supplier (``_calculate_all`` loads them)."""
    record = activity_record_build(item, result, organization, suppliers.get(item.calculation.supplier_id or 0))
    return record, emission_build(record, result)


def default_write_method() -> WriteMethod:
    """COPY where the database has it (PostgreSQL), bulk_create elsewhere."""
    return "copy" if connection.vendor == "postgresql" else "bulk_create"


@transaction.atomic
def activities_create(
    *,
    organization: Organization,
    items: Sequence[ActivityInput],
    resolver: FactorResolver | None = None,
    method: WriteMethod | None = None,
) -> list[ActivityRecord]:
    """Calculate all items, then store every activity and its emission in one transaction.

    Pass a ``resolver`` to share memoized factor lookups across several calls (bulk loads).
    ``method`` picks the writer (``default_write_method()`` when None); ``"copy"`` needs
    PostgreSQL (``NotSupportedError`` otherwise).

    Raises ``ActivitiesInvalidError`` listing every failing item (by index) before anything is
    written. The returned records carry their pk, ``supplier`` and ``emission`` (with its pk and
    factor) in memory, so serializing them needs no further queries.
    """
    pairs = activities_prepare(organization=organization, items=items, resolver=resolver)
    if (method or default_write_method()) == "copy":
        activity_pairs_copy(pairs)
    else:
        ActivityRecord.objects.bulk_create([record for record, _ in pairs], batch_size=BULK_BATCH_SIZE)
        # bulk_create copies each record's new pk into its emission's activity_id (the emission holds the record).
        Emission.objects.bulk_create([emission for _, emission in pairs], batch_size=BULK_BATCH_SIZE)
    for record, emission in pairs:
        record.emission = emission  # fills the reverse one-to-one cache
    # New rows only: the lists, summaries and exports of the months and years they start in, not every response of
    # the organization.
    emissions_added(organization.pk, (record.period_start for record, _ in pairs))
    observe_activity_batch(len(pairs))  # vcci_activity_batch_size: items stored per call
    return [record for record, _ in pairs]


# -- editing and deleting a stored activity ----------------------------------------------------------------------

# The columns an edit rewrites: every input column of the activity (not its id, organization or creation time) and
# every column of its emission but the rows it belongs to.
_RECORD_FIELDS = tuple(
    field for field in ActivityRecord._meta.concrete_fields if field.name not in ("id", "organization", "created_at")
)
_EMISSION_COLUMNS = tuple(
    field.name for field in Emission._meta.concrete_fields if field.name not in ("id", "organization", "activity")
)


def _sent_body(record: ActivityRecord, emission: Emission | None) -> dict[str, Any]:
    """The create body that stores ``record`` again: the values its caller sent, without those the rules filled in.

    A stored row holds the values used (module docstring), so what was left out is told apart by how it was filled:
    a year or spend year taken from the period has its fallback note (changing the period then moves it along), an
    amount computed as mass x distance goes with its mass and distance, and a spend line's unit left to its
    currency is that currency. Empty values are left out, as a caller would leave them.
    """
    body = {field.name: getattr(record, field.attname) for field in _RECORD_FIELDS}  # ids for factor and supplier
    body["factor_id"] = body.pop("factor")  # the body's name of the pinned factor (the supplier's is supplier)
    noted = {note.get("code") for note in emission.fallbacks} if emission is not None else set()
    if "year_from_period" in noted:
        body["year"] = None
    if "spend_year_from_period" in noted:
        body["spend_year"] = None
    if record.method == Method.DISTANCE and record.mass is not None and record.distance is not None:
        body["amount"] = body["unit"] = None
    if record.method == Method.SPEND and record.unit == record.currency:
        body["unit"] = None
    return {name: value for name, value in body.items() if value is not None and value != ""}


def _validated_change(record: ActivityRecord, emission: Emission | None, changes: object) -> ActivityInput:
    """``changes`` applied to what was sent for ``record``, validated as a create body is; ``CalculationError``
    naming the fields otherwise."""
    # emissions.inputs imports this module (ActivityInput); the create path's validation is loaded when first needed.
    from emissions import inputs

    if not isinstance(changes, Mapping):
        kind = "null" if changes is None else type(changes).__name__
        raise CalculationError(field="non_field_errors", message=f"Send an object of the fields to change; got {kind}.")
    serializer = inputs.ActivityInputSerializer(
        data={**_sent_body(record, emission), **changes}, context={"organization_id": record.organization_id}
    )
    if not serializer.is_valid():
        raise CalculationError(inputs.plain_errors(serializer.errors))
    return inputs.activity_input(dict(serializer.validated_data))


def _locked(organization: Organization, activity_id: int) -> ActivityRecord:
    """The organization's activity ``activity_id`` with its emission, the activity's row locked until the
    transaction ends. ``ActivityRecord.DoesNotExist`` when there is none (another organization's included)."""
    # of=("self",): PostgreSQL cannot lock the nullable side of the outer join to the emission.
    return (
        ActivityRecord.objects.for_org(organization)
        .select_related("emission")
        .select_for_update(of=("self",))
        .get(pk=activity_id)
    )


def _emission_of(record: ActivityRecord) -> Emission | None:
    return getattr(record, "emission", None)  # RelatedObjectDoesNotExist (an AttributeError) when there is none


@transaction.atomic
def activity_update(
    *,
    organization: Organization,
    activity_id: int,
    changes: object,
    resolver: FactorResolver | None = None,
) -> ActivityRecord:
    """Apply ``changes`` (create-body field names, ``emissions.inputs.ActivityInputSerializer``) to a stored
    activity and recalculate its emission, in one transaction. ``changes`` is typically a parsed request body:
    anything but a mapping is a ``CalculationError`` too.

    The activity's row is locked first, so concurrent edits of one activity apply one after the other, each to
    the other's result. The changes are merged into what was sent for the activity (``_sent_body``: a year left
    to the period follows a new period), validated as ``POST /activities/`` validates, and calculated as
    ``activities_create`` calculates; the activity and its emission are then updated in place (same ids, the
    emission's ``calculated_at`` now). Raises ``ActivityRecord.DoesNotExist`` for an id that is not one of the
    organization's activities, and ``CalculationError`` naming the fields when the merged input is invalid or
    cannot be calculated: nothing is written then. The returned record carries its supplier and emission (with
    its factor and dataset) in memory, as ``ActivityRecord.objects.with_related()`` loads them.
    """
    record = _locked(organization, activity_id)
    stored = _emission_of(record)
    item = _validated_change(record, stored, changes)
    outcomes, suppliers = _calculate_all(organization, [item], resolver)
    if isinstance(outcomes[0], dict):
        raise CalculationError(outcomes[0])
    updated, emission = _pair_build(item, outcomes[0], organization, suppliers)
    updated.pk, updated.created_at = record.pk, record.created_at
    updated.save(force_update=True, update_fields=[field.name for field in _RECORD_FIELDS])
    emission.calculated_at = timezone.now()
    if stored is None:  # a row stored without its emission (not through the services): it gets one now
        emission.save(force_insert=True)
    else:
        emission.pk = stored.pk
        emission.save(force_update=True, update_fields=_EMISSION_COLUMNS)
    updated.emission = emission  # fills the reverse one-to-one cache
    # A stored row changed: every emission response of the organization, the details and the lists and summaries
    # of every year (the old period's and the new one's among them), after commit as well as now.
    emissions_changed(organization.pk)
    return updated


@transaction.atomic
def activity_delete(*, organization: Organization, activity_id: int) -> None:
    """Delete one of ``organization``'s activities and its emission, in one transaction.

    Raises ``ActivityRecord.DoesNotExist`` for an id that is not one of the organization's activities (another
    organization's included). The row is locked first, so a delete waits for an edit in progress and the reverse.
    """
    record = _locked(organization, activity_id)
    record.delete()  # with its emission (on_delete=CASCADE)
    # Rows went: every emission response of the organization, the lists and summaries of the period's year included.
    emissions_changed(organization.pk)
