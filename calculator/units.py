"""Units through pint, with Decimal magnitudes so no float ever enters a result.

Factor units are stored as pint expressions (``kWh``, ``L``, ``t*km``, ``passenger*km``,
``room*night``, ``USD``). Publishers' wording ("litres", "tonne.km", "kWh (Net CV)") is
mapped onto those expressions by ``publisher_unit``.
"""

from __future__ import annotations

import re
from decimal import Decimal, getcontext, localcontext
from fractions import Fraction
from functools import lru_cache

import pint

ureg: pint.UnitRegistry[Decimal] = pint.UnitRegistry(non_int_type=Decimal, autoconvert_offset_to_baseunit=True)
# Counting dimensions that travel and accommodation factors are expressed in. Each is its
# own base dimension so that, e.g., passenger.km never converts to tonne.km.
ureg.define("passenger = [passenger] = pkm_passenger")
ureg.define("vehicle = [vehicle]")
ureg.define("room = [room]")
ureg.define("night = [night]")
ureg.define("FTE = [full_time_equivalent]")
# Money is its own dimension: conversion between currencies goes through the exchange-rate
# tables, never through the units library.
ureg.define("USD = [currency_usd]")

# Publisher unit wording -> pint expression. Keys are compared lower-cased and stripped.
PUBLISHER_UNITS: dict[str, str] = {
    "kwh": "kWh",
    "kwh (net cv)": "kWh",
    "kwh (gross cv)": "kWh",
    "mwh": "MWh",
    "gj": "GJ",
    "litres": "L",
    "litre": "L",
    "cubic metres": "m**3",
    "cubic metre": "m**3",
    "tonnes": "t",
    "tonne": "t",
    "kg": "kg",
    "km": "km",
    "miles": "mile",
    "mile": "mile",
    "passenger.km": "passenger*km",
    "passenger km": "passenger*km",
    "passenger.mile": "passenger*mile",
    "passenger-mile": "passenger*mile",
    "tonne.km": "t*km",
    "tonne km": "t*km",
    "ton-mile": "short_ton*mile",
    "vehicle-mile": "vehicle*mile",
    "vehicle.km": "vehicle*km",
    "room per night": "room*night",
    "gallon": "gallon",
    "scf": "ft**3",
    "short ton": "short_ton",
    "mmbtu": "MMBtu",
    "million litres": "megaliter",
    # DESNZ homeworking factors are per full-time-equivalent working hour.
    "per fte working hour": "FTE*hour",
    "usd": "USD",
    # Common spellings seen in activity uploads (not publisher wording, but the same idea).
    "us gallon": "gallon",
    "us gallons": "gallon",
    "us_gallon": "gallon",
    "gallons": "gallon",
    "liters": "L",
    "liter": "L",
    "m3": "m**3",
    "lbs": "lb",
    "pounds": "lb",
    "t.km": "t*km",
    "tkm": "t*km",
    "tonne-km": "t*km",
    "passenger-km": "passenger*km",
    "pkm": "passenger*km",
    "vehicle-km": "vehicle*km",
    "vkm": "vehicle*km",
    "ton-miles": "short_ton*mile",
    "ton.mile": "short_ton*mile",
    "vehicle.mile": "vehicle*mile",
}
ureg.define("MMBtu = 1e6 * Btu")
# Unambiguous spellings offered in place of the ambiguous ones below. pint's ``therm`` is the EC therm
# (105.5056 MJ), its ``US_therm`` the US one (105.4804 MJ); its ``barrel`` is the US liquid barrel.
ureg.define("therm_ec = therm")
ureg.define("therm_us = US_therm")
ureg.define("US_liquid_barrel = barrel")

# Words a user may type that name more than one unit: read silently, each would understate or overstate
# by a factor the user never chose (``mt`` is a millitonne to pint and a metric ton to many ERPs: 1000x).
# They are refused in activity input, with the unambiguous spellings listed. Compared lower-cased, a plural
# ("tons", "therms") as its singular, except the exact spellings in ``UNAMBIGUOUS_SPELLINGS``. Stored factor
# units are our importers' own pint expressions (``gallon`` there is pint's US gallon) and are not checked.
_TONNE_ALTERNATIVES = ("t", "tonne", "short_ton", "long_ton")
_GALLON_ALTERNATIVES = ("US_gallon", "imperial_gallon")
AMBIGUOUS_UNITS: dict[str, tuple[str, ...]] = {
    "mt": (*_TONNE_ALTERNATIVES, "Mt (megatonne)"),
    "ton": _TONNE_ALTERNATIVES,
    "therm": ("therm_us", "therm_ec"),
    "gallon": _GALLON_ALTERNATIVES,
    "gal": _GALLON_ALTERNATIVES,
    "barrel": ("oil_barrel", "US_liquid_barrel"),
    "bbl": ("oil_barrel", "US_liquid_barrel"),
    "hundredweight": ("short_hundredweight", "long_hundredweight"),
    "cwt": ("short_hundredweight", "long_hundredweight"),
    "pint": ("US_pint", "imperial_pint"),
    "quart": ("US_liquid_quart", "imperial_quart"),
}
# Exact spellings that only look like an ambiguous word: ``Mt`` is the SI megatonne.
UNAMBIGUOUS_SPELLINGS = frozenset({"Mt"})
# A word right after one of these says which system it is in: "US gallon", "imperial gallons".
_SYSTEM_WORDS = frozenset({"us", "uk", "imperial"})


class UnitError(ValueError):
    """A unit string that is unknown, or incompatible with the unit it must convert to."""


class AmbiguousUnitError(UnitError):
    """A unit spelling that names more than one unit; ``alternatives`` are the unambiguous spellings."""

    def __init__(self, expression: str, word: str, alternatives: tuple[str, ...]) -> None:
        self.word, self.alternatives = word, alternatives
        super().__init__(
            f"Unit '{expression}' is ambiguous: '{word}' can mean different units. "
            f"Write one of: {', '.join(alternatives)}."
        )


def check_unambiguous(expression: str) -> None:
    """Raise ``AmbiguousUnitError`` when a word of ``expression`` (typed by a user) names more than one unit."""
    words = re.findall(r"[^\W\d]+", expression)
    for previous, word in zip(["", *words], words, strict=False):
        if word in UNAMBIGUOUS_SPELLINGS or previous.lower() in _SYSTEM_WORDS:
            continue
        key = word.lower()
        alternatives = AMBIGUOUS_UNITS.get(key) or AMBIGUOUS_UNITS.get(key.removesuffix("s"))
        if alternatives is not None:
            raise AmbiguousUnitError(expression, word, alternatives)


def _unknown(expression: str) -> UnitError:
    return UnitError(f"Unknown unit '{expression}'.")


def _pint_parse(text: str, label: str) -> pint.Unit:
    """pint's reading of ``text`` exactly as written; ``UnitError`` naming ``label`` on any failure.

    pint's parser tokenizes and evaluates the text as an arithmetic expression, so malformed
    input fails in many ways besides its own errors: ``tokenize.TokenError`` ("((", "kWh)"),
    ``decimal.DivisionByZero`` ("kWh/0"), ``decimal.Overflow``, ``KeyError`` ("kWh**0"),
    ``TypeError`` ("ton-mile"), ``RecursionError``... Whatever the failure, for the caller it means
    one thing, a unit we do not understand, so everything is caught at this boundary.
    """
    try:
        unit = ureg.parse_units(text)
        size = ureg.Quantity(Decimal(1), unit).to_base_units().magnitude
        powers = list(unit.dimensionality.values())
    except Exception as exc:  # see the docstring: every parser failure is an unknown unit
        raise _unknown(label) from exc
    if unit.dimensionless:
        raise UnitError(f"Unknown unit '{label}': a unit must measure something, such as kWh, kg or km.")
    if not isinstance(size, Decimal) or not size.is_finite() or size == 0:
        raise _unknown(label)
    # Whole powers only (no kWh**0.5, no complex exponents): ``dimensions`` relies on it.
    if any(isinstance(power, complex) or power != int(power) for power in powers):
        raise _unknown(label)
    return unit


# Case variants of a word are tried only up to this many letters (2**12 parses); longer words
# are treated as ambiguous, so their aliases need the exact pint spelling.
_MAX_VARIANT_LETTERS = 12


@lru_cache(maxsize=256)
def _word_is_case_ambiguous(word: str) -> bool:
    """True when two spellings of ``word`` differing only in letter case are units of one dimension
    but different sizes (``mWh`` / ``MWh``, ``mt`` / ``Mt``): its case-insensitive reading is a guess."""
    letters = [i for i, char in enumerate(word) if char.isalpha()]
    if len(letters) > _MAX_VARIANT_LETTERS:
        return True
    sizes: dict[str, set[Decimal]] = {}
    for mask in range(2 ** len(letters)):
        chars = list(word.lower())
        for bit, index in enumerate(letters):
            if mask >> bit & 1:
                chars[index] = chars[index].upper()
        spelling = "".join(chars)
        try:
            unit = _pint_parse(spelling, spelling)
        except UnitError:
            continue
        quantity = ureg.Quantity(Decimal(1), unit).to_base_units()
        sizes.setdefault(str(quantity.dimensionality), set()).add(quantity.magnitude)
    return any(len(found) > 1 for found in sizes.values())


@lru_cache(maxsize=256)
def _user_alias(key: str) -> str | None:
    """The ``PUBLISHER_UNITS`` expression for lower-cased user input ``key``, unless a word of it is case-ambiguous.

    ``mwh`` has no user alias: typed by a user it could be milli- or megawatt-hours. ``kwh``,
    ``litres``, ``tonnes``, ``m3``, ``passenger.km``, ``us gallon``... are unambiguous in any case.
    """
    mapped = PUBLISHER_UNITS.get(key)
    if mapped is None:
        return None
    if any(_word_is_case_ambiguous(word) for word in re.findall(r"[^\W\d]+", key)):
        return None
    return mapped


@lru_cache(maxsize=1024)
def parse_unit(expression: str) -> pint.Unit:
    """Parse a unit typed by a user or stored on a factor; ``UnitError`` names the text not understood.

    Rules, so that no alias ever changes what an SI prefix means (``mWh`` is a milliwatt-hour):

    1. The text is read by pint exactly as written (pint is case-sensitive: ``mWh`` != ``MWh``).
    2. Only when pint cannot read it, or reads it as a different kind of quantity than the alias
       means (``room per night`` is room/night to pint, ``us gallon`` is microsecond x gallon), is
       it looked up, case-insensitively, among the aliases of ``PUBLISHER_UNITS`` -- and only among
       those none of whose words is case-ambiguous (see ``_word_is_case_ambiguous``): ``KWH`` and
       ``Litres`` are accepted, ``mwh`` is not.

    Units must measure something and have a finite, non-zero size: ``1``, ``percent``, ``kWh/0``
    and ``kWh**0`` are all unknown units. Importers map publisher wording with ``publisher_unit``.
    """
    text = expression.strip()
    if not text:
        raise UnitError("A unit is required.")
    written: pint.Unit | None = None
    error: UnitError | None = None
    try:
        written = _pint_parse(text, expression)
    except UnitError as exc:
        error = exc
    alias = _user_alias(text.lower())
    if alias is not None:
        aliased = _pint_parse(alias, expression)
        if written is None or written.dimensionality != aliased.dimensionality:
            return aliased
    if error is not None:
        if text.lower() in PUBLISHER_UNITS:
            raise UnitError(
                f"Unknown unit '{expression}': letter case sets its SI prefix (mWh = milliwatt-hour, "
                "MWh = megawatt-hour); write the unit exactly."
            ) from error
        raise error
    assert written is not None  # one of the two is always set
    return written


def publisher_unit(label: str) -> str:
    """The pint expression for a publisher's unit wording; ``UnitError`` when it has none."""
    mapped = PUBLISHER_UNITS.get(label.strip().lower())
    if mapped is None:
        raise UnitError(f"No unit mapping for publisher unit '{label}'.")
    parse_unit(mapped)
    return mapped


def is_compatible(a: str, b: str) -> bool:
    return parse_unit(a).dimensionality == parse_unit(b).dimensionality


# pint evaluates its definition file with Decimal arithmetic at the default 28-digit precision,
# which leaves noise in the last digits (1 gallon came out as 3.785411784000000000000000000908 L).
# Real unit definitions are short exact decimals (0.3048 m, 0.45359237 kg, 231 in³) or exact
# powers of ten, so rounding each unit's size in base units to 24 significant digits restores them.
BASE_FACTOR_DIGITS = 24


@lru_cache(maxsize=1024)
def base_factor(expression: str) -> Decimal:
    """Size of one ``expression`` in SI base units (e.g. ``kWh`` -> 3600000), rounded as explained above."""
    unit = parse_unit(expression)
    with localcontext() as ctx:
        ctx.prec = 60
        try:
            magnitude = Decimal(ureg.Quantity(Decimal(1), unit).to_base_units().magnitude)
        except Exception as exc:  # as in ``_pint_parse``: any pint/decimal failure means an unusable unit
            raise _unknown(expression) from exc
        ctx.prec = BASE_FACTOR_DIGITS
        return (+magnitude).normalize()  # unary plus rounds to the context precision


def _by_factor(from_unit: str, to_unit: str) -> bool:
    """Whether ``from_unit`` converts to ``to_unit`` by a factor (False for offset units such as temperatures).

    ``UnitError`` when either is unknown or they measure different things.
    """
    source, target = parse_unit(from_unit), parse_unit(to_unit)
    if source.dimensionality != target.dimensionality:
        raise UnitError(f"Unit '{from_unit}' cannot be converted to '{to_unit}'.")
    return bool(
        ureg.Quantity(Decimal(1), source)._is_multiplicative and ureg.Quantity(Decimal(1), target)._is_multiplicative
    )


@lru_cache(maxsize=1024)
def ratio(from_unit: str, to_unit: str) -> Fraction:
    """How many ``to_unit`` one ``from_unit`` is, as an exact fraction; ``UnitError`` when they don't convert.

    Exact because each unit's size is an exact decimal (see ``base_factor``): a conversion multiplied
    by this loses nothing, and the one rounding is left to the caller. Offset units (temperatures)
    have no ratio and are refused.
    """
    if not _by_factor(from_unit, to_unit):
        raise UnitError(f"Unit '{from_unit}' cannot be converted to '{to_unit}' by a factor.")
    return Fraction(base_factor(from_unit)) / Fraction(base_factor(to_unit))


def convert(amount: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """``amount`` in ``from_unit`` expressed in ``to_unit``, exactly as Decimal allows.

    Computed as ``amount x size(from) / size(to)`` (multiplication first), so that, e.g.,
    3.6 GJ is exactly 1000 kWh. The arithmetic uses the caller's decimal context.
    """
    if not _by_factor(from_unit, to_unit):
        # Offset units (temperatures) have no single factor; leave them to pint.
        try:
            quantity = ureg.Quantity(Decimal(amount), parse_unit(from_unit))
            return Decimal(quantity.to(parse_unit(to_unit)).magnitude)
        except Exception as exc:  # as in ``_pint_parse``: whatever pint raises, the conversion is impossible
            raise UnitError(f"Unit '{from_unit}' cannot be converted to '{to_unit}'.") from exc
    result = Decimal(amount) * base_factor(from_unit) / base_factor(to_unit)
    # Integral results come back as plain integers (1000, not 1.000E+3). (A result can be infinite
    # only when the caller's context does not trap Overflow; it is returned as is.)
    if result.is_finite() and result == result.to_integral_value() and result.adjusted() < getcontext().prec:
        return result.quantize(Decimal(1))
    return result


def dimensions(expression: str) -> dict[str, int]:
    """The unit's dimensionality as plain ``{"[length]": 1, ...}``; ``UnitError`` when unknown."""
    result: dict[str, int] = {}
    for name, power in parse_unit(expression).dimensionality.items():
        # pint types exponents as any scalar, complex included; a dimension's exponent is always real.
        assert not isinstance(power, complex)
        result[name] = int(power)
    return result
