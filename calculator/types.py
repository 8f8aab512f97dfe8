"""Plain data passed into and out of the calculator. No HTTP, no serializers."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emissions.models import EmissionFactor


@dataclass(frozen=True)
class CalculationInput:
    """One activity to turn into kg CO2e.

    Preconditions (checked by the caller's input validation, re-checked by the calculator):
    ``amount`` is a finite, non-negative Decimal; ``category`` is 1-15; ``method`` is one of
    ``emissions.models.Method``; either ``factor_id`` or ``activity`` is given.
    """

    category: int
    method: str
    amount: Decimal
    unit: str
    factor_id: int | None = None
    activity: str = ""
    region: str = ""
    year: int | None = None
    source: str = ""
    dataset_version: str = ""
    currency: str = "USD"
    spend_year: int | None = None
    mass: Decimal | None = None
    mass_unit: str = ""
    distance: Decimal | None = None
    distance_unit: str = ""
    supplier_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready echo of the input: Decimals as strings, empty values left out."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if value is None or value == "":
                continue
            out[key] = str(value) if isinstance(value, Decimal) else value
        return out


@dataclass(frozen=True)
class Note:
    """A fallback taken or a warning raised, machine-readable ``code`` plus a sentence."""

    code: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class DataQuality:
    """GHG Protocol data-quality indicators, 1 (very good) to 5 (very poor)."""

    technology: int
    time: int
    geography: int
    completeness: int
    reliability: int

    @property
    def score(self) -> Decimal:
        total = self.technology + self.time + self.geography + self.completeness + self.reliability
        return (Decimal(total) / Decimal(5)).quantize(Decimal("0.1"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "technology": self.technology,
            "time": self.time,
            "geography": self.geography,
            "completeness": self.completeness,
            "reliability": self.reliability,
            "score": str(self.score),
        }


@dataclass
class CalculationResult:
    """The outcome of one calculation: kg CO2e, the factor used and everything assumed on the way."""

    co2e_kg: Decimal
    factor: EmissionFactor
    method: str
    category: int
    input: CalculationInput
    data_quality: DataQuality
    gases: dict[str, Decimal] = field(default_factory=dict)
    fallbacks: list[Note] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)
    # The amount in the factor's unit (after unit, currency and price-year conversion).
    converted_amount: Decimal | None = None

    def factor_dict(self) -> dict[str, Any]:
        f = self.factor
        return {
            "id": f.pk,
            "source": f.dataset.source,
            "dataset_version": f.dataset.version,
            "activity": f.activity,
            "name": f.name,
            "region": f.region,
            "year": f.year,
            "unit": f.unit,
            "co2e_per_unit": str(f.co2e_per_unit),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "co2e_kg": str(self.co2e_kg),
            "gases": {gas: str(value) for gas, value in self.gases.items()},
            "factor": self.factor_dict(),
            "method": self.method,
            "category": self.category,
            "converted_amount": None if self.converted_amount is None else str(self.converted_amount),
            "data_quality": self.data_quality.as_dict(),
            "fallbacks": [n.as_dict() for n in self.fallbacks],
            "warnings": [n.as_dict() for n in self.warnings],
            "input": self.input.as_dict(),
        }


class CalculationError(Exception):
    """Bad input or missing reference data; ``errors`` maps an input field name to messages.

    The API turns this into a 400 whose body names the field, so every raise must name one.
    """

    def __init__(self, errors: dict[str, list[str]] | None = None, *, field: str = "", message: str = ""):
        if errors is None:
            errors = {field or "non_field_errors": [message]}
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
