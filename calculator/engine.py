"""The calculation: one CalculationInput -> one CalculationResult. No HTTP here."""

from __future__ import annotations

from calculator.resolve import FactorResolver
from calculator.types import CalculationError, CalculationInput, CalculationResult
from emissions.models import Organization


def calculate(
    inp: CalculationInput, *, organization: Organization, resolver: FactorResolver | None = None
) -> CalculationResult:
    """Turn one activity into kg CO2e; raises CalculationError naming the bad field."""
    resolver = resolver or FactorResolver(organization)
    raise CalculationError(field="method", message="Not implemented yet.")
