"""perf.gcpause: the cyclic collector is off inside a pause and back on only when the last one ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from perf.gcpause import collection_paused, timed_passes, tune_for_serving


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_a_pause_turns_the_collector_off_and_back_on() -> None:
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_nested_and_concurrent_pauses_end_with_the_last() -> None:
    inside, release = threading.Event(), threading.Event()

    def other_batch() -> None:
        with collection_paused():
            inside.set()
            release.wait(5)

    with collection_paused():
        thread = threading.Thread(target=other_batch)
        thread.start()
        assert inside.wait(5)
    assert not gc.isenabled()  # the other batch is still running
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_an_error_still_ends_the_pause() -> None:
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()


@pytest.mark.django_db
def test_batch_endpoints_run_with_the_collector_paused(api, electricity_factor, monkeypatch) -> None:
    from emissions.api import views

    seen: list[bool] = []
    real_submit, real_run = views.activities_submit, views.calculations_run

    def submit(**kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return real_submit(**kwargs)

    def run(**kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return real_run(**kwargs)

    monkeypatch.setattr(views, "activities_submit", submit)
    monkeypatch.setattr(views, "calculations_run", run)
    item = {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": "1", "unit": "MWh"}
    stored = {**item, "period_start": "2025-01-01", "period_end": "2025-01-31"}
    assert api.post("/api/v1/activities/", [stored], format="json").status_code == 201
    assert api.post("/api/v1/calculate/batch/", {"items": [item]}, format="json").status_code == 200
    assert seen == [False, False]
    assert gc.isenabled()


@pytest.fixture
def collector_as_python_sets_it() -> Iterator[None]:
    """The process's thresholds and frozen objects back as they were, and no timing callback left behind."""
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    assert gc.get_freeze_count() == 0  # unfreezing below restores this process only if nothing was frozen before
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks
    list(timed_passes())  # the passes noted here are not a later test's to observe


def test_serving_freezes_what_is_loaded_and_keeps_pythons_thresholds(collector_as_python_sets_it) -> None:
    before = gc.get_threshold()
    loaded: object = type("Loaded", (), {})()  # a tracked object the application holds at start

    in_force = tune_for_serving([])

    assert in_force == before == gc.get_threshold()
    assert gc.get_freeze_count() > 0
    assert not any(obj is loaded for obj in gc.get_objects())  # frozen: no pass walks it


def test_serving_thresholds_replace_only_those_given(collector_as_python_sets_it) -> None:
    _, second, third = gc.get_threshold()
    assert tune_for_serving([5000], freeze=False) == (5000, second, third)
    assert tune_for_serving([800, 20, 40], freeze=False) == (800, 20, 40) == gc.get_threshold()
    assert gc.get_freeze_count() == 0


def test_every_pass_is_noted_with_its_generation(collector_as_python_sets_it) -> None:
    tune_for_serving([], freeze=False)
    tune_for_serving([], freeze=False)  # once per process is the rule; twice still notes each pass once
    list(timed_passes())

    gc.collect(2)
    gc.collect(0)

    noted = list(timed_passes())
    assert [generation for generation, _ in noted][-2:] == [2, 0]
    assert all(seconds >= 0 for _, seconds in noted)
    assert list(timed_passes()) == []  # each pass is given once


def _observed(generation: int) -> float:
    from perf.metrics import GC_PAUSE_SECONDS

    return sum(
        sample.value
        for metric in GC_PAUSE_SECONDS.collect()
        for sample in metric.samples
        if sample.name.endswith("_count") and sample.labels == {"generation": str(generation)}
    )


@pytest.mark.django_db
def test_passes_reach_the_histogram_after_a_request_never_during_the_pass(api, collector_as_python_sets_it) -> None:
    """A pass can start inside any allocation, with prometheus_client's lock held by the same greenlet: the callback
    only notes it, and the request middleware observes it (an earlier callback that observed it hung a worker)."""
    tune_for_serving([], freeze=False)
    api.get("/healthz")
    before = _observed(2)

    gc.collect(2)
    assert _observed(2) == before  # noted, not observed: the pass itself touched no metric

    api.get("/healthz")
    assert _observed(2) == before + 1
