"""Figures for people: kg and tonnes CO2e rounded, with thousands separators. The exports and the API keep the exact
figures (nine decimals of tonnes); the admin's pages show these, with the exact figure in the element's title."""

from __future__ import annotations

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


@register.filter
def kg(value: Any) -> str:
    """kg for people: whole kg (two decimals below 10 kg), e.g. ``12,346 kg``; empty for no figure."""
    number = _decimal(value)
    if number is None:
        return ""
    return f"{_rounded(number, 2 if abs(number) < 10 else 0)} kg"


@register.filter
def tonnes(value: Any) -> str:
    """Tonnes for people: whole tonnes from 100 t, one decimal from 1 t, three below, e.g. ``1,234 t``."""
    number = _decimal(value)
    if number is None:
        return ""
    places = 0 if abs(number) >= 100 else 1 if abs(number) >= 1 else 3
    return f"{_rounded(number, places)} t"


@register.filter
def percent(value: Any) -> str:
    """A share for people, one decimal, e.g. ``12.3 %``."""
    number = _decimal(value)
    if number is None:
        return ""
    return f"{_rounded(number, 1)} %"
