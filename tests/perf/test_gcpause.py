"""perf.gcpause: the cyclic collector is off inside a pause and back on only when the last one ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from perf.gcpause import collection_paused


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
