"""Factor, exchange-rate and price-index lookups for the calculator, memoized per resolver."""

from __future__ import annotations

from decimal import Decimal

from calculator.types import CalculationError, CalculationInput, Note
from emissions.models import EmissionFactor, Organization


class FactorResolver:
    """Resolves selectors to factors for one organization; memoizes every lookup."""

    def __init__(self, organization: Organization) -> None:
        self.organization = organization

    def resolve(self, inp: CalculationInput) -> tuple[EmissionFactor, list[Note]]:
        raise CalculationError(field="activity", message="Not implemented yet.")

    def exchange_rate(self, currency: str, quote: str, year: int) -> Decimal:
        raise CalculationError(field="currency", message="Not implemented yet.")

    def price_index(self, currency: str, year: int) -> Decimal:
        raise CalculationError(field="spend_year", message="Not implemented yet.")
