"""perf.rates: DRF's rate syntax, read without Django."""

from __future__ import annotations

import pytest

from perf.rates import parse_rate


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("100/min", (100, 60)),
        ("5/s", (5, 1)),
        ("2/hour", (2, 3600)),
        ("1/day", (1, 86400)),
        ("off", None),
        (None, None),
    ],
)
def test_rates_are_drf_syntax_or_off(rate, parsed) -> None:
    assert parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["100", "100/week", "many/min", "-1/min"])
def test_a_bad_rate_names_the_syntax(rate) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(rate)
