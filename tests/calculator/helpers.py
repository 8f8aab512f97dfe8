"""Small builders shared by the calculator tests."""

from __future__ import annotations

from decimal import Decimal

from calculator.types import CalculationInput


def make_input(**kwargs) -> CalculationInput:
    values = {"category": 1, "method": "activity", "amount": Decimal("1"), "unit": "kWh"}
    values.update(kwargs)
    return CalculationInput(**values)
