"""The calculator over this database: one organization's factors and reference tables, read through the cache.

``calculator`` is pure (it applies the rules to whatever a ``FactorSource`` offers); this module is
the source it is given in production, and the entry point the API, the services and the commands
call. A ``FactorResolver`` belongs to one organization and lives for one request or one batch.

Every lookup is memoized, so a batch of 10,000 items that use 20 distinct selectors costs about 20
factor queries, plus one query per reference set (exchange rates, price indexes) a spend line uses.
Failed lookups are memoized too: 10,000 rows naming the same unknown activity cost one query, not
10,000. Suppliers cost one query each (two when the supplier has no factor of its own and the method
is supplier-specific). A batch calls ``prime(inputs)`` (or ``prime_suppliers`` etc.) first: then the
whole batch costs a fixed handful of queries however many distinct activities, factors, suppliers
and years it names.

Candidates are ``EmissionFactor.objects.average_candidates(org, ...)``: ``visible_to(org)`` with the
requested ``activity`` and no supplier; a supplier's own factors are those of its organization's
datasets.

Across requests, every loader reads through the two-level cache (``perf.cache``): candidates per
activity, factors by id, suppliers with their own factors (per organization) and the reference
tables (global). The query counts above are those of a cold cache; warm, a lookup costs none.
"Not found" outcomes (an unknown activity or factor) are cached too, briefly
(``CACHE_NEGATIVE_TTL``); an unknown supplier is memoized per resolver only. A factor import, or a
supplier deleted, invalidates them like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from calculator import engine
from calculator.engine import MONEY_METHODS
from calculator.resolve import Resolver
from calculator.rules import DEFAULT_CURRENCY, DEFAULT_EXCHANGE_RATE_SET, DEFAULT_PRICE_INDEX_SET
from calculator.types import CalculationInput, CalculationResult, ReferenceValue
from emissions.cache import factor_namespaces, supplier_id_namespaces
from emissions.metrics import count_calculation
from emissions.models import EmissionFactor, ExchangeRate, FactorDataset, Organization, PriceIndex, Supplier
from perf.cache import is_renewing, tiered, writing
from perf.codec import model_from_row, model_row

# A reference set as the calculator reads it (``calculator.resolve.FactorSource``).
RateTable = dict[int, dict[tuple[str, str], ReferenceValue]]
IndexTable = dict[str, dict[int, ReferenceValue]]
# A reference set's cache key prefix, and its cached rows' columns in the order ``prime_sets`` reads them.
_SET_ROWS: dict[type[ExchangeRate] | type[PriceIndex], tuple[str, tuple[str, ...]]] = {
    ExchangeRate: ("rate-set", ("year", "currency", "quote_currency", "rate", "source")),
    PriceIndex: ("index-set", ("currency", "year", "value", "source")),
}
# A table built from a reference set's rows, kept in the process (OrganizationFactors._built_sets): the first item of
# its key, and what it is reckoned to hold per row (a dict entry, a frozen ReferenceValue, its Decimal and source).
_BUILT_SET = "emissions.calculation.built-set"
_ROW_BYTES = 400


@dataclass(frozen=True)
class _Built:
    """A built table as kept (``None`` included: a set without rows), so that a kept "no set" is told from none kept."""

    value: Any


def _rate_table(rows: list[list[Any]]) -> RateTable | None:
    rates: RateTable = {}
    for year, currency, quote, rate, source in rows:
        rates.setdefault(year, {})[(currency, quote)] = ReferenceValue(rate, source)
    return rates or None


def _index_table(rows: list[list[Any]]) -> IndexTable | None:
    levels: IndexTable = {}
    for currency, year, value, source in rows:
        levels.setdefault(currency, {})[year] = ReferenceValue(value, source)
    return levels or None


# A factor as cached: its row and its dataset's row.
_FactorRows = list[list[Any]]
# The calculator hands back the factor objects it was given, so results here carry EmissionFactor rows.
# Typed with Any rather than EmissionFactor: mypy checks a type argument against the calculator's
# FactorLike protocol before the Django plugin has typed the model's fields, and keeps that failure.
Result = CalculationResult[Any]


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


class OrganizationFactors:
    """The ``calculator.resolve.FactorSource`` of one organization: database rows through the cache, memoized.

    Not thread-safe: one per request or per batch (``FactorResolver`` makes one).
    """

    def __init__(self, organization: Organization) -> None:
        self.organization = organization
        self._factor_ns = factor_namespaces(organization.pk)
        # Supplier checks depend on which ids are the organization's (and on its own factors), not on
        # the suppliers' names: editing a supplier leaves them cached.
        self._supplier_ns = [*supplier_id_namespaces(organization.pk), *factor_namespaces(organization.pk)]
        self._by_activity: dict[str, list[EmissionFactor]] = {}
        self._by_supplier: dict[int, list[EmissionFactor]] = {}
        self._by_id: dict[int, EmissionFactor | None] = {}
        self._suppliers: dict[int, bool] = {}
        self._rate_sets: dict[str, RateTable | None] = {}
        self._index_sets: dict[str, IndexTable | None] = {}

    # -- FactorSource ------------------------------------------------------------------

    def factor(self, factor_id: int) -> EmissionFactor | None:
        if factor_id not in self._by_id:
            self.prime_factors([factor_id])
        return self._by_id.get(factor_id)

    def candidates(self, activity: str) -> Sequence[EmissionFactor]:
        if activity not in self._by_activity:
            self.prime_activities([activity])
        return self._by_activity.get(activity, [])

    def supplier_factors(self, supplier_id: int) -> Sequence[EmissionFactor] | None:
        """Unprimed, this costs one query when the supplier has factors, two when it has none."""
        if supplier_id not in self._by_supplier:
            self.prime_suppliers([supplier_id])  # skips ids already known not to be the organization's
        if not self._suppliers.get(supplier_id):
            return None
        return self._by_supplier.get(supplier_id, [])

    def supplier_exists(self, supplier_id: int) -> bool:
        """Unprimed ids cost one query each (known ones cached, unknown ones memoized here only)."""
        if supplier_id not in self._suppliers:
            self._suppliers[supplier_id] = tiered().get_or_compute(
                self._supplier_ns,
                f"supplier-exists:{supplier_id}",
                lambda: Supplier.objects.for_org(self.organization).filter(pk=supplier_id).exists(),
                negative=lambda exists: not exists,
                keep_negative=False,  # as in prime_suppliers
            )
        return self._suppliers[supplier_id]

    def exchange_rates(self, set_name: str) -> RateTable | None:
        if set_name not in self._rate_sets:
            self.prime_sets(exchange_rate_sets=[set_name])
        return self._rate_sets[set_name]

    def price_indexes(self, set_name: str) -> IndexTable | None:
        if set_name not in self._index_sets:
            self.prime_sets(price_index_sets=[set_name])
        return self._index_sets[set_name]

    # -- priming -----------------------------------------------------------------------

    def prime(self, inputs: Iterable[CalculationInput]) -> None:
        """Preload what a batch of ``inputs`` will look up, in at most six queries in all.

        Pinned factors (one query), average-data candidates of every activity named (one query),
        suppliers and their own factors (``prime_suppliers``, two) and the reference sets its spend lines
        may convert with (``prime_sets``, two). Without it each distinct selector costs its own query; with
        it a batch's lookups cost nothing more.
        """
        items = list(inputs)
        self.prime_factors(inp.factor_id for inp in items if inp.factor_id is not None)
        self.prime_activities(inp.activity.strip() for inp in items if inp.factor_id is None)
        self.prime_suppliers(inp.supplier_id for inp in items if inp.supplier_id is not None)
        # Only money converts, and only from another currency or a stated year: the sets those lines may use.
        spend = [
            inp
            for inp in items
            if inp.method in MONEY_METHODS
            and (inp.spend_year is not None or inp.currency.strip().upper() not in ("", DEFAULT_CURRENCY))
        ]
        if spend:
            self.prime_sets(
                exchange_rate_sets={inp.exchange_rate_set or DEFAULT_EXCHANGE_RATE_SET for inp in spend},
                price_index_sets={inp.price_index_set or DEFAULT_PRICE_INDEX_SET for inp in spend},
            )

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

    def prime_sets(self, *, exchange_rate_sets: Iterable[str] = (), price_index_sets: Iterable[str] = ()) -> None:
        """Load the named reference sets whole, as this organization sees them: at most one query per kind for
        those not cached.

        A name is the organization's own set when it has one of that name, else the public set. A set is
        small (the shipped ECB set has 835 rows, CPI-U 113), and a conversion may need any of its years (a
        fallback needs the newest), so it is cached as one entry, per organization (its own sets are no one
        else's); a name with no rows is remembered as no set. Loading a set invalidates it
        (``catalogue_changed``). The tables built from the rows are kept in this process too (``_built_sets``).
        """
        self._rate_sets.update(self._built_sets(ExchangeRate, exchange_rate_sets, self._rate_sets, _rate_table))
        self._index_sets.update(self._built_sets(PriceIndex, price_index_sets, self._index_sets, _index_table))

    def _built_sets(
        self,
        model: type[ExchangeRate] | type[PriceIndex],
        names: Iterable[str],
        known: Mapping[str, Any],
        build: Callable[[list[list[Any]]], Any],
    ) -> dict[str, Any]:
        """The tables (``build`` of their rows) of the sets named and not ``known`` yet.

        A table is kept built in this process (``TieredCache.set_local``) under the factor namespaces' current
        versions, which every change to a set bumps: a batch or a spend calculation that needs the ECB set reads
        it as built, instead of decoding its 835 cached rows into a new table (a tenth of a 100-item batch's CPU).
        The tables are shared by the requests of the process: the calculator reads them as ``Mapping``s
        (``calculator.resolve.FactorSource``) and their values are frozen. Not kept while the transaction wrote
        the namespaces, nor while the cache is renewed (the rows are then read through ``_load_sets``).
        """
        wanted = sorted(set(names) - known.keys())
        if not wanted:
            return {}
        cache = tiered()
        local = cache.enabled and not writing(self._factor_ns) and not is_renewing()
        built: dict[str, Any] = {}
        keys: dict[str, tuple[Any, ...]] = {}
        if local:
            versions = tuple(version.value for version in cache.versions(self._factor_ns))
            for name in wanted:
                keys[name] = (_BUILT_SET, model.__name__, self.organization.pk, name, versions)
                table = cache.get_local(keys[name])
                if table is not None:
                    built[name] = table.value
                    cache.count_local_hit(self._factor_ns)  # the cached entry it stands for
        missing = [name for name in wanted if name not in built]
        if missing:
            for name, rows in self._load_sets(model, missing, known).items():
                built[name] = build(rows)
                if local:
                    cache.set_local(keys[name], _Built(built[name]), nbytes=_ROW_BYTES * (len(rows) + 1))
        return built

    def _load_sets(
        self, model: type[ExchangeRate] | type[PriceIndex], names: Iterable[str], known: Mapping[str, Any]
    ) -> dict[str, list[list[Any]]]:
        """The rows of the sets named and not ``known`` yet, through the cache (one entry per set); one query
        for those not cached."""
        wanted = set(names) - known.keys()
        if not wanted:
            return {}
        prefix, columns = _SET_ROWS[model]
        return tiered().get_many_or_compute(
            self._factor_ns,
            sorted(wanted),
            lambda name: f"{prefix}:{name}",
            lambda missing: self._visible_rows(model, missing, columns),
        )

    def _visible_rows(
        self, model: type[ExchangeRate] | type[PriceIndex], names: list[str], columns: tuple[str, ...]
    ) -> dict[str, list[list[Any]]]:
        """The rows of each set named, in one query: the organization's own set of that name, else the public one."""
        own: dict[str, list[list[Any]]] = {name: [] for name in names}
        public: dict[str, list[list[Any]]] = {name: [] for name in names}
        rows = (
            model.objects.filter(set_name__in=names)
            .filter(Q(organization__isnull=True) | Q(organization=self.organization))
            .values_list("organization_id", "set_name", *columns)
        )
        for owner, name, *row in rows:
            (public if owner is None else own)[name].append(row)
        return {name: own[name] or public[name] for name in names}

    def prime_suppliers(self, supplier_ids: Iterable[int]) -> None:
        """Load, in at most two queries, everything supplier checks and lookups need for ``supplier_ids``.

        Query 1 loads every supplier-specific factor of those ids that belong to this organization
        (a supplier with a factor is thereby proven to be the organization's); query 2 checks the
        remaining ids against the organization's suppliers. Both outcomes are memoized and cached,
        unknown ids included, so afterwards supplier checks and supplier-specific resolution cost
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
            # Ids supplier_exists already proved need no second look.
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


class FactorResolver(Resolver[Any]):
    """The calculator's resolver over one organization's factors (``OrganizationFactors``): its results carry
    ``EmissionFactor`` rows (typed ``Any``, as ``Result``).

    Not thread-safe: create one per request or per batch, and share it across the batch.
    """

    source: OrganizationFactors

    def __init__(self, organization: Organization) -> None:
        super().__init__(OrganizationFactors(organization))
        self.organization = organization

    def prime(self, inputs: Iterable[CalculationInput]) -> None:
        """See ``OrganizationFactors.prime``."""
        self.source.prime(inputs)

    def prime_suppliers(self, supplier_ids: Iterable[int]) -> None:
        """See ``OrganizationFactors.prime_suppliers``."""
        self.source.prime_suppliers(supplier_ids)


def _resolver_for(organization: Organization, resolver: FactorResolver | None) -> FactorResolver:
    if resolver is None:
        return FactorResolver(organization)
    if resolver.organization.pk != organization.pk:
        raise ValueError("The resolver belongs to another organization.")
    return resolver


def calculate(inp: CalculationInput, *, organization: Organization, resolver: FactorResolver | None = None) -> Result:
    """``calculator.engine.calculate`` with ``organization``'s factors; counted in ``vcci_calculations_total``.

    ``resolver`` must belong to ``organization``; pass one resolver to a whole batch so its lookups are shared.
    Raises ``CalculationError`` naming the bad field (not counted: that is a 400, not a calculation).
    """
    result = engine.calculate(inp, _resolver_for(organization, resolver))
    count_calculation(result.category, result.method)
    return result


def calculate_in_period(
    inp: CalculationInput, *, period_year: int, organization: Organization, resolver: FactorResolver | None = None
) -> Result:
    """``calculator.engine.calculate_in_period`` with ``organization``'s factors; counted as ``calculate``."""
    result = engine.calculate_in_period(inp, period_year=period_year, resolver=_resolver_for(organization, resolver))
    count_calculation(result.category, result.method)
    return result
