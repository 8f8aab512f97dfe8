"""The recalculation job: recompute an organization's stored emissions against a target factor dataset version.

Params (validated by ``emissions.services.recalculations.recalculation_submit``): ``dataset`` (the target's id),
the scope (``period_from``, ``period_to``, ``categories``, ``suppliers``, ``source``) and ``chunk_rows``.

- **plan**: one indexed query cuts the ids of the emissions to recompute (in scope, with a current factor of the
  target's source) into ranges of ``chunk_rows`` rows; the largest id in scope then bounds the job, so emissions
  stored later are outside it. Emissions whose factor is of another source are left as they are ("not
  applicable"), counted in the restatement.
- **run_chunk**: reads its range's emissions with their activity records and current factors in one query, and
  recomputes each: its stored activity, with the target's source and version as the selector (a pinned
  ``factor_id`` is re-selected by its factor's activity key), through ``activities_prepare`` with one primed
  ``FactorResolver``, so fallbacks are recorded as for a new calculation. An activity that cannot be calculated
  against the target is an error of its row; the job then fails at its finish and nothing is applied. Emissions
  whose result or factor values changed are staged as ``RestatementLine`` rows (COPY), under the job's id.
  Nothing a reader sees changes.
- **finish**: under a per-organization lock, sums the scope before the update (total, per category, per
  supplier: one query), applies every line with one ``UPDATE ... FROM`` (refusing the job, naming them, if any of
  those emissions changed since its chunk read it: its ``calculated_at``, which every edit sets, or its figures),
  writes the ``Restatement`` (after = before + the lines' changes, which equals a sum of the updated rows) and
  invalidates the organization's emission caches, effective at commit.

  "In scope" (the restatement's totals and ``emissions_in_scope``) means the emissions in the job's scope present
  at the finish with an id up to the largest the plan saw. Imports reserve ids before they publish rows, so rows
  with such ids may appear after the plan (and after the chunk that covered their id); they are in the totals,
  unchanged. ``emissions_recalculated`` is what the chunks recomputed (the job's ``rows_done``), not a recount.
- **discard**: deletes the staged lines (the restatement only exists once the finish commits).

An emission recomputed to the same result with a factor of the same values (the same factor copied into the
target version) keeps its stored row and factor: only real changes are lines, and so named by the restatement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.models import F, Max
from django.utils import timezone
from psycopg import sql

from calculator.types import CalculationInput, round_half_even
from emissions.cache import emissions_changed
from emissions.calculation import FactorResolver
from emissions.jobs.kinds import ChunkOutcome, JobFailed, Plan
from emissions.models import (
    Emission,
    EmissionFactor,
    EmissionQuerySet,
    FactorDataset,
    Job,
    JobChunk,
    Organization,
    Restatement,
    RestatementLine,
)
from emissions.services.activities import ActivitiesInvalidError, ActivityInput, activities_prepare
from emissions.services.bulk import rows_copy

# Notes that say the period supplied a value the caller left out: such a value is left out again when the stored
# activity is recomputed, so the note (and the rule) is the same as in a new calculation.
YEAR_FROM_PERIOD = "year_from_period"
SPEND_YEAR_FROM_PERIOD = "spend_year_from_period"
# The key of emissions without a supplier in ``per_supplier``.
NO_SUPPLIER = "none"
PCT_PLACES = 4
# pg_advisory_xact_lock's first key: recalculation finishes of one organization (the second key) run one at a time.
FINISH_LOCK_CLASS = 0x5EC1C


def scope_queryset(job: Job) -> EmissionQuerySet:
    """The job organization's emissions in the job's scope (params as ``recalculation_submit`` stores them)."""
    params = job.params
    return Emission.objects.for_org(job.organization_id).in_scope(
        period_from=_date(params.get("period_from")),
        period_to=_date(params.get("period_to")),
        categories=params.get("categories") or (),
        supplier_ids=params.get("suppliers") or (),
        source=params.get("source") or "",
    )


def recalculated_queryset(job: Job, target: FactorDataset) -> EmissionQuerySet:
    """The emissions of the scope the job recomputes: those whose current factor is of the target's source."""
    return scope_queryset(job).filter(factor__dataset__source=target.source)


def _date(value: str | None) -> dt.date | None:
    return None if value is None else dt.date.fromisoformat(value)


# Columns a chunk reads: the emission as stored, its activity record (the inputs), its current factor (values).
CHUNK_COLUMNS = {
    "id": "id",
    "activity_id": "activity_id",
    "category": "category",
    "method": "method",
    "period_start": "period_start",
    "period_end": "period_end",
    "supplier_id": "supplier_id",
    "factor_id": "factor_id",
    "co2e_kg": "co2e_kg",
    "biogenic_co2_kg": "biogenic_co2_kg",
    "gases": "gases",
    "data_quality": "data_quality",
    "fallbacks": "fallbacks",
    "warnings": "warnings",
    "conversion": "conversion",
    "calculated_at": "calculated_at",
    "factor_activity": "factor__activity",
    "factor_region": "factor__region",
    "factor_year": "factor__year",
    "factor_unit": "factor__unit",
    "factor_currency": "factor__currency",
    "factor_co2e_per_unit": "factor__co2e_per_unit",
    "factor_biogenic_co2_per_unit": "factor__biogenic_co2_per_unit",
    "factor_gases": "factor__gases",
    "pinned_factor_id": "activity__factor_id",
    "selector_activity": "activity__activity",
    "region": "activity__region",
    "year": "activity__year",
    "amount": "activity__amount",
    "unit": "activity__unit",
    "currency": "activity__currency",
    "spend_year": "activity__spend_year",
    "exchange_rate_set": "activity__exchange_rate_set",
    "price_index_set": "activity__price_index_set",
    "mass": "activity__mass",
    "mass_unit": "activity__mass_unit",
    "distance": "activity__distance",
    "distance_unit": "activity__distance_unit",
    "external_ref": "activity__external_ref",
}


class FactorValues(NamedTuple):
    """What a factor contributes to a result; two factors with equal values give equal results."""

    activity: str
    region: str
    year: int
    unit: str
    currency: str
    co2e_per_unit: Decimal
    biogenic_co2_per_unit: Decimal | None
    gases: Mapping[str, Any]


def factor_values(factor: EmissionFactor) -> FactorValues:
    return FactorValues(
        factor.activity,
        factor.region,
        factor.year,
        factor.unit,
        factor.currency,
        factor.co2e_per_unit,
        factor.biogenic_co2_per_unit,
        factor.gases,
    )


def _stored_factor_values(row: Mapping[str, Any]) -> FactorValues:
    return FactorValues(
        row["factor_activity"],
        row["factor_region"],
        row["factor_year"],
        row["factor_unit"],
        row["factor_currency"],
        row["factor_co2e_per_unit"],
        row["factor_biogenic_co2_per_unit"],
        row["factor_gases"],
    )


def recalculation_input(row: Mapping[str, Any], target: FactorDataset) -> ActivityInput:
    """The stored activity of ``row`` (a ``CHUNK_COLUMNS`` row) as it would be submitted now, selecting in ``target``.

    A pinned factor is replaced by its activity key; values the period supplied (per the stored fallbacks) are
    left out again, so the calculator supplies them, and notes them, as it did.
    """
    codes = {note.get("code") for note in row["fallbacks"] if isinstance(note, dict)}
    pinned = row["pinned_factor_id"] is not None
    calculation = CalculationInput(
        category=row["category"],
        method=row["method"],
        amount=row["amount"],
        unit=row["unit"],
        activity=row["factor_activity"] if pinned else row["selector_activity"],
        region=row["region"],
        year=None if YEAR_FROM_PERIOD in codes else row["year"],
        source=target.source,
        dataset_version=target.version,
        # A stored non-money line has no currency; the calculator ignores it there.
        currency=row["currency"] or "USD",
        spend_year=None if SPEND_YEAR_FROM_PERIOD in codes else row["spend_year"],
        exchange_rate_set=row["exchange_rate_set"],
        price_index_set=row["price_index_set"],
        mass=row["mass"],
        mass_unit=row["mass_unit"],
        distance=row["distance"],
        distance_unit=row["distance_unit"],
        supplier_id=row["supplier_id"],
    )
    return ActivityInput(calculation, row["period_start"], row["period_end"], row["external_ref"])


def _changed(row: Mapping[str, Any], emission: Emission) -> bool:
    """Whether ``emission`` (recomputed) differs from the stored ``row``: any stored figure, or the factor's values."""
    factor = emission.factor
    if factor.pk != row["factor_id"] and factor_values(factor) != _stored_factor_values(row):
        return True
    return (
        emission.co2e_kg != row["co2e_kg"]
        or emission.biogenic_co2_kg != row["biogenic_co2_kg"]
        or emission.gases != row["gases"]
        or emission.data_quality != row["data_quality"]
        or emission.fallbacks != row["fallbacks"]
        or emission.warnings != row["warnings"]
        or emission.conversion != row["conversion"]
    )


def _line(job: Job, row: Mapping[str, Any], emission: Emission) -> dict[str, Any]:
    """The ``RestatementLine`` of a changed emission, as the column values ``rows_copy`` writes."""
    return {
        "restatement_id": job.pk,
        "emission_id": row["id"],
        "activity_id": row["activity_id"],
        "category": row["category"],
        "supplier_id": row["supplier_id"],
        "before_factor_id": row["factor_id"],
        "before_co2e_kg": row["co2e_kg"],
        "before_biogenic_co2_kg": row["biogenic_co2_kg"],
        "before_calculated_at": row["calculated_at"],
        "after_factor_id": emission.factor.pk,
        "after_co2e_kg": emission.co2e_kg,
        "after_biogenic_co2_kg": emission.biogenic_co2_kg,
        "after_gases": emission.gases,
        "after_data_quality": emission.data_quality,
        "after_fallbacks": emission.fallbacks,
        "after_warnings": emission.warnings,
        "after_conversion": emission.conversion,
    }


def _row_errors(rows: Sequence[Mapping[str, Any]], exc: ActivitiesInvalidError) -> list[dict[str, Any]]:
    return [
        {"emission": rows[error.index]["id"], "activity": rows[error.index]["activity_id"], "field": field}
        | {"messages": messages}
        for error in exc.errors
        for field, messages in error.errors.items()
    ]


def change_pct(before: Decimal, after: Decimal) -> Decimal | None:
    """``(after - before) / before x 100``, rounded once half-even to ``PCT_PLACES``; None when ``before`` is 0."""
    if before == 0:
        return None if after != 0 else Decimal(0)
    return round_half_even((Fraction(after) - Fraction(before)) * 100 / Fraction(before), PCT_PLACES)


def is_significant(before: Decimal, after: Decimal, threshold_pct: Decimal) -> bool:
    """Whether the change reaches ``threshold_pct`` percent of ``before``, exactly (not from the rounded percentage);
    any change from a zero total is."""
    if before == 0:
        return after != 0
    return abs(after - before) * 100 >= threshold_pct * abs(before)


def _totals(before: Decimal, delta: Decimal) -> dict[str, str | None]:
    after = before + delta
    pct = change_pct(before, after)
    return {"before": str(before), "after": str(after), "change_pct": None if pct is None else str(pct)}


class RecalculationKind:
    def plan(self, job: Job) -> Plan:
        """Id ranges of ``chunk_rows`` emissions to recompute each, cut by one query over their ids."""
        size = int(job.params.get("chunk_rows") or settings.JOB_CHUNK_ROWS)
        target = FactorDataset.objects.get(pk=job.params["dataset"])
        ids, params = recalculated_queryset(job, target).values("id").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id, total, last_id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n, "
                f"count(*) OVER () AS total, max(id) OVER () AS last_id FROM ({ids}) AS scope) AS numbered "
                "WHERE (n - 1) %% %s = 0 ORDER BY id",
                [*params, size],
            )
            marks = cursor.fetchall()
        if not marks:
            return Plan([], rows_total=0)
        starts = [mark[0] for mark in marks]
        ends = [start - 1 for start in starts[1:]] + [marks[0][2]]
        chunks: list[dict[str, Any]] = [{"from_id": a, "to_id": b} for a, b in zip(starts, ends, strict=True)]
        # The scope's bound for the finish's totals (emissions of other sources included): the largest id now.
        chunks[-1]["scope_last_id"] = scope_queryset(job).aggregate(last=Max("id"))["last"]
        return Plan(chunks, rows_total=marks[0][1])

    def run_chunk(self, job: Job, chunk: JobChunk) -> ChunkOutcome:
        organization = Organization.objects.get(pk=job.organization_id)
        target = FactorDataset.objects.get(pk=job.params["dataset"])
        rows = list(
            recalculated_queryset(job, target)
            .filter(id__gte=chunk.payload["from_id"], id__lte=chunk.payload["to_id"])
            .order_by("id")
            .values(
                *(name for name, path in CHUNK_COLUMNS.items() if name == path),
                **{name: F(path) for name, path in CHUNK_COLUMNS.items() if name != path},
            )
        )
        if not rows:
            return ChunkOutcome(rows=0)
        items = [recalculation_input(row, target) for row in rows]
        try:
            # One resolver for the chunk, primed with every selector, rate and supplier its items name.
            pairs = activities_prepare(organization=organization, items=items, resolver=FactorResolver(organization))
        except ActivitiesInvalidError as exc:
            errors = _row_errors(rows, exc)
            return ChunkOutcome(rows=len(rows), errors=errors[: Job.MAX_ERRORS], error_count=len(errors))
        lines = (
            _line(job, row, emission) for row, (_, emission) in zip(rows, pairs, strict=True) if _changed(row, emission)
        )
        rows_copy(RestatementLine, lines)
        return ChunkOutcome(rows=len(rows))

    def finish(self, job: Job) -> dict[str, Any]:
        if job.error_count:
            raise JobFailed(
                f"{job.error_count} emission(s) cannot be recalculated against the target dataset; nothing was "
                "changed (the job's errors name them)."
            )
        organization = Organization.objects.get(pk=job.organization_id)
        target = FactorDataset.objects.get(pk=job.params["dataset"])
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [FINISH_LOCK_CLASS, organization.pk])
        before = self._scope_totals(job, target)
        deltas = self._line_deltas(job)
        changed = deltas.get(("total", None), (Decimal(0), 0))[1]
        stamp = timezone.now()
        applied = self._apply(job, stamp)
        if applied != changed:
            raise JobFailed(
                f"{changed - applied} of the {changed} emission(s) to restate changed while the job ran (another "
                "recalculation or an edit); nothing was changed: run the recalculation again.",
                self._not_applied(job, stamp),
            )
        threshold = organization.restatement_threshold_pct
        if threshold is None:
            threshold = settings.RESTATEMENT_THRESHOLD_PCT
        total_before, count, applicable = before.get(("total", None), (Decimal(0), 0, 0))
        total_after = total_before + deltas.get(("total", None), (Decimal(0), 0))[0]
        pct = change_pct(total_before, total_after)
        restatement = Restatement.objects.create(
            job=job,
            organization=organization,
            target_dataset=target,
            scope={key: job.params.get(key) for key in ("period_from", "period_to", "categories", "suppliers")}
            | {"source": job.params.get("source")},
            total_before_kg=total_before,
            total_after_kg=total_after,
            change_pct=pct,
            threshold_pct=threshold,
            significant=is_significant(total_before, total_after, threshold),
            per_category=self._per_group(before, deltas, "category"),
            per_supplier=self._per_group(before, deltas, "supplier"),
            emissions_in_scope=count,
            emissions_recalculated=job.rows_done,
            emissions_not_applicable=count - applicable,
            emissions_changed=changed,
        )
        # Even when no figure changed: the inventory names the restatements of its period (effective at commit too,
        # perf.cache.invalidate).
        emissions_changed(organization.pk)
        return {
            "restatement": restatement.pk,
            "total_before_kg": str(total_before),
            "total_after_kg": str(total_after),
            "change_pct": None if pct is None else str(pct),
            "significant": restatement.significant,
            "emissions_in_scope": count,
            "emissions_recalculated": job.rows_done,
            "emissions_changed": changed,
        }

    def discard(self, job: Job) -> None:
        RestatementLine.objects.filter(restatement_id=job.pk).delete()
        Restatement.objects.filter(pk=job.pk).delete()

    # -- finish's queries ------------------------------------------------------------------------

    @staticmethod
    def _last_id(job: Job) -> int | None:
        """The largest emission id in scope when the job was planned (None: nothing to recompute, no bound)."""
        payload = job.chunks.order_by("-index").values_list("payload", flat=True).first()
        return None if payload is None else int(payload["scope_last_id"])

    def _scope_totals(self, job: Job, target: FactorDataset) -> dict[tuple[str, Any], tuple[Decimal, int, int]]:
        """``{(group, key): (kg CO2e, emissions, emissions of the target's source)}`` over the planned scope, for the
        whole scope (``("total", None)``), per category and per supplier: one scan, grouping sets."""
        last_id = self._last_id(job)
        scope = scope_queryset(job) if last_id is None else scope_queryset(job).filter(id__lte=last_id)
        rows = scope.values("category", "supplier_id", "co2e_kg", source=F("factor__dataset__source"))
        inner, params = rows.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT GROUPING(category), GROUPING(supplier_id), category, supplier_id, "
                "coalesce(sum(co2e_kg), 0), count(*), count(*) FILTER (WHERE source = %s) "
                f"FROM ({inner}) AS scope GROUP BY GROUPING SETS ((), (category), (supplier_id))",  # the ORM's SQL
                [target.source, *params],
            )
            return {_group_key(*row[:4]): (row[4], row[5], row[6]) for row in cursor.fetchall()}

    @staticmethod
    def _line_deltas(job: Job) -> dict[tuple[str, Any], tuple[Decimal, int]]:
        """``{(group, key): (kg CO2e after - before, lines)}`` of the job's lines, grouped as ``_scope_totals``."""
        with connection.cursor() as cursor:
            cursor.execute(
                _tables_sql(
                    "SELECT GROUPING(category), GROUPING(supplier_id), category, supplier_id, "
                    "coalesce(sum(after_co2e_kg - before_co2e_kg), 0), count(*) "
                    "FROM {lines} WHERE restatement_id = %s GROUP BY GROUPING SETS ((), (category), (supplier_id))"
                ),
                [job.pk],
            )
            return {_group_key(*row[:4]): (row[4], row[5]) for row in cursor.fetchall()}

    @staticmethod
    def _apply(job: Job, stamp: dt.datetime) -> int:
        """Every line onto its emission, in one statement, ``stamp`` as their ``calculated_at``; returns the
        emissions updated. An emission no longer as its line's chunk read it is left alone (so counted as not
        updated): another ``calculated_at`` (an edit of any of its inputs, supplier or period included, sets it),
        factor or figures."""
        with connection.cursor() as cursor:
            cursor.execute(
                _tables_sql(
                    "UPDATE {emissions} AS e SET factor_id = l.after_factor_id, co2e_kg = l.after_co2e_kg, "
                    "biogenic_co2_kg = l.after_biogenic_co2_kg, gases = l.after_gases, "
                    "data_quality = l.after_data_quality, fallbacks = l.after_fallbacks, "
                    "warnings = l.after_warnings, conversion = l.after_conversion, calculated_at = %s "
                    "FROM {lines} AS l "
                    "WHERE l.restatement_id = %s AND e.id = l.emission_id AND e.organization_id = %s "
                    "AND e.calculated_at = l.before_calculated_at "
                    "AND e.factor_id = l.before_factor_id AND e.co2e_kg = l.before_co2e_kg "
                    "AND e.biogenic_co2_kg IS NOT DISTINCT FROM l.before_biogenic_co2_kg"
                ),
                [stamp, job.pk, job.organization_id],
            )
            return int(cursor.rowcount)

    @staticmethod
    def _not_applied(job: Job, stamp: dt.datetime) -> list[dict[str, Any]]:
        """The first ``Job.MAX_ERRORS`` lines ``_apply`` (with ``stamp``) left alone, as errors naming their
        emission. Precondition: right after ``_apply``, in its transaction: every line applied has ``stamp`` (the
        rows it updated stay locked until the transaction ends), one left alone has not, or is gone."""
        with connection.cursor() as cursor:
            cursor.execute(
                _tables_sql(
                    "SELECT l.emission_id, l.activity_id FROM {lines} AS l LEFT JOIN {emissions} AS e "
                    "ON e.id = l.emission_id AND e.organization_id = %s "
                    "WHERE l.restatement_id = %s AND (e.id IS NULL OR e.calculated_at <> %s) "
                    "ORDER BY l.emission_id LIMIT %s"
                ),
                [job.organization_id, job.pk, stamp, Job.MAX_ERRORS],
            )
            rows = cursor.fetchall()
        return [
            {
                "emission": emission_id,
                "activity": activity_id,
                "messages": ["Changed (or deleted) after the job read it; not recalculated."],
            }
            for emission_id, activity_id in rows
        ]

    @staticmethod
    def _per_group(
        before: Mapping[tuple[str, Any], tuple[Decimal, int, int]],
        deltas: Mapping[tuple[str, Any], tuple[Decimal, int]],
        group: str,
    ) -> dict[str, dict[str, str | None]]:
        keys = sorted((key for kind, key in before if kind == group), key=lambda k: (k is None, k or 0))
        return {
            NO_SUPPLIER if key is None else str(key): _totals(
                before[(group, key)][0], deltas.get((group, key), (Decimal(0), 0))[0]
            )
            for key in keys
        }


def _tables_sql(template: str) -> sql.Composed:
    """``template`` with {emissions} and {lines} as the emissions' and restatement lines' tables, quoted."""
    return sql.SQL(template).format(
        emissions=sql.Identifier(Emission._meta.db_table), lines=sql.Identifier(RestatementLine._meta.db_table)
    )


def _group_key(category_grouped: int, supplier_grouped: int, category: Any, supplier: Any) -> tuple[str, Any]:
    if category_grouped and supplier_grouped:
        return ("total", None)
    return ("supplier", supplier) if category_grouped else ("category", category)


KIND = RecalculationKind()
