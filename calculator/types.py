"""Plain values passed into and out of the calculator: no HTTP, no ORM, no cache.

A factor reaches the calculator as anything shaped like ``FactorLike`` (the ``emissions`` models
are; so are the ``Factor`` and ``Dataset`` values below), and a result carries that same object
back, so a caller that passed database rows gets database rows back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

from calculator.rules import (
    AMOUNT_PLACES,
    CO2E_QUANTUM,
    CO2E_T_QUANTUM,
    CONVERTED_AMOUNT_PLACES,
    DEFAULT_CURRENCY,
    Method,
)
from calculator.shapes import (
    CalculationResultDict,
    ConversionDict,
    DataQualityDict,
    ExchangeRateUseDict,
    FactorRefDict,
    NoteDict,
    PriceIndexUseDict,
    ReferenceRowDict,
)


class DatasetLike(Protocol):
    """The edition of a published source a factor comes from."""

    @property
    def pk(self) -> Any: ...
    @property
    def source(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def basis_year(self) -> int: ...
    @property
    def imported_at(self) -> dt.datetime: ...


class FactorLike(Protocol):
    """kg CO2e per one ``unit`` of an activity; see ``emissions.models.EmissionFactor`` for each field.

    ``biogenic_co2_per_unit`` is the kg of biogenic CO2 per unit that the publisher reports outside the
    scopes (not part of ``co2e_per_unit``); None when the publisher gives no such figure.
    """

    @property
    def pk(self) -> Any: ...
    @property
    def activity(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def year(self) -> int: ...
    @property
    def unit(self) -> str: ...
    @property
    def unit_label(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def co2e_per_unit(self) -> Decimal: ...
    @property
    def biogenic_co2_per_unit(self) -> Decimal | None: ...
    @property
    def gases(self) -> Any: ...
    @property
    def supplier_id(self) -> int | None: ...
    @property
    def dataset(self) -> DatasetLike: ...


F = TypeVar("F", bound=FactorLike)

AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_PLACES)

_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Dataset:
    """A ``DatasetLike`` value for callers without a database (tests, scripts, workers)."""

    pk: int
    source: str
    version: str
    basis_year: int
    imported_at: dt.datetime = _EPOCH


@dataclass(frozen=True)
class Factor:
    """A ``FactorLike`` value for callers without a database; ``gases`` as in ``EmissionFactor``."""

    pk: int
    activity: str
    dataset: Dataset
    region: str
    year: int
    unit: str
    co2e_per_unit: Decimal
    name: str = ""
    unit_label: str = ""
    currency: str = ""
    gases: Mapping[str, str] = field(default_factory=dict)
    supplier_id: int | None = None
    biogenic_co2_per_unit: Decimal | None = None


@dataclass(frozen=True)
class CalculationInput:
    """One activity to turn into kg CO2e.

    Preconditions (checked by the caller's input validation, re-checked by the calculator):
    ``amount`` is a finite, non-negative Decimal; ``category`` is 1-15; ``method`` is one of
    ``calculator.rules.Method``; either ``factor_id`` or ``activity`` is given.
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
    currency: str = DEFAULT_CURRENCY
    spend_year: int | None = None
    mass: Decimal | None = None
    mass_unit: str = ""
    distance: Decimal | None = None
    distance_unit: str = ""
    supplier_id: int | None = None
    # The reference sets a spend amount is converted with; empty: ``rules.DEFAULT_*_SET``.
    exchange_rate_set: str = ""
    price_index_set: str = ""

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

    def as_dict(self) -> NoteDict:
        return {"code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class ReferenceValue:
    """A reference-set row's value (a rate, or an index level) and the source its loader recorded."""

    value: Decimal
    source: str = ""


@dataclass(frozen=True)
class ReferenceRow:
    """A stored reference row a conversion used, as stored: an auditor can find it and redo the arithmetic.

    ``quote_currency`` is empty for a price-index row; for a rate, 1 ``currency`` = ``value`` ``quote_currency``.
    """

    currency: str
    year: int
    value: Decimal
    source: str
    quote_currency: str = ""

    def as_dict(self) -> ReferenceRowDict:
        return {
            "currency": self.currency,
            "quote_currency": self.quote_currency or None,
            "year": self.year,
            "value": str(self.value),
            "source": self.source,
        }


@dataclass(frozen=True)
class ExchangeRateUse:
    """The rate a spend amount was converted with: ``value`` (exact) = the product of ``rows``, each used
    as stored or inverted (1 / value) as ``how`` says: ``direct``, ``inverse`` or ``cross`` (through USD)."""

    set_name: str
    year: int
    value: Fraction
    how: str
    rows: tuple[ReferenceRow, ...]

    def as_dict(self) -> ExchangeRateUseDict:
        return {
            "set": self.set_name,
            "year": self.year,
            "value": present_amount(self.value),
            "how": self.how,
            "rows": [row.as_dict() for row in self.rows],
        }


@dataclass(frozen=True)
class PriceIndexUse:
    """The price-index rows that moved a spend amount from ``spend_row``'s year to ``price_row``'s: x price / spend."""

    set_name: str
    spend_row: ReferenceRow
    price_row: ReferenceRow

    def as_dict(self) -> PriceIndexUseDict:
        return {"set": self.set_name, "from": self.spend_row.as_dict(), "to": self.price_row.as_dict()}


@dataclass(frozen=True)
class SpendConversion:
    """How a spend amount became money in the factor's currency and price year, with every row used.

    ``exchange_rate`` is None when the amount was already in the factor's currency; ``price_index`` None when
    the spend year is the factor's price year. ``amount`` is shown at the stored quantities' places
    (``AMOUNT_PLACES``), so the record of a stored activity is the same however its amount was written.
    """

    amount: Decimal
    currency: str
    spend_year: int
    factor_currency: str
    price_year: int
    exchange_rate: ExchangeRateUse | None
    price_index: PriceIndexUse | None

    def as_dict(self) -> ConversionDict:
        return {
            "amount": _amount_text(self.amount),
            "currency": self.currency,
            "spend_year": self.spend_year,
            "factor_currency": self.factor_currency,
            "price_year": self.price_year,
            "exchange_rate": None if self.exchange_rate is None else self.exchange_rate.as_dict(),
            "price_index": None if self.price_index is None else self.price_index.as_dict(),
        }


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
        return round_half_even(Fraction(total, 5), 1)

    def as_dict(self) -> DataQualityDict:
        return {
            "technology": self.technology,
            "time": self.time,
            "geography": self.geography,
            "completeness": self.completeness,
            "reliability": self.reliability,
            "score": str(self.score),
        }


def round_half_even(value: Fraction | Decimal | int, places: int) -> Decimal:
    """``value`` rounded once, half-even, to ``places`` decimals, as a Decimal with exactly that exponent.

    Exact for any rational ``value``: ties are ties of the true value, never of a rounded intermediate.
    """
    numerator, denominator = value.as_integer_ratio()
    return round_ratio_half_even(numerator, denominator, places)


def round_ratio_half_even(numerator: int, denominator: int, places: int) -> Decimal:
    """``numerator / denominator`` rounded once, half-even, to ``places`` decimals (see ``round_half_even``).

    Precondition: ``denominator > 0``. Integer arithmetic only: the calculator rounds every result and
    every gas of a batch through here, and building a ``Fraction`` per product cost more than the rest
    of the calculation.
    """
    quotient, remainder = divmod(numerator * 10**places, denominator)  # floor division: 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return Decimal(quotient).scaleb(-places)


def present_amount(value: Fraction | Decimal) -> str:
    """``value`` rounded half-even to ``CONVERTED_AMOUNT_PLACES`` decimals, fixed-point, no trailing zeros.

    1 GJ in kWh (277.777...) reads ``277.777777777778``; 1000 reads ``1000``, never ``1E+3``.
    """
    text = format(round_half_even(value, CONVERTED_AMOUNT_PLACES), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def present_kg(value: Decimal) -> str:
    """kg (CO2e or biogenic CO2) as every output shows it: ``CO2E_PLACES`` decimals, fixed-point.

    A stored or calculated figure already has those places; a sum of them too, so nothing rounds twice.
    """
    return format(value.quantize(CO2E_QUANTUM, rounding=ROUND_HALF_EVEN), "f")


def present_t(value_kg: Decimal) -> str:
    """``value_kg`` in tonnes, ``CO2E_T_PLACES`` decimals: kg / 1000 is a shift of the exponent, exact."""
    return format(value_kg.scaleb(-3).quantize(CO2E_T_QUANTUM, rounding=ROUND_HALF_EVEN), "f")


@dataclass
class CalculationResult(Generic[F]):
    """The outcome of one calculation: kg CO2e, the factor used and everything assumed on the way.

    ``converted_amount`` is the exact amount in the factor's unit (a rational number: it is what
    ``co2e_kg`` was computed from, before the one rounding); ``basis`` says how the amount was
    converted: ``spend``, ``activity`` or ``distance`` (a supplier-specific result has the basis
    of the factor it used). ``biogenic_co2_kg`` is the biogenic CO2 of combustion, reported outside
    the scopes and not part of ``co2e_kg``, rounded as ``co2e_kg`` is; None when the factor has no
    biogenic figure.
    """

    co2e_kg: Decimal
    factor: F
    method: str
    category: int
    input: CalculationInput
    data_quality: DataQuality
    gases: dict[str, Decimal] = field(default_factory=dict)
    fallbacks: list[Note] = field(default_factory=list)
    warnings: list[Note] = field(default_factory=list)
    converted_amount: Fraction | None = None
    basis: str = ""
    biogenic_co2_kg: Decimal | None = None
    conversion: SpendConversion | None = None

    def factor_dict(self) -> FactorRefDict:
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
            "biogenic_co2_per_unit": _optional_str(f.biogenic_co2_per_unit),
        }

    def as_dict(self) -> CalculationResultDict:
        """JSON-ready result, shaped as ``calculator.shapes.CalculationResultDict``.

        Presentation choices: ``converted_amount`` is shown rounded by ``present_amount`` (12
        decimal places, plain notation) because an exact repeating conversion has no end;
        ``co2e_kg`` was computed from the exact value, not from this. The ``input`` echo leaves
        out ``currency`` unless the amount was money (method ``spend``, or ``supplier_specific``
        computed with a spend factor): elsewhere it is only the default.
        """
        echo = self.input.as_dict()
        if (self.basis or self.method) != Method.SPEND:
            echo.pop("currency", None)
        return {
            "co2e_kg": str(self.co2e_kg),
            "biogenic_co2_kg": _optional_str(self.biogenic_co2_kg),
            "gases": {gas: str(value) for gas, value in self.gases.items()},
            "factor": self.factor_dict(),
            "method": self.method,
            "category": self.category,
            "converted_amount": None if self.converted_amount is None else present_amount(self.converted_amount),
            "conversion": None if self.conversion is None else self.conversion.as_dict(),
            "data_quality": self.data_quality.as_dict(),
            "fallbacks": [n.as_dict() for n in self.fallbacks],
            "warnings": [n.as_dict() for n in self.warnings],
            "input": echo,
        }


def _amount_text(amount: Decimal) -> str:
    """``amount`` with ``AMOUNT_PLACES`` decimals (exact: a stored amount has no more); more places are kept."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent <= AMOUNT_PLACES:
        return format(amount.quantize(AMOUNT_QUANTUM), "f")
    return format(amount, "f")


def _optional_str(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class CalculationError(Exception):
    """Bad input or missing reference data; ``errors`` maps an input field name to messages.

    The API turns this into a 400 whose body names the field, so every raise must name one.
    """

    def __init__(self, errors: dict[str, list[str]] | None = None, *, field: str = "", message: str = ""):
        if errors is None:
            errors = {field or "non_field_errors": [message]}
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
