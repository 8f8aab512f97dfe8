"""The JSON shape of a calculation result, defined once.

``CalculationResult.as_dict()`` (and the ``as_dict`` of its parts) return these types, so mypy
holds the dictionaries they build to exactly these keys. The calculate endpoints answer with
``as_dict()`` (the batch endpoint once per item), and the API's schema serializers
(``emissions.api.serializers.CalculationResultSerializer`` and its nested serializers) are tested
to declare these keys in this order. A key added here is added everywhere or fails a check.
"""

from __future__ import annotations

from typing import Any, TypedDict


class NoteDict(TypedDict):
    """A fallback or a warning: machine-readable ``code`` and a sentence."""

    code: str
    detail: str


class DataQualityDict(TypedDict):
    """The five GHG Protocol indicators (1 very good .. 5 very poor) and their mean, one decimal, as a string."""

    technology: int
    time: int
    geography: int
    completeness: int
    reliability: int
    score: str


class FactorRefDict(TypedDict):
    """The factor a result used; ``co2e_per_unit`` as a decimal string."""

    id: Any
    source: str
    dataset_version: str
    activity: str
    name: str
    region: str
    year: int
    unit: str
    co2e_per_unit: str
    biogenic_co2_per_unit: str | None


class ReferenceRowDict(TypedDict):
    """A stored exchange-rate row (1 currency = value quote_currency) or price-index row (quote_currency None)."""

    currency: str
    quote_currency: str | None
    year: int
    value: str
    source: str


class ExchangeRateUseDict(TypedDict):
    """The rate applied (``value``, 12 places at most) and the rows it came from (``how``: direct, inverse, cross)."""

    set: str
    year: int
    value: str
    how: str
    rows: list[ReferenceRowDict]


# The index rows of the spend year (``from``) and of the factor's price year (``to``); functional syntax because
# ``from`` is a keyword.
PriceIndexUseDict = TypedDict("PriceIndexUseDict", {"set": str, "from": ReferenceRowDict, "to": ReferenceRowDict})


class ConversionDict(TypedDict):
    """How a spend amount reached the factor's currency and price year; ``None`` parts were not needed."""

    amount: str
    currency: str
    spend_year: int
    factor_currency: str
    price_year: int
    exchange_rate: ExchangeRateUseDict | None
    price_index: PriceIndexUseDict | None


class CalculationResultDict(TypedDict):
    """One calculation's result as the API returns it; decimals as strings.

    ``converted_amount`` is the amount in the factor's unit (None only for a result built without
    one); ``conversion`` says how a spend amount got there (None for other bases); ``input`` echoes the
    input with empty values left out.
    """

    co2e_kg: str
    biogenic_co2_kg: str | None
    gases: dict[str, str]
    factor: FactorRefDict
    method: str
    category: int
    converted_amount: str | None
    conversion: ConversionDict | None
    data_quality: DataQualityDict
    fallbacks: list[NoteDict]
    warnings: list[NoteDict]
    input: dict[str, Any]
