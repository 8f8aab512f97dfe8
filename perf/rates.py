"""Request rates as DRF writes them (``100/min``), parsed without Django: the settings check them at start-up."""

from __future__ import annotations

import functools

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
OFF = ("", "off", "none")


@functools.lru_cache(maxsize=64)
def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"100/min"`` -> ``(100, 60)``: DRF's syntax (the period by its first letter, ``s``, ``m``, ``h`` or ``d``, as
    ``SimpleRateThrottle.parse_rate`` reads it); None for no limit (None, ``off``). ``ValueError`` names the syntax."""
    if rate is None or rate.strip().lower() in OFF:
        return None
    number, _, period = rate.strip().partition("/")
    try:
        requests, seconds = int(number), PERIODS[period.strip()[:1]]
    except (ValueError, KeyError):
        raise ValueError(f"A rate is <requests>/<s|min|hour|day> (100/min) or off; got {rate!r}.") from None
    if requests < 0:
        raise ValueError(f"A rate's number of requests cannot be negative; got {rate!r}.")
    return requests, seconds
