"""perf.looplag: how late a gevent worker's loop wakes a greenlet (vcci_event_loop_lag_seconds); a real gevent worker's
measurements reaching /metrics are in tests/vcci/test_gunicorn_serving.py."""

from __future__ import annotations

import time

import gevent
import pytest
from prometheus_client import REGISTRY

from perf import looplag


class Clock:
    """A monotonic clock that a fake sleep moves: by the interval asked plus the loop's lateness of that tick."""

    def __init__(self, late: list[float]) -> None:
        self.now = 100.0
        self.late = list(late)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + self.late.pop(0)


def test_each_tick_observes_how_late_the_sleeper_was_woken() -> None:
    clock = Clock([0.0, 0.25, 0.004])
    seen: list[float] = []

    looplag.run(0.1, seen.append, clock=clock, sleep=clock.sleep, ticks=3)

    assert seen == pytest.approx([0.0, 0.25, 0.004])


def test_a_clock_that_reads_early_is_no_negative_lag() -> None:
    clock = Clock([-0.001])

    seen: list[float] = []
    looplag.run(0.1, seen.append, clock=clock, sleep=clock.sleep, ticks=1)

    assert seen == [0.0]


def test_off_starts_nothing() -> None:
    assert looplag.start(0) is None


def _ticks(role: str) -> float:
    return REGISTRY.get_sample_value("vcci_event_loop_lag_seconds_count", {"role": role}) or 0.0


def test_a_started_monitor_measures_the_loop_it_runs_in_and_a_busy_greenlet_shows() -> None:
    before = _ticks("main")
    before_sum = REGISTRY.get_sample_value("vcci_event_loop_lag_seconds_sum", {"role": "main"}) or 0.0
    monitor = looplag.start(0.01)
    try:
        deadline = time.monotonic() + 10
        while _ticks("main") - before < 3:  # this greenlet waits: the monitor runs
            assert time.monotonic() < deadline, "the monitor did not run"
            gevent.sleep(0.02)
        gevent.sleep(0)  # the monitor is asleep in its interval now
        busy_until = time.monotonic() + 0.2
        while time.monotonic() < busy_until:  # holds the loop, as a CPU-bound request does
            pass
        gevent.sleep(0.05)
    finally:
        monitor.kill()
    lag_sum = (REGISTRY.get_sample_value("vcci_event_loop_lag_seconds_sum", {"role": "main"}) or 0.0) - before_sum
    assert lag_sum >= 0.15  # the tick due during the busy 0.2 s was woken that much late
