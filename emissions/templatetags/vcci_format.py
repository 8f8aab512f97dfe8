"""Figures for people: kg and tonnes CO2e rounded, with thousands separators. The exports and the API keep the exact
figures (nine decimals of tonnes); the admin's pages show these, with the exact figure in the element's title."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django import template

register = template.Library()


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None


def _rounded(value: Decimal, places: int) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,}"


def _figure(format_number: Callable[[Decimal], str]) -> Callable[[Any], str]:
    """A filter of ``format_number``: the value read as a Decimal, or an empty string for no figure."""

    @functools.wraps(format_number)
    def apply(value: Any) -> str:
        number = _decimal(value)
        return "" if number is None else format_number(number)

    return apply


@register.filter
@_figure
def kg(number: Decimal) -> str:
    """kg for people: whole kg (two decimals below 10 kg), e.g. ``12,346 kg``; empty for no figure."""
    return f"{_rounded(number, 2 if abs(number) < 10 else 0)} kg"


@register.filter
@_figure
def tonnes(number: Decimal) -> str:
    """Tonnes for people: whole tonnes from 100 t, one decimal from 1 t, three below, e.g. ``1,234 t``."""
    places = 0 if abs(number) >= 100 else 1 if abs(number) >= 1 else 3
    return f"{_rounded(number, places)} t"


@register.filter
@_figure
def percent(number: Decimal) -> str:
    """A share for people, one decimal, e.g. ``12.3 %``."""
    return f"{_rounded(number, 1)} %"
