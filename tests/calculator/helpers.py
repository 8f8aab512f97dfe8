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


def freight_input(**overrides: Any) -> CalculationInput:
    """A category 4 distance input for the ``desnz:freight_hgv`` factor given as mass x distance (no amount/unit)."""
    return make_input(
        method="distance", category=4, activity="desnz:freight_hgv", amount=Decimal("0"), unit="", **overrides
    )
