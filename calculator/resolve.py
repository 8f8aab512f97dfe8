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

Exchange rates: a stored rate, its inverse, or a cross rate through USD, never an assumed 1:1.
Rates are returned as exact fractions so that the calculation rounds only once.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Generic, Protocol, TypeVar

from calculator.rules import DATASET_GWP_SET, DEFAULT_CURRENCY, GLOBAL, GWP_SOURCE, SOURCES, Method
from calculator.types import CalculationError, CalculationInput, F, FactorLike, Note

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

    def exchange_rates(self, year: int) -> Mapping[tuple[str, str], Decimal]:
        """``{(currency, quote): rate}`` for ``year``: 1 ``currency`` = ``rate`` ``quote``."""
        ...

    def price_indexes(self, currency: str) -> Mapping[int, Decimal]:
        """``{year: index level}`` for ``currency``'s price index."""
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

    def _direct_or_inverse(self, currency: str, quote: str, year: int) -> Fraction | None:
        table = self.source.exchange_rates(year)
        if (currency, quote) in table:
            return Fraction(table[(currency, quote)])
        if (quote, currency) in table:
            return 1 / Fraction(table[(quote, currency)])
        return None

    def exchange_rate(self, currency: str, quote: str, year: int) -> Fraction:
        """1 ``currency`` in ``quote`` for ``year``, exactly: a stored row, its inverse, or a cross rate through USD.

        Never assumes 1:1 between different currencies: a missing row raises ``CalculationError``
        on ``currency`` naming the row to load.
        """
        currency, quote = currency.upper(), quote.upper()
        if currency == quote:
            return Fraction(1)
        rate = self._direct_or_inverse(currency, quote, year)
        if rate is None and DEFAULT_CURRENCY not in (currency, quote):
            to_usd = self._direct_or_inverse(currency, DEFAULT_CURRENCY, year)
            from_usd = self._direct_or_inverse(DEFAULT_CURRENCY, quote, year)
            if to_usd is not None and from_usd is not None:
                rate = to_usd * from_usd
        if rate is None:
            raise CalculationError(
                field="currency",
                message=f"No exchange rate {currency}->{quote} for {year}: load an ExchangeRate row "
                f"(currency={currency}, quote_currency={quote}, year={year}).",
            )
        return rate

    def price_index(self, currency: str, year: int) -> Decimal:
        """Price-index level of ``currency`` in ``year``.

        A missing row raises ``CalculationError`` on ``spend_year`` naming the row to load.
        """
        currency = currency.upper()
        value = self.source.price_indexes(currency).get(year)
        if value is None:
            raise CalculationError(
                field="spend_year",
                message=f"No price index for {currency} {year}: load a PriceIndex row "
                f"(currency={currency}, year={year}).",
            )
        return value


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
