"""Plain data passed into and out of the calculator. No HTTP, no serializers."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
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


# Decimal places of ``converted_amount`` in ``CalculationResult.as_dict`` (see there).
CONVERTED_AMOUNT_PLACES = 12


def present_amount(value: Decimal) -> str:
    """``value`` rounded half-even to ``CONVERTED_AMOUNT_PLACES`` decimals, fixed-point, no trailing zeros.

    1 GJ in kWh (277.777...8, 40 digits) reads ``277.777777777778``; 1000 reads ``1000``, never
    ``1E+3``. Values too big to show digit by digit (beyond 40 integer digits) keep ``str()``.
    """
    if not value.is_finite() or value.adjusted() >= 40:
        return str(value)
    with localcontext() as ctx:
        # Enough digits for every integer digit plus the decimals: quantize must not need to round them.
        ctx.prec = max(value.adjusted(), 0) + CONVERTED_AMOUNT_PLACES + 2
        rounded = value.quantize(Decimal(1).scaleb(-CONVERTED_AMOUNT_PLACES), rounding=ROUND_HALF_EVEN)
    text = format(rounded, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class CalculationResult:
    """The outcome of one calculation: kg CO2e, the factor used and everything assumed on the way.

    ``converted_amount`` is exact (it is what ``co2e_kg`` was computed from); ``basis`` says how
    the amount was converted: ``spend``, ``activity`` or ``distance`` (a supplier-specific result
    has the basis of the factor it used).
    """

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
    basis: str = ""

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
        """JSON-ready result.

        Presentation choices: ``converted_amount`` is shown rounded by ``present_amount`` (12
        decimal places, plain notation) because an exact repeating conversion is 40 digits long;
        ``co2e_kg`` was computed from the exact value before any of this rounding. The ``input``
        echo leaves out ``currency`` unless the amount was money (method ``spend``, or
        ``supplier_specific`` computed with a spend factor): elsewhere it is only the default.
        """
        echo = self.input.as_dict()
        if (self.basis or self.method) != "spend":
            echo.pop("currency", None)
        return {
            "co2e_kg": str(self.co2e_kg),
            "gases": {gas: str(value) for gas, value in self.gases.items()},
            "factor": self.factor_dict(),
            "method": self.method,
            "category": self.category,
            "converted_amount": None if self.converted_amount is None else present_amount(self.converted_amount),
            "data_quality": self.data_quality.as_dict(),
            "fallbacks": [n.as_dict() for n in self.fallbacks],
            "warnings": [n.as_dict() for n in self.warnings],
            "input": echo,
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
