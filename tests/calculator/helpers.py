"""Small builders shared by the calculator tests."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from calculator.types import CalculationInput

# The smallest valid input; tests override only the fields they exercise.
_BASE_INPUT = CalculationInput(category=1, method="activity", amount=Decimal("1"), unit="kWh")


def make_input(**overrides: Any) -> CalculationInput:
    return dataclasses.replace(_BASE_INPUT, **overrides)
