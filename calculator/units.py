"""Units through pint, with Decimal magnitudes so no float ever enters a result.

Factor units are stored as pint expressions (``kWh``, ``L``, ``t*km``, ``passenger*km``,
``room*night``, ``USD``). Publishers' wording ("litres", "tonne.km", "kWh (Net CV)") is
mapped onto those expressions by ``publisher_unit``.
"""

from __future__ import annotations

from decimal import Decimal, getcontext, localcontext
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


class UnitError(ValueError):
    """A unit string that is unknown, or incompatible with the unit it must convert to."""


@lru_cache(maxsize=1024)
def parse_unit(expression: str) -> pint.Unit:
    """Parse a unit expression; ``UnitError`` names the text that was not understood."""
    text = expression.strip()
    if not text:
        raise UnitError("A unit is required.")
    mapped = PUBLISHER_UNITS.get(text.lower(), text)
    try:
        return ureg.parse_units(mapped)
    except (
        pint.errors.UndefinedUnitError,
        pint.errors.DefinitionSyntaxError,
        AttributeError,
        TypeError,
        ValueError,
        AssertionError,
    ) as exc:
        raise UnitError(f"Unknown unit '{expression}'.") from exc


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
        magnitude = Decimal(ureg.Quantity(Decimal(1), unit).to_base_units().magnitude)
        ctx.prec = BASE_FACTOR_DIGITS
        return (+magnitude).normalize()  # unary plus rounds to the context precision


def convert(amount: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """``amount`` in ``from_unit`` expressed in ``to_unit``, exactly as Decimal allows.

    Computed as ``amount x size(from) / size(to)`` (multiplication first), so that, e.g.,
    3.6 GJ is exactly 1000 kWh. The arithmetic uses the caller's decimal context.
    """
    source, target = parse_unit(from_unit), parse_unit(to_unit)
    if source.dimensionality != target.dimensionality:
        raise UnitError(f"Unit '{from_unit}' cannot be converted to '{to_unit}'.")
    if not (
        ureg.Quantity(Decimal(1), source)._is_multiplicative and ureg.Quantity(Decimal(1), target)._is_multiplicative
    ):
        # Offset units (temperatures) have no single factor; leave them to pint.
        return Decimal(ureg.Quantity(Decimal(amount), source).to(target).magnitude)
    result = Decimal(amount) * base_factor(from_unit) / base_factor(to_unit)
    # Integral results come back as plain integers (1000, not 1.000E+3).
    if result == result.to_integral_value() and result.adjusted() < getcontext().prec:
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
