"""The calculation rules every layer shares, each stated once.

The API's serializers, the filters, the reference-data loaders and the database columns read
these values instead of keeping their own copies, so a rule cannot drift between them.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum


class Method(StrEnum):
    """How an activity is turned into kg CO2e (GHG Protocol Scope 3 calculation methods)."""

    SPEND = "spend"
    ACTIVITY = "activity"
    DISTANCE = "distance"
    SUPPLIER_SPECIFIC = "supplier_specific"


METHODS = frozenset(Method)

# The publishers a factor can come from (``FactorDataset.source``); a ``source`` pin names one.
SOURCES = ("epa_supply_chain", "desnz", "epa_hub", "ipcc_gwp", "supplier")

# Gas factors (``gwp:<species>``, kg CO2e per kg of gas) come from the IPCC GWP tables, one dataset per
# assessment report (dataset_version SAR, TAR, AR4, AR5, AR6). The factor datasets (DESNZ 2025, both EPA
# sets) are on AR5 GWP-100, so a gas factor without a pinned dataset_version uses AR5 too, and a gas
# factor on another set is flagged: CO2e on two GWP sets does not add up to one consistent inventory.
GWP_SOURCE = "ipcc_gwp"
DATASET_GWP_SET = "AR5"

# The region of a factor that applies anywhere (the fallback before another country's factor).
GLOBAL = "GLOBAL"

# Scope 3 categories of the GHG Protocol.
CATEGORY_MIN, CATEGORY_MAX = 1, 15

# Every year the calculator accepts: activity years, factor years, spend years and reference-table
# years. CPI-U starts in 1913; nothing VCCI calculates is dated before 1900 or after 2100.
YEAR_MIN, YEAR_MAX = 1900, 2100

# ISO 4217 alphabetic code: three capital letters.
CURRENCY_PATTERN = r"^[A-Z]{3}$"
CURRENCY_RE = re.compile(CURRENCY_PATTERN)
# Spend factors are priced in USD when a row names no currency of its own.
DEFAULT_CURRENCY = "USD"

# Reference sets: named tables of exchange rates and of price indexes. A spend calculation uses the sets it
# names, else these: the shipped ECB annual-average rates and US CPI-U (loaded by ``import_factors``). A user's
# own set (budget rates, a sector price index) is loaded under its own name and named by the calculation.
DEFAULT_EXCHANGE_RATE_SET = "ecb"
DEFAULT_PRICE_INDEX_SET = "cpi-u"
SET_NAME_MAX_LENGTH = 32
SET_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
SET_NAME_RE = re.compile(SET_NAME_PATTERN)

# Stored emissions (kg CO2e, and each gas): 24 digits, 6 after the point (milligrams, below any
# factor's precision). Results are rounded once, half-even, to this quantum.
CO2E_MAX_DIGITS, CO2E_PLACES = 24, 6
CO2E_QUANTUM = Decimal(1).scaleb(-CO2E_PLACES)
# The smallest value a CO2e column cannot hold.
CO2E_LIMIT = Decimal(10) ** (CO2E_MAX_DIGITS - CO2E_PLACES)

# Tonnes of CO2e as presented (``co2e_t``): the kilograms / 1000, which is exact at 3 more places.
CO2E_T_PLACES = CO2E_PLACES + 3
CO2E_T_QUANTUM = Decimal(1).scaleb(-CO2E_T_PLACES)

# Stored activity quantities (amount, mass, distance): 24 digits, 6 after the point. A mass x distance
# quantity is stored as its product rounded once to these places, and must fit the column.
AMOUNT_MAX_DIGITS, AMOUNT_PLACES = 24, 6
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_MAX_DIGITS - AMOUNT_PLACES)

# Decimal places of ``converted_amount`` as presented (an exact repeating conversion has no end).
CONVERTED_AMOUNT_PLACES = 12

# Amounts larger than this are refused before any arithmetic: no stored quantity comes near it, and
# exact rational arithmetic on 10**999999 would cost the request its CPU.
AMOUNT_MAGNITUDE_LIMIT = 60


def is_currency_code(value: str) -> bool:
    return bool(CURRENCY_RE.match(value))


def is_set_name(value: str) -> bool:
    """A reference set's name: lower-case letters, digits, ``.``, ``_``, ``-``, at most 32 characters."""
    return len(value) <= SET_NAME_MAX_LENGTH and SET_NAME_RE.fullmatch(value) is not None


def is_year(value: object) -> bool:
    """True for an ``int`` (not a bool) in ``YEAR_MIN..YEAR_MAX``."""
    return isinstance(value, int) and not isinstance(value, bool) and YEAR_MIN <= value <= YEAR_MAX
