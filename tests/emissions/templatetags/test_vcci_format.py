"""emissions.templatetags.vcci_format: figures rounded for people."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.templatetags.vcci_format import kg, percent, tonnes


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1234567.891234"), "1,234,568 kg"),
        (Decimal("10.5"), "11 kg"),  # half up, as people round
        (Decimal("9.995"), "10.00 kg"),
        (Decimal("3.14159"), "3.14 kg"),
        (Decimal("0"), "0.00 kg"),
        ("2.5", "2.50 kg"),  # the API's decimal strings
        (None, ""),
        ("not a number", ""),
    ],
)
def test_kg(value: object, shown: str) -> None:
    assert kg(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("98123.456789012", "98,123 t"),
        ("100", "100 t"),
        ("99.95", "100.0 t"),
        ("12.34", "12.3 t"),
        ("0.012345", "0.012 t"),
        ("", ""),
    ],
)
def test_tonnes(value: str, shown: str) -> None:
    assert tonnes(value) == shown


def test_percent() -> None:
    assert (percent("12.345"), percent("100.00"), percent(None)) == ("12.3 %", "100.0 %", "")
