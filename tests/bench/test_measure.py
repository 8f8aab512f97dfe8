"""measure.measure: measurements, interleaved rounds, rolled-back calls."""

from __future__ import annotations

import pytest

from bench import measure
from emissions.models import Organization
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db


def test_interleaved_rounds_visit_every_function_in_turn():
    calls: list[str] = []

    def named(name: str):
        def fn() -> str:
            calls.append(name)
            return name

        return fn

    a, b = measure.measure_interleaved([named("a"), named("b")], runs=3)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert (len(a.samples), len(b.samples)) == (3, 3)
    assert (a.result, b.result) == ("a", "b")
    assert a.median >= 0 and b.median >= 0


def test_measure_counts_the_queries_of_the_first_timed_run():
    OrganizationFactory.create_batch(2)
    measurement = measure.measure(lambda: list(Organization.objects.all()), runs=2, warmup=False)
    assert measurement.queries == 1 and len(measurement.result) == 2


def test_runs_below_one_are_refused():
    with pytest.raises(ValueError, match="runs must be at least 1; got 0"):
        measure.measure_interleaved([lambda: None], runs=0)


def test_rolled_back_call_leaves_nothing():
    create = measure.rolled_back_call(lambda: OrganizationFactory.create())
    assert create().pk is not None
    assert not Organization.objects.exists()
