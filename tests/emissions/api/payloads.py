"""Request bodies shared by the API tests."""

from __future__ import annotations

from typing import Any


def electricity_input(**overrides: Any) -> dict[str, Any]:
    """A valid calculate/activity payload for 1 MWh of UK electricity."""
    data = {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": "1", "unit": "MWh"}
    data.update(overrides)
    return data


def activity_input(**overrides: Any) -> dict[str, Any]:
    """A valid activity payload (electricity input plus a period)."""
    data = electricity_input(period_start="2025-01-01", period_end="2025-01-31")
    data.update(overrides)
    return data
