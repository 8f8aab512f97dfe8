"""Small builders shared by the calculator tests, and ``World``: an in-memory ``FactorSource``.

The calculator is pure, so its tests need no database: a ``World`` holds the factors, suppliers,
exchange rates and price indexes one organization would see, and counts what it is asked for.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from calculator import engine
from calculator.resolve import Resolver
from calculator.rules import DEFAULT_EXCHANGE_RATE_SET, DEFAULT_PRICE_INDEX_SET
from calculator.types import CalculationInput, CalculationResult, Dataset, Factor, ReferenceValue

# The smallest valid input; tests override only the fields they exercise.
_BASE_INPUT = CalculationInput(category=1, method="activity", amount=Decimal("1"), unit="kWh")
_ids = itertools.count(1)


def make_input(**overrides: Any) -> CalculationInput:
    return dataclasses.replace(_BASE_INPUT, **overrides)


def freight_input(**overrides: Any) -> CalculationInput:
    """A category 4 distance input for the ``desnz:freight_hgv`` factor given as mass x distance (no amount/unit)."""
    return make_input(
        method="distance", category=4, activity="desnz:freight_hgv", amount=Decimal("0"), unit="", **overrides
    )


@dataclasses.dataclass(frozen=True)
class SupplierRef:
    """A supplier as the calculator sees it: an id."""

    pk: int


class World:
    """One organization's view of factors and reference tables, in memory (a ``calculator.resolve.FactorSource``).

    Factors added with a ``supplier`` are that supplier's own; the others are average data.
    ``asked`` counts the lookups made, so a test can show what a calculation needed.
    """

    def __init__(self) -> None:
        self.factors: list[Factor] = []
        self.suppliers: set[int] = set()
        # Reference sets by name: {set: {year: {(currency, quote): row}}} and {set: {currency: {year: row}}}.
        self.rates: dict[str, dict[int, dict[tuple[str, str], ReferenceValue]]] = {}
        self.indexes: dict[str, dict[str, dict[int, ReferenceValue]]] = {}
        self.asked: Counter[str] = Counter()

    # -- building ------------------------------------------------------------------------------

    def add_dataset(self, *, source: str = "desnz", version: str = "", basis_year: int = 2025) -> Dataset:
        pk = next(_ids)
        return Dataset(pk=pk, source=source, version=version or f"v{pk}", basis_year=basis_year)

    def add_factor(self, **values: Any) -> Factor:
        """A factor with sensible defaults (a kWh factor of a DESNZ dataset); ``supplier`` makes it a supplier's own."""
        pk = next(_ids)
        supplier = values.pop("supplier", None)
        if supplier is not None:
            values["supplier_id"] = supplier.pk
        values.setdefault("dataset", self.add_dataset())
        values.setdefault("activity", f"test:{pk}")
        values.setdefault("region", "GB")
        values.setdefault("year", 2025)
        values.setdefault("unit", "kWh")
        values.setdefault("co2e_per_unit", Decimal("1"))
        factor = Factor(pk=pk, **values)
        self.factors.append(factor)
        return factor

    def add_supplier(self) -> SupplierRef:
        supplier = SupplierRef(pk=next(_ids))
        self.suppliers.add(supplier.pk)
        return supplier

    def add_rate(
        self,
        *,
        currency: str,
        quote_currency: str,
        year: int,
        rate: Decimal,
        set_name: str = DEFAULT_EXCHANGE_RATE_SET,
        source: str = "test rates",
    ) -> None:
        self.rates.setdefault(set_name, {}).setdefault(year, {})[(currency, quote_currency)] = ReferenceValue(
            rate, source
        )

    def add_index(
        self,
        *,
        currency: str,
        year: int,
        value: Decimal,
        set_name: str = DEFAULT_PRICE_INDEX_SET,
        source: str = "test index",
    ) -> None:
        self.indexes.setdefault(set_name, {}).setdefault(currency, {})[year] = ReferenceValue(value, source)

    # -- FactorSource --------------------------------------------------------------------------

    def factor(self, factor_id: int) -> Factor | None:
        self.asked["factor"] += 1
        return next((f for f in self.factors if f.pk == factor_id and self._visible(f)), None)

    def candidates(self, activity: str) -> Sequence[Factor]:
        self.asked["candidates"] += 1
        return [f for f in self.factors if f.activity == activity and f.supplier_id is None]

    def supplier_factors(self, supplier_id: int) -> Sequence[Factor] | None:
        self.asked["supplier_factors"] += 1
        if supplier_id not in self.suppliers:
            return None
        return [f for f in self.factors if f.supplier_id == supplier_id]

    def supplier_exists(self, supplier_id: int) -> bool:
        self.asked["supplier_exists"] += 1
        return supplier_id in self.suppliers

    def exchange_rates(self, set_name: str) -> Mapping[int, Mapping[tuple[str, str], ReferenceValue]] | None:
        self.asked["exchange_rates"] += 1
        return self.rates.get(set_name)

    def price_indexes(self, set_name: str) -> Mapping[str, Mapping[int, ReferenceValue]] | None:
        self.asked["price_indexes"] += 1
        return self.indexes.get(set_name)

    def _visible(self, factor: Factor) -> bool:
        # Another organization's supplier factors are not this world's.
        return factor.supplier_id is None or factor.supplier_id in self.suppliers


def calculate(
    inp: CalculationInput, *, organization: World, resolver: Resolver[Factor] | None = None
) -> CalculationResult[Factor]:
    """``calculator.engine.calculate`` over ``organization`` (a fresh resolver unless one is given)."""
    return engine.calculate(inp, resolver or Resolver(organization))
