"""Factor, exchange-rate and price-index lookups for the calculator, memoized per resolver.

A ``FactorResolver`` belongs to one organization and lives for one request or one batch.
Every lookup is memoized, so a batch of 10,000 items that use 20 distinct selectors costs
about 20 factor queries, plus one query per spend year (exchange rates) and one per
currency (price indexes). Failed lookups are memoized too: 10,000 rows naming the same
unknown activity cost one query, not 10,000. Suppliers cost one query each (two when the
supplier has no factor of its own and the method is supplier-specific). A batch calls
``prime(inputs)`` (or ``prime_suppliers`` etc.) first: then the whole batch costs a fixed
handful of queries however many distinct activities, factors, suppliers and years it names.

Selection rules (average data, i.e. anything that is not a supplier's own factor):

1. Candidates: ``EmissionFactor.objects.average_candidates(org, ...)``, i.e. ``visible_to(org)``
   with the requested ``activity`` and no supplier. ``source`` and ``dataset_version`` are
   hard filters (pinned, never relaxed); an empty result is an error on that field.
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

Across requests, every loader reads through the two-level cache (``perf.cache``): candidates per
activity, factors by id, suppliers with their own factors (per organization) and the reference
tables (global). The query counts above are those of a cold cache; warm, a lookup costs none.
"Not found" outcomes (an unknown activity or factor) are cached too, briefly
(``CACHE_NEGATIVE_TTL``); an unknown supplier is memoized per resolver only. A factor import, or a
supplier deleted, invalidates them like the rest.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from calculator.types import CalculationError, CalculationInput, Note
from emissions.cache import factor_namespaces, supplier_id_namespaces
from emissions.models import EmissionFactor, ExchangeRate, FactorDataset, Method, Organization, PriceIndex, Supplier
from perf.cache import GLOBAL_FACTORS, tiered
from perf.codec import model_from_row, model_row

GLOBAL = "GLOBAL"
_Outcome = tuple[EmissionFactor, tuple[Note, ...]] | CalculationError
# A factor as cached: its row and its dataset's row.
_FactorRows = list[list[Any]]


def _factor_rows(factor: EmissionFactor) -> _FactorRows:
    return [model_row(factor), model_row(factor.dataset)]


def _factor_from_rows(rows: _FactorRows) -> EmissionFactor:
    factor = model_from_row(EmissionFactor, rows[0])
    factor.dataset = model_from_row(FactorDataset, rows[1])
    return factor


def _factors_from_rows(rows: list[_FactorRows]) -> list[EmissionFactor]:
    return [_factor_from_rows(r) for r in rows]


def _is_empty(value: Any) -> bool:
    return not value


def newest_key(factor: EmissionFactor) -> tuple:
    """Sort key: the newest dataset last (basis year, import time, dataset id, then factor id)."""
    dataset = factor.dataset
    return (dataset.basis_year, dataset.imported_at, dataset.pk, factor.year, factor.pk)


class FactorResolver:
    """Resolves selectors to factors for one organization; memoizes every lookup.

    Not thread-safe: create one per request or per batch.
    """

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self._factor_ns = factor_namespaces(organization.pk)
        # Supplier checks depend on which ids are the organization's (and on its own factors), not on
        # the suppliers' names: editing a supplier leaves them cached.
        self._supplier_ns = [*supplier_id_namespaces(organization.pk), *factor_namespaces(organization.pk)]
        self._outcomes: dict[tuple, _Outcome] = {}
        self._by_activity: dict[str, list[EmissionFactor]] = {}
        self._by_supplier: dict[int, list[EmissionFactor]] = {}
        self._by_id: dict[int, EmissionFactor | None] = {}
        self._suppliers: dict[int, bool] = {}
        self._rates: dict[int, dict[tuple[str, str], Decimal]] = {}
        self._indexes: dict[str, dict[int, Decimal]] = {}

    # -- factors -----------------------------------------------------------------------

    def resolve(self, inp: CalculationInput) -> tuple[EmissionFactor, list[Note]]:
        """The factor for ``inp`` (dataset loaded) and the fallback notes taken to find it.

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

    def prime(self, inputs: Iterable[CalculationInput]) -> None:
        """Preload what a batch of ``inputs`` will look up, in at most five queries in all.

        Pinned factors (one query), average-data candidates of every activity named (one query),
        suppliers and their own factors (``prime_suppliers``, two) and the exchange rates of every
        spend year given (one). Without it each distinct selector costs its own query; with it a
        batch's lookups cost nothing more, except price indexes (one query per factor currency).
        """
        items = list(inputs)
        self.prime_factors(inp.factor_id for inp in items if inp.factor_id is not None)
        self.prime_activities(inp.activity.strip() for inp in items if inp.factor_id is None)
        self.prime_suppliers(inp.supplier_id for inp in items if inp.supplier_id is not None)
        years = {inp.spend_year for inp in items if inp.method == Method.SPEND and isinstance(inp.spend_year, int)}
        self.prime_rates(years)

    def prime_factors(self, factor_ids: Iterable[int]) -> None:
        """Load the factors pinned by id, in one query; unknown or invisible ids are memoized as missing."""
        wanted = {pk for pk in factor_ids if isinstance(pk, int) and not isinstance(pk, bool)} - self._by_id.keys()
        if not wanted:
            return

        def load(missing: list[int]) -> dict[int, _FactorRows | None]:
            found = EmissionFactor.objects.visible_to(self.organization).with_related().filter(pk__in=missing)
            rows: dict[int, _FactorRows | None] = {pk: None for pk in missing}
            rows.update({f.pk: _factor_rows(f) for f in found})
            return rows

        cached = tiered().get_many_or_compute(
            self._factor_ns, sorted(wanted), lambda pk: f"factor:{pk}", load, negative=_is_empty
        )
        for pk, rows in cached.items():
            self._by_id[pk] = None if rows is None else _factor_from_rows(rows)

    def prime_activities(self, activities: Iterable[str]) -> None:
        """Load the average-data candidates of every activity key, in one query; unknown keys are memoized empty."""
        wanted = {activity for activity in activities if activity} - self._by_activity.keys()
        if not wanted:
            return

        def load(missing: list[str]) -> dict[str, list[_FactorRows]]:
            loaded: dict[str, list[_FactorRows]] = {activity: [] for activity in missing}
            for factor in EmissionFactor.objects.average_candidates(self.organization, missing):
                if factor.activity in loaded:  # a case-insensitive collation could return other spellings
                    loaded[factor.activity].append(_factor_rows(factor))
            return loaded

        cached = tiered().get_many_or_compute(
            self._factor_ns, sorted(wanted), lambda activity: f"candidates:{activity}", load, negative=_is_empty
        )
        self._by_activity.update({activity: _factors_from_rows(rows) for activity, rows in cached.items()})

    def prime_rates(self, years: Iterable[int]) -> None:
        """Load the exchange rates of every year given, in one query."""
        wanted = set(years) - self._rates.keys()
        if not wanted:
            return

        def load(missing: list[int]) -> dict[int, list[list[Any]]]:
            tables: dict[int, list[list[Any]]] = {year: [] for year in missing}
            for row in ExchangeRate.objects.filter(year__in=missing):
                tables[row.year].append([row.currency, row.quote_currency, row.rate])
            return tables

        cached = tiered().get_many_or_compute([GLOBAL_FACTORS], sorted(wanted), lambda year: f"rates:{year}", load)
        for year, rows in cached.items():
            self._rates[year] = {(currency, quote): rate for currency, quote, rate in rows}

    def prime_suppliers(self, supplier_ids: Iterable[int]) -> None:
        """Load, in at most two queries, everything supplier checks and lookups need for ``supplier_ids``.

        Query 1 loads every supplier-specific factor of those ids that belong to this organization
        (a supplier with a factor is thereby proven to be the organization's); query 2 checks the
        remaining ids against the organization's suppliers. Both outcomes are memoized and cached,
        unknown ids included, so afterwards ``check_supplier`` and supplier-specific resolution cost
        no query for those ids. Ids already loaded are skipped: priming twice is free. Call it
        before a batch.
        """
        known_bad = {pk for pk, ok in self._suppliers.items() if not ok}
        ids = {pk for pk in supplier_ids if isinstance(pk, int) and not isinstance(pk, bool)}
        wanted = ids - self._by_supplier.keys() - known_bad
        if not wanted:
            return

        def load(missing: list[int]) -> dict[int, list[_FactorRows] | None]:
            own: dict[int, list[_FactorRows]] = {}
            factors = (
                EmissionFactor.objects.visible_to(self.organization)
                .with_related()
                .filter(supplier_id__in=missing, supplier__organization=self.organization)
                .order_by("pk")
            )
            for factor in factors:
                assert factor.supplier_id is not None  # filtered on supplier_id above
                own.setdefault(factor.supplier_id, []).append(_factor_rows(factor))
            # Ids check_supplier already proved need no second look.
            unchecked = set(missing) - own.keys() - {pk for pk in missing if self._suppliers.get(pk)}
            known = (
                set(Supplier.objects.for_org(self.organization).filter(pk__in=unchecked).values_list("pk", flat=True))
                if unchecked
                else set()
            )
            # None: not this organization's supplier; []: its supplier, without factors of its own.
            return {pk: own.get(pk, [] if pk in known or self._suppliers.get(pk) else None) for pk in missing}

        # Unknown ids are not kept across requests (keep_negative=False): creating a supplier then needs no
        # invalidation of these lookups, which every ERP batch makes; a request naming an unknown supplier
        # fails with a 400 anyway, after one indexed query.
        cached = tiered().get_many_or_compute(
            self._supplier_ns,
            sorted(wanted),
            lambda pk: f"supplier:{pk}",
            load,
            negative=lambda rows: rows is None,
            keep_negative=False,
        )
        for pk, rows in cached.items():
            self._suppliers[pk] = rows is not None
            if rows is not None:
                self._by_supplier[pk] = _factors_from_rows(rows)

    def check_supplier(self, supplier_id: int) -> None:
        """Raise ``CalculationError`` on ``supplier`` unless the supplier belongs to this organization.

        Unprimed ids cost one query each (known ones cached, unknown ones memoized for this resolver
        only); see ``prime_suppliers``.
        """
        if supplier_id not in self._suppliers:
            self._suppliers[supplier_id] = tiered().get_or_compute(
                self._supplier_ns,
                f"supplier-exists:{supplier_id}",
                lambda: Supplier.objects.for_org(self.organization).filter(pk=supplier_id).exists(),
                negative=lambda exists: not exists,
                keep_negative=False,  # as in prime_suppliers
            )
        if not self._suppliers[supplier_id]:
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

    def _resolve_uncached(self, inp: CalculationInput) -> tuple[EmissionFactor, list[Note]]:
        if inp.factor_id is not None:
            return self._factor_by_id(inp.factor_id), []
        if inp.method == Method.SUPPLIER_SPECIFIC:
            return self._select_supplier_specific(inp)
        return self._select_average(inp)

    def _factor_by_id(self, factor_id: int) -> EmissionFactor:
        if factor_id not in self._by_id:
            self.prime_factors([factor_id])
        factor = self._by_id.get(factor_id)
        if factor is None:
            raise CalculationError(field="factor_id", message=f"Unknown factor {factor_id}.")
        return factor

    def _average_candidates(self, activity: str) -> list[EmissionFactor]:
        if activity not in self._by_activity:
            self.prime_activities([activity])
        return self._by_activity.get(activity, [])

    def _supplier_candidates(self, supplier_id: int) -> list[EmissionFactor]:
        """The supplier's own factors; also settles whether the supplier is the organization's.

        Unprimed, this costs one query when the supplier has factors, two when it has none.
        """
        if supplier_id not in self._by_supplier:
            self.prime_suppliers([supplier_id])
        return self._by_supplier.get(supplier_id, [])

    @staticmethod
    def _pin(candidates: list[EmissionFactor], inp: CalculationInput, *, what: str) -> list[EmissionFactor]:
        """Apply the hard filters ``source`` and ``dataset_version``; raise on the field that empties the list."""
        source, version = inp.source.strip(), inp.dataset_version.strip()
        if source:
            if source not in FactorDataset.Source.values:
                choices = ", ".join(FactorDataset.Source.values)
                raise CalculationError(field="source", message=f"Unknown source '{source}'; expected one of {choices}.")
            candidates = [f for f in candidates if f.dataset.source == source]
            if not candidates:
                raise CalculationError(field="source", message=f"No factor for {what} in source '{source}'.")
        if version:
            candidates = [f for f in candidates if f.dataset.version == version]
            if not candidates:
                detail = f" of source '{source}'" if source else ""
                raise CalculationError(
                    field="dataset_version", message=f"No factor for {what} in dataset version '{version}'{detail}."
                )
        return candidates

    def _select_average(self, inp: CalculationInput) -> tuple[EmissionFactor, list[Note]]:
        activity = inp.activity.strip()
        if not activity:
            raise CalculationError(field="activity", message="Give an activity or a factor_id.")
        candidates = self._average_candidates(activity)
        if not candidates:
            raise CalculationError(field="activity", message=f"Unknown activity '{activity}'.")
        candidates = self._pin(candidates, inp, what=f"activity '{activity}'")
        notes: list[Note] = []
        candidates = self._narrow_region(candidates, inp.region.strip().upper(), activity, notes)
        if inp.year is not None:
            candidates = self._narrow_year(candidates, inp.year, notes)
        return max(candidates, key=newest_key), notes

    @staticmethod
    def _narrow_region(
        candidates: list[EmissionFactor], region: str, activity: str, notes: list[Note]
    ) -> list[EmissionFactor]:
        regions = sorted({f.region.upper() for f in candidates})

        def newest_region(pool: list[EmissionFactor]) -> str:
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

    @staticmethod
    def _narrow_year(candidates: list[EmissionFactor], year: int, notes: list[Note]) -> list[EmissionFactor]:
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

    def _select_supplier_specific(self, inp: CalculationInput) -> tuple[EmissionFactor, list[Note]]:
        if inp.supplier_id is None:
            raise CalculationError(field="supplier", message="The supplier-specific method needs a supplier.")
        # Candidates first: loading them usually proves the supplier is the organization's, saving a query.
        own = self._supplier_candidates(inp.supplier_id)
        self.check_supplier(inp.supplier_id)
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

    def _rate_table(self, year: int) -> dict[tuple[str, str], Decimal]:
        if year not in self._rates:
            self.prime_rates([year])
        return self._rates[year]

    def _direct_or_inverse(self, currency: str, quote: str, year: int) -> Decimal | None:
        table = self._rate_table(year)
        if (currency, quote) in table:
            return table[(currency, quote)]
        if (quote, currency) in table:
            return Decimal(1) / table[(quote, currency)]
        return None

    def exchange_rate(self, currency: str, quote: str, year: int) -> Decimal:
        """1 ``currency`` in ``quote`` for ``year``: a stored row, its inverse, or a cross rate through USD.

        Never assumes 1:1 between different currencies: a missing row raises ``CalculationError``
        on ``currency`` naming the row to load. Divisions use the caller's decimal context.
        """
        currency, quote = currency.upper(), quote.upper()
        if currency == quote:
            return Decimal(1)
        rate = self._direct_or_inverse(currency, quote, year)
        if rate is None and "USD" not in (currency, quote):
            to_usd = self._direct_or_inverse(currency, "USD", year)
            from_usd = self._direct_or_inverse("USD", quote, year)
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
        if currency not in self._indexes:
            rows: list[list[Any]] = tiered().get_or_compute(
                [GLOBAL_FACTORS],
                f"index:{currency}",
                lambda: [[row.year, row.value] for row in PriceIndex.objects.filter(currency=currency)],
            )
            self._indexes[currency] = {year: index for year, index in rows}
        value = self._indexes[currency].get(year)
        if value is None:
            raise CalculationError(
                field="spend_year",
                message=f"No price index for {currency} {year}: load a PriceIndex row "
                f"(currency={currency}, year={year}).",
            )
        return value
