"""Which factor, rate and price index a calculation uses: the selection rules, over a ``FactorSource``.

The calculator never reads a database or a cache. It asks a ``FactorSource`` (the ``emissions``
app's adapter, or an in-memory one) for candidates, and applies these rules to them. A
``Resolver`` memoizes its outcomes, failures included, so a batch that names the same selector
10,000 times selects once; create one per request or per batch (it is not thread-safe).

Selection rules (average data, i.e. anything that is not a supplier's own factor):

1. Candidates: ``source.candidates(activity)``: the factors visible to the caller for that
   ``activity``, excluding suppliers' own. ``source`` and ``dataset_version`` are hard filters
   (pinned, never relaxed); an empty result is an error on that field. A gas factor (IPCC GWP
   table) without a ``dataset_version`` is pinned to ``rules.DATASET_GWP_SET`` (AR5, the factor
   datasets' set) when that set has one, with ``Note("gwp_set_default")`` when it set another aside.
2. Region: exact match; else ``GLOBAL``; else any other region (the newest factor's
   region, ties broken by region code). Each fallback adds ``Note("region_fallback")``.
   With no region requested and several regions on offer, ``GLOBAL`` is preferred, else
   the newest factor's region, and ``Note("region_unspecified")`` is added.
3. Year (only when requested): exact; else the nearest earlier year
   (``year_fallback_earlier``); else the nearest later year (``year_fallback_later``).
4. Among what is left, the newest dataset wins: highest ``basis_year``, then latest
   ``imported_at``, then highest id.

Supplier-specific selection prefers a factor whose ``supplier`` is the requested supplier
(activity-matched when an activity is given, newest first) and falls back to rules 1-4
with ``Note("supplier_factor_missing")``.

Exchange rates and price indexes come from named reference sets (``rules.DEFAULT_EXCHANGE_RATE_SET`` and
``rules.DEFAULT_PRICE_INDEX_SET`` unless the input names others). A rate is a stored rate, its inverse, or a
cross rate through USD, never an assumed 1:1; it is returned as an exact fraction, with the rows it came
from, so that the calculation rounds only once and an auditor can redo it. A year after a set's newest
year uses that newest year (the engine records the fallback); any other missing row is an error.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Generic, Protocol, TypeVar

from calculator.rules import (
    DATASET_GWP_SET,
    DEFAULT_CURRENCY,
    DEFAULT_EXCHANGE_RATE_SET,
    DEFAULT_PRICE_INDEX_SET,
    GLOBAL,
    GWP_SOURCE,
    SOURCES,
    Method,
)
from calculator.types import (
    CalculationError,
    CalculationInput,
    ExchangeRateUse,
    F,
    FactorLike,
    Note,
    ReferenceRow,
    ReferenceValue,
)

MISSING_DEFAULT_SETS = (
    "manage.py import_factors loads the shipped sets (ECB rates, US CPI-U) from the factor data folder's reference/."
)

# What a source returns (covariant: a source of EmissionFactor rows is a source of FactorLike values).
F_co = TypeVar("F_co", bound=FactorLike, covariant=True)


class FactorSource(Protocol[F_co]):
    """Where a ``Resolver`` finds factors and reference tables (one organization's view of them).

    Implementations decide how to load and cache; the rules above decide what to use.
    """

    def factor(self, factor_id: int) -> F_co | None:
        """The factor with this id if the caller may use it, else None."""
        ...

    def candidates(self, activity: str) -> Sequence[F_co]:
        """The average-data factors for ``activity`` (none of them a supplier's own)."""
        ...

    def supplier_factors(self, supplier_id: int) -> Sequence[F_co] | None:
        """The supplier's own factors ([] when it has none); None when it is not the caller's supplier."""
        ...

    def supplier_exists(self, supplier_id: int) -> bool:
        """True when ``supplier_id`` is one of the caller's suppliers."""
        ...

    def exchange_rates(self, set_name: str) -> Mapping[int, Mapping[tuple[str, str], ReferenceValue]] | None:
        """The exchange-rate set ``set_name`` as ``{year: {(currency, quote): row}}`` (1 currency = row.value quote);
        None when there is no such set."""
        ...

    def price_indexes(self, set_name: str) -> Mapping[str, Mapping[int, ReferenceValue]] | None:
        """The price-index set ``set_name`` as ``{currency: {year: row}}``; None when there is no such set."""
        ...


def newest_key(factor: FactorLike) -> tuple:
    """Sort key: the newest dataset last (basis year, import time, dataset id, then factor id)."""
    dataset = factor.dataset
    return (dataset.basis_year, dataset.imported_at, dataset.pk, factor.year, factor.pk)


_Outcome = tuple[F, tuple[Note, ...]] | CalculationError


class Resolver(Generic[F]):
    """Applies the selection rules to what ``source`` offers; memoizes every outcome.

    Not thread-safe: create one per request or per batch.
    """

    def __init__(self, source: FactorSource[F]) -> None:
        self.source = source
        self._outcomes: dict[tuple, _Outcome[F]] = {}

    # -- factors -----------------------------------------------------------------------

    def resolve(self, inp: CalculationInput) -> tuple[F, list[Note]]:
        """The factor for ``inp`` and the fallback notes taken to find it.

        Raises ``CalculationError`` naming the selector field that could not be satisfied.
        """
        key = self._selector_key(inp)
        outcome = self._outcomes.get(key)
        if outcome is None:
            try:
                found, found_notes = self._resolve_uncached(inp)
                outcome = (found, tuple(found_notes))
            except CalculationError as exc:
                outcome = exc
            self._outcomes[key] = outcome
        if isinstance(outcome, CalculationError):
            # A fresh exception each time: re-raising one instance would keep growing its traceback.
            raise CalculationError(copy.deepcopy(outcome.errors))
        factor, notes = outcome
        return factor, list(notes)

    def check_supplier(self, supplier_id: int) -> None:
        """Raise ``CalculationError`` on ``supplier`` unless the supplier is the caller's."""
        if not self.source.supplier_exists(supplier_id):
            raise CalculationError(field="supplier", message=f"Unknown supplier {supplier_id}.")

    @staticmethod
    def _selector_key(inp: CalculationInput) -> tuple:
        selector = (
            inp.activity.strip(),
            inp.region.strip().upper(),
            inp.year,
            inp.source.strip(),
            inp.dataset_version.strip(),
        )
        if inp.factor_id is not None:
            return ("id", inp.factor_id)
        if inp.method == Method.SUPPLIER_SPECIFIC:
            return ("supplier", inp.supplier_id, *selector)
        return ("average", *selector)

    def _resolve_uncached(self, inp: CalculationInput) -> tuple[F, list[Note]]:
        if inp.factor_id is not None:
            factor = self.source.factor(inp.factor_id)
            if factor is None:
                raise CalculationError(field="factor_id", message=f"Unknown factor {inp.factor_id}.")
            return factor, []
        if inp.method == Method.SUPPLIER_SPECIFIC:
            return self._select_supplier_specific(inp)
        return self._select_average(inp)

    @staticmethod
    def _pin(candidates: Sequence[F], inp: CalculationInput, *, what: str) -> list[F]:
        """Apply the hard filters ``source`` and ``dataset_version``; raise on the field that empties the list."""
        source, version = inp.source.strip(), inp.dataset_version.strip()
        pinned = list(candidates)
        if source:
            if source not in SOURCES:
                raise CalculationError(
                    field="source", message=f"Unknown source '{source}'; expected one of {', '.join(SOURCES)}."
                )
            pinned = [f for f in pinned if f.dataset.source == source]
            if not pinned:
                raise CalculationError(field="source", message=f"No factor for {what} in source '{source}'.")
        if version:
            pinned = [f for f in pinned if f.dataset.version == version]
            if not pinned:
                detail = f" of source '{source}'" if source else ""
                raise CalculationError(
                    field="dataset_version", message=f"No factor for {what} in dataset version '{version}'{detail}."
                )
        return pinned

    def _select_average(self, inp: CalculationInput) -> tuple[F, list[Note]]:
        activity = inp.activity.strip()
        if not activity:
            raise CalculationError(field="activity", message="Give an activity or a factor_id.")
        candidates = self.source.candidates(activity)
        if not candidates:
            raise CalculationError(field="activity", message=f"Unknown activity '{activity}'.")
        pinned = self._pin(candidates, inp, what=f"activity '{activity}'")
        notes: list[Note] = []
        if not inp.dataset_version.strip():
            pinned = narrow_gwp_set(pinned, activity, notes)
        pinned = narrow_region(pinned, inp.region.strip().upper(), activity, notes)
        if inp.year is not None:
            pinned = narrow_year(pinned, inp.year, notes)
        return max(pinned, key=newest_key), notes

    def _select_supplier_specific(self, inp: CalculationInput) -> tuple[F, list[Note]]:
        if inp.supplier_id is None:
            raise CalculationError(field="supplier", message="The supplier-specific method needs a supplier.")
        found = self.source.supplier_factors(inp.supplier_id)
        if found is None:
            raise CalculationError(field="supplier", message=f"Unknown supplier {inp.supplier_id}.")
        own = list(found)
        activity = inp.activity.strip()
        if activity:
            own = [f for f in own if f.activity == activity]
        if inp.source.strip() or inp.dataset_version.strip():
            # Pins are hard filters for the supplier's factors too; a miss falls back, with the pins, below.
            try:
                own = self._pin(own, inp, what="the supplier")
            except CalculationError:
                own = []
        if own:
            notes: list[Note] = []
            if not activity and len({f.activity for f in own}) > 1:
                notes.append(
                    Note(
                        "supplier_activity_unspecified",
                        f"No activity given and supplier {inp.supplier_id} has several factors; used the newest",
                    )
                )
            return max(own, key=newest_key), notes
        if not activity:
            raise CalculationError(
                field="activity",
                message=f"Supplier {inp.supplier_id} has no supplier-specific factor; "
                "give an activity for the average-data fallback.",
            )
        factor, notes = self._select_average(inp)
        missing = Note(
            "supplier_factor_missing",
            f"Supplier {inp.supplier_id} has no factor for '{activity}'; used average data",
        )
        return factor, [missing, *notes]

    # -- reference tables ------------------------------------------------------------------

    @staticmethod
    def _rate_in(
        rates: Mapping[tuple[str, str], ReferenceValue], year: int, currency: str, quote: str
    ) -> tuple[Fraction, str, tuple[ReferenceRow, ...]] | None:
        """1 ``currency`` in ``quote`` from one year's rates: a stored row, its inverse, or a cross rate via USD."""

        def one(base: str, counter: str) -> tuple[Fraction, str, ReferenceRow] | None:
            for key, how in (((base, counter), "direct"), ((counter, base), "inverse")):
                stored = rates.get(key)
                if stored is not None:
                    row = ReferenceRow(key[0], year, stored.value, stored.source, quote_currency=key[1])
                    value = Fraction(stored.value)
                    return (value if how == "direct" else 1 / value), how, row
            return None

        found = one(currency, quote)
        if found is not None:
            return found[0], found[1], (found[2],)
        if DEFAULT_CURRENCY in (currency, quote):
            return None
        to_usd, from_usd = one(currency, DEFAULT_CURRENCY), one(DEFAULT_CURRENCY, quote)
        if to_usd is None or from_usd is None:
            return None
        return to_usd[0] * from_usd[0], "cross", (to_usd[2], from_usd[2])

    def exchange_rate(self, currency: str, quote: str, year: int, *, set_name: str = "") -> ExchangeRateUse:
        """1 ``currency`` in ``quote`` for ``year``, exactly, from the set ``set_name`` (default ``ecb``), with the
        rows used: a stored row, its inverse, or a cross rate through USD; never an assumed 1:1.

        A ``year`` after the set's newest year (its newest over all currencies) uses that newest year when the
        pair has a rate in it (``use.year`` says which; the caller records the fallback). A pair the set stopped
        quoting earlier (a retired currency) does not fall back. Otherwise a missing rate raises
        ``CalculationError``: on ``currency`` when the set has no rate for the pair in any year, on
        ``spend_year`` when it lacks that year, on ``exchange_rate_set`` when there is no such set.
        """
        currency, quote = currency.upper(), quote.upper()
        named = bool(set_name)
        set_name = set_name or DEFAULT_EXCHANGE_RATE_SET
        if currency == quote:
            return ExchangeRateUse(set_name, year, Fraction(1), "direct", ())
        table = self.source.exchange_rates(set_name)
        if table is None:
            raise _set_not_loaded("exchange-rate", set_name, named=named, field="currency")
        found = self._rate_in(table.get(year, {}), year, currency, quote)
        if found is not None:
            return ExchangeRateUse(set_name, year, *found)
        newest = max(table)
        if year > newest:
            found = self._rate_in(table[newest], newest, currency, quote)
            if found is not None:
                return ExchangeRateUse(set_name, newest, *found)
        years = [y for y in sorted(table) if self._rate_in(table[y], y, currency, quote) is not None]
        if not years:
            raise CalculationError(
                field="currency",
                message=f"No exchange rate {currency}->{quote} in the set '{set_name}' for any year: load an "
                f"ExchangeRate row (set={set_name}, currency={currency}, quote_currency={quote}, year={year}).",
            )
        raise CalculationError(
            field="spend_year",
            message=f"No exchange rate {currency}->{quote} for {year} in the set '{set_name}' "
            f"(it has {_years_text(years)}): load an ExchangeRate row "
            f"(set={set_name}, currency={currency}, quote_currency={quote}, year={year}).",
        )

    def price_index(
        self, currency: str, year: int, *, set_name: str = "", field: str = "spend_year", exact: bool = False
    ) -> ReferenceRow:
        """The price-index row of ``currency`` in ``year`` from the set ``set_name`` (default ``cpi-u``).

        Unless ``exact``, a ``year`` after the set's newest year (over all its currencies) gives the row of that
        newest year when ``currency`` has one (its ``year`` says so; the caller records the fallback).
        Otherwise a missing row raises ``CalculationError`` on ``field`` naming the row to load, or on
        ``price_index_set`` when there is no such set.
        """
        currency = currency.upper()
        named = bool(set_name)
        set_name = set_name or DEFAULT_PRICE_INDEX_SET
        table = self.source.price_indexes(set_name)
        if table is None:
            raise _set_not_loaded("price-index", set_name, named=named, field=field)
        levels = table.get(currency, {})
        used = year
        if not exact and year not in levels:
            # Only on a miss: the set's newest year is a walk over all its rows.
            newest = max((y for years in table.values() for y in years), default=year)
            if year > newest:
                used = newest
        stored = levels.get(used)
        if stored is None:
            has = f" (it has {_years_text(sorted(levels))})" if levels else ""
            raise CalculationError(
                field=field,
                message=f"No price index for {currency} {year} in the set '{set_name}'{has}: load a PriceIndex row "
                f"(set={set_name}, currency={currency}, year={year}).",
            )
        return ReferenceRow(currency, used, stored.value, stored.source)


def _set_not_loaded(kind: str, set_name: str, *, named: bool, field: str) -> CalculationError:
    """No ``kind`` set ``set_name``: a set the caller named is the caller's mistake (an error on that field); a
    missing default set blocks ``field``, the input that needed it."""
    return CalculationError(
        field=f"{kind.replace('-', '_')}_set" if named else field,
        message=f"No {kind} set '{set_name}' is loaded: "
        + ("check the name, or load it with load_reference_data." if named else MISSING_DEFAULT_SETS),
    )


def _years_text(years: Sequence[int]) -> str:
    """``1999-2025``, or ``1999-2010, 2012-2025`` when years are missing in between."""
    spans: list[list[int]] = []
    for year in years:
        if spans and year == spans[-1][1] + 1:
            spans[-1][1] = year
        else:
            spans.append([year, year])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def narrow_gwp_set(candidates: list[F], activity: str, notes: list[Note]) -> list[F]:
    """Rule 1, GWP tables: the gas factors on ``DATASET_GWP_SET`` when there are any; appends the note taken.

    Without it the newest table (AR6) would win, while every factor dataset is on AR5. A species the
    set does not assess keeps all its candidates (the engine then warns ``gwp_set_mismatch``).
    """
    on_set = [f for f in candidates if f.dataset.source == GWP_SOURCE and f.dataset.version == DATASET_GWP_SET]
    if not on_set:
        return candidates
    others = sorted({f.dataset.version for f in candidates if f.dataset.source == GWP_SOURCE} - {DATASET_GWP_SET})
    if others:
        notes.append(
            Note(
                "gwp_set_default",
                f"No dataset_version given for '{activity}'; used {DATASET_GWP_SET}, the GWP set of the factor "
                f"datasets, not {', '.join(others)} (give dataset_version to choose another)",
            )
        )
    # Factors of other sources under the same activity key stay candidates: only the GWP tables are narrowed.
    return [f for f in candidates if f.dataset.source != GWP_SOURCE or f.dataset.version == DATASET_GWP_SET]


def narrow_region(candidates: list[F], region: str, activity: str, notes: list[Note]) -> list[F]:
    """Rule 2: the candidates of the chosen region; appends the fallback note taken, if any."""
    regions = sorted({f.region.upper() for f in candidates})

    def newest_region(pool: list[F]) -> str:
        # Newest factor first; among equally new ones the alphabetically first region, so the choice is stable.
        best = max(newest_key(f) for f in pool)
        return min(f.region.upper() for f in pool if newest_key(f) == best)

    if region:
        if region in regions:
            chosen = region
        elif GLOBAL in regions:
            chosen = GLOBAL
            notes.append(Note("region_fallback", f"No factor for region {region}; used {GLOBAL}"))
        else:
            chosen = newest_region(candidates)
            notes.append(Note("region_fallback", f"No factor for region {region}; used {chosen}"))
    elif len(regions) > 1:
        chosen = GLOBAL if GLOBAL in regions else newest_region(candidates)
        notes.append(
            Note(
                "region_unspecified",
                f"No region given and '{activity}' has factors for {', '.join(regions)}; used {chosen}",
            )
        )
    else:
        chosen = regions[0]
    return [f for f in candidates if f.region.upper() == chosen]


def narrow_year(candidates: list[F], year: int, notes: list[Note]) -> list[F]:
    """Rule 3: the candidates of the chosen year; appends the fallback note taken, if any."""
    years = {f.year for f in candidates}
    if year in years:
        chosen = year
    else:
        earlier = [y for y in years if y < year]
        if earlier:
            chosen = max(earlier)
            notes.append(Note("year_fallback_earlier", f"No factor for year {year}; used {chosen}"))
        else:
            chosen = min(years)
            notes.append(Note("year_fallback_later", f"No factor for year {year}; used {chosen}"))
    return [f for f in candidates if f.year == chosen]
