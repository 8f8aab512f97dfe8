"""Units through pint, with Decimal magnitudes so no float ever enters a result.

Factor units are stored as pint expressions (``kWh``, ``L``, ``t*km``, ``passenger*km``,
``room*night``, ``USD``). Publishers' wording ("litres", "tonne.km", "kWh (Net CV)") is
mapped onto those expressions by ``publisher_unit``.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

import pint

ureg = pint.UnitRegistry(non_int_type=Decimal, autoconvert_offset_to_baseunit=True)
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
    "usd": "USD",
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
    except (pint.errors.UndefinedUnitError, pint.errors.DefinitionSyntaxError, AttributeError, TypeError,
            ValueError, AssertionError) as exc:
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


def convert(amount: Decimal, from_unit: str, to_unit: str) -> Decimal:
    """``amount`` in ``from_unit`` expressed in ``to_unit``, exactly as Decimal allows."""
    source, target = parse_unit(from_unit), parse_unit(to_unit)
    if source.dimensionality != target.dimensionality:
        raise UnitError(f"Unit '{from_unit}' cannot be converted to '{to_unit}'.")
    magnitude = ureg.Quantity(Decimal(amount), source).to(target).magnitude
    return Decimal(magnitude)
