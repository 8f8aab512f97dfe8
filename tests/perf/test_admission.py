"""perf.admission: bulk work admitted by slot, a bound on requests in flight, 503 + Retry-After on refusal and on an
exhausted database pool, and cooperative yields in long loops."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.lock
import pytest
from django.db import OperationalError
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client, RequestFactory
from django.views import View
from psycopg_pool import PoolTimeout

from perf import admission
from perf.admission import AdmissionMiddleware, cooperate, heavy, is_heavy
from perf.metrics import ADMISSION_REFUSED
from tests.helpers import Clock
from tests.perf.test_metrics import sample


@pytest.fixture(autouse=True)
def fresh_gate(admission_gate: Callable[..., None]) -> None:
    admission_gate(
        ADMISSION_MAX_IN_FLIGHT=256,
        ADMISSION_HEAVY_SLOTS=1,
        ADMISSION_HEAVY_WAIT=0,
        ADMISSION_QUEUE_WAIT=0,
        ADMISSION_RETRY_AFTER=3,
        # Refusals here come faster than a second apart with nothing served: the delay would grow (Backoff).
        ADMISSION_RETRY_AFTER_MAX=3,
        # Each refusal told the delay itself (the jittered offers have tests of their own).
        ADMISSION_RETRY_AFTER_JITTER=False,
    )


@heavy("post", min_body=100)
class Bulk(View):
    pass


@heavy("get")
class Export(View):
    pass


def refused(reason: str) -> float:
    return ADMISSION_REFUSED.labels(reason=reason)._value.get()


def assert_refusal(response: Any, reason: str) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "3"
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert json.loads(response.content) == {"detail": admission._MESSAGES[reason]}


rf = RequestFactory()


def test_is_heavy_follows_the_declared_methods_and_body_size():
    assert is_heavy(Export, "GET", rf.get("/export").META)
    assert not is_heavy(Export, "POST", rf.post("/export").META)
    assert not is_heavy(Bulk, "GET", rf.get("/bulk").META)
    assert not is_heavy(Bulk, "POST", rf.post("/bulk", data="x" * 99, content_type="application/json").META)
    assert is_heavy(Bulk, "POST", rf.post("/bulk", data="x" * 100, content_type="application/json").META)
    assert not is_heavy(View, "POST", rf.post("/plain", data="x" * 10_000, content_type="application/json").META)
    assert not is_heavy(None, "GET", rf.get("/").META)
    bad_length = rf.post("/bulk", data="x" * 200, content_type="application/json")
    bad_length.META["CONTENT_LENGTH"] = "many"
    assert not is_heavy(Bulk, "POST", bad_length.META)


def run_through(middleware: AdmissionMiddleware, request: Any, view_class: type[View]) -> Any:
    """What Django's handler does: process_view, then the view, inside the middleware's __call__."""
    view = view_class.as_view()

    def get_response(req: Any) -> Any:
        early = middleware.process_view(req, view, (), {})
        return early if early is not None else HttpResponse("done")

    middleware.get_response = get_response
    return middleware(request)


def test_a_heavy_request_without_a_free_slot_is_refused_and_counted():
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    slots = admission.gate().heavy_slots
    assert slots.acquire(blocking=False) is not None  # another bulk request holds the only slot
    before = refused(admission.HEAVY_BUSY)
    try:
        assert_refusal(run_through(middleware, rf.get("/export"), Export), admission.HEAVY_BUSY)
        # Reads and small writes never wait for bulk slots.
        assert run_through(middleware, rf.post("/bulk", data="{}", content_type="application/json"), Bulk).content == (
            b"done"
        )
    finally:
        slots.release()
    assert refused(admission.HEAVY_BUSY) == before + 1
    # The slot is free again: the same request is admitted, and gives its slot back when done.
    assert run_through(middleware, rf.get("/export"), Export).content == b"done"
    assert slots.acquire(blocking=False) is not None
    slots.release()
    assert admission.gate().in_flight == 0


def lane_clock() -> Clock:
    """A clock the test moves (``HeavyLane``'s ``clock``), from the real one's time: it can stand in for the clock of
    a lane already made (the gate's), which judges requests by when they started against when it was made."""
    return Clock(time.monotonic())


def taken(lane: admission.HeavyLane) -> float:
    started = lane.acquire(blocking=False)
    assert started is not None
    return started


def run_alone(lane: admission.HeavyLane, clock: Clock, seconds: float) -> None:
    """One bulk request through ``lane``, alone in it, that took ``seconds``."""
    started = taken(lane)
    clock.now += seconds
    lane.release(started)


def run_together(lane: admission.HeavyLane, clock: Clock, seconds: float) -> None:
    """Two bulk requests through ``lane`` at once, each taking ``seconds``."""
    first, second = taken(lane), taken(lane)
    clock.now += seconds
    lane.release(first)
    lane.release(second)


def test_slow_requests_sharing_the_heavy_lane_halve_its_limit_once_and_quick_ones_give_slots_back():
    clock = lane_clock()
    lane = admission.HeavyLane(4, target=2.0, clock=clock)
    assert lane.limit == 4
    run_together(lane, clock, 2.5)
    assert lane.limit == 2  # the second was admitted before the cut: one slow period halves it once
    run_together(lane, clock, 3.0)
    assert lane.limit == 1
    run_alone(lane, clock, 3.0)
    assert lane.limit == 1  # a request alone is not crowded: the limit stays where the last cut left it
    run_alone(lane, clock, 1.5)  # between half the target and the target: unchanged
    assert lane.limit == 1
    for expected in (2, 3, 4, 4):
        run_alone(lane, clock, 1.0)  # at most half the target: one more, up to the slots
        assert lane.limit == expected
    assert lane.running == 0


def test_a_slow_request_that_ran_alone_leaves_the_limit_one_that_overlapped_another_halves_it():
    clock = lane_clock()
    lane = admission.HeavyLane(2, target=1.0, clock=clock)
    run_alone(lane, clock, 5.0)  # large, not crowded: fewer at once would not have helped it
    assert lane.limit == 2
    slow, quick = taken(lane), taken(lane)
    clock.now += 0.2
    lane.release(quick)  # finished while the slow one ran
    clock.now += 4.0
    lane.release(slow)
    assert lane.limit == 1


def test_a_request_admitted_before_a_cut_cannot_cut_again_though_its_time_is_measured_from_later():
    clock = lane_clock()
    lane = admission.HeavyLane(4, target=1.0, clock=clock)
    first, second, third = taken(lane), taken(lane), taken(lane)
    clock.now += 2.0
    lane.release(first)
    assert lane.limit == 2
    sent = lane.now()  # the second's upload ended after the cut: its time is measured from then
    clock.now += 2.0
    lane.release(sent, admitted=second)
    assert lane.limit == 2  # admitted under the limit already cut
    lane.release(third)


def test_a_release_without_a_measurement_does_not_make_a_slow_request_look_crowded():
    clock = lane_clock()
    lane = admission.HeavyLane(2, target=1.0, clock=clock)
    slow = taken(lane)
    taken(lane)
    lane.release()  # a request that did no bulk work (refused further on): freed, not timed
    clock.now += 3.0
    lane.release(slow)
    assert lane.limit == 2


def test_a_waiter_takes_a_slot_the_lane_recovers_while_it_waits():
    lane = admission.HeavyLane(2, target=0.05)
    first, second = lane.acquire(), lane.acquire()
    threading.Event().wait(0.06)
    lane.release(first)
    lane.release(second)
    assert lane.limit == 1
    held = lane.acquire()
    got: list[float | None] = []
    waiter = threading.Thread(target=lambda: got.append(lane.acquire(timeout=5)))
    waiter.start()
    waiter.join(5)  # the slot held is never released: only the recovery (4 targets later) lets it in
    assert not waiter.is_alive()
    assert got and got[0] is not None
    assert (lane.limit, lane.running) == (2, 2)
    lane.release(held)


def test_a_lowered_heavy_limit_recovers_a_slot_every_few_targets_without_a_change():
    clock = lane_clock()
    lane = admission.HeavyLane(4, target=1.0, clock=clock)
    run_together(lane, clock, 2.0)
    assert lane.limit == 2
    clock.now += lane.RECOVERY * 1.0 - 0.5
    lane.release(taken(lane))  # no time passed: a quick request, which gives a slot back itself
    assert lane.limit == 3
    clock.now += lane.RECOVERY * 1.0 - 0.5
    assert lane.acquire(blocking=False) is not None
    assert lane.limit == 3  # not yet: the last change was less than RECOVERY targets ago
    clock.now += 0.5
    assert lane.acquire(blocking=False) is not None
    assert lane.limit == 4


def test_a_heavy_lane_at_its_limit_refuses_the_next_request_though_fewer_than_its_slots_run():
    clock = lane_clock()
    lane = admission.HeavyLane(2, target=1.0, clock=clock)
    run_together(lane, clock, 5.0)
    assert lane.limit == 1
    first = taken(lane)
    assert lane.acquire(timeout=0) is None
    assert lane.acquire(blocking=False) is None
    lane.release(first)
    assert lane.acquire(blocking=False) is not None


def test_a_heavy_lane_without_a_target_keeps_its_slots_and_without_slots_refuses_all():
    clock = lane_clock()
    lane = admission.HeavyLane(2, target=0, clock=clock)
    run_together(lane, clock, 60.0)
    clock.now += 60.0
    assert lane.limit == 2
    assert [lane.acquire(blocking=False) is not None for _ in range(3)] == [True, True, False]
    assert admission.HeavyLane(0, target=1.0).acquire(timeout=0) is None


def test_a_heavy_lane_released_more_often_than_acquired_raises():
    lane = admission.HeavyLane(1)
    lane.release(lane.acquire())
    with pytest.raises(ValueError, match="released more often"):
        lane.release()


def blocked_in(lane: admission.HeavyLane, count: int) -> None:
    """Wait until ``count`` threads wait for a turn in ``lane`` (its condition's waiters)."""
    for _ in range(500):
        if len(lane._turn._waiters) == count:  # type: ignore[attr-defined]
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} waiter(s) expected")


def test_a_request_waiting_for_the_heavy_lane_gets_the_slot_freed_within_its_wait_or_nothing_after_it():
    lane = admission.HeavyLane(1, target=10.0)
    held = lane.acquire()
    got: list[float | None] = []
    waiter = threading.Thread(target=lambda: got.append(lane.acquire(timeout=30)))
    waiter.start()
    blocked_in(lane, 1)
    lane.release(held)
    waiter.join(5)  # well before its own timeout: the release woke it
    assert not waiter.is_alive()
    assert got and got[0] is not None
    assert lane.running == 1
    assert lane.acquire(timeout=0.05) is None  # waited, and no slot came free


def test_the_heavy_lane_publishes_its_limit_and_a_failing_publisher_fails_no_request(caplog):
    clock = lane_clock()
    published: list[int] = []
    lane = admission.HeavyLane(4, target=1.0, clock=clock, on_limit=published.append)
    run_together(lane, clock, 2.0)
    run_alone(lane, clock, 0.1)
    assert published == [4, 2, 3]

    def broken(limit: int) -> None:
        raise OSError("no space left for the metrics file")

    lane._on_limit = broken
    with caplog.at_level("ERROR", logger="vcci.admission"):
        run_alone(lane, clock, 0.1)
    assert lane.limit == 4 and lane.running == 0
    assert "Could not publish the heavy lane's limit" in caplog.text
    with caplog.at_level("ERROR", logger="vcci.admission"):
        assert admission.HeavyLane(2, on_slots=broken).slots == 2  # a worker's start does not fail either
    assert "Could not publish the heavy lane's slots" in caplog.text


def test_the_gate_publishes_its_heavy_slots_and_limit(admission_gate):
    from perf.metrics import ADMISSION_HEAVY_LIMIT, ADMISSION_HEAVY_SLOTS

    admission_gate(ADMISSION_HEAVY_SLOTS=3)
    admission.gate()
    assert ADMISSION_HEAVY_SLOTS.labels("main")._value.get() == 3
    assert ADMISSION_HEAVY_LIMIT.labels("main")._value.get() == 3


def test_a_slow_streamed_bulk_request_sharing_the_lane_halves_the_workers_heavy_slots(admission_gate, db):
    # db: closing a response sends request_finished, on which Django closes old database connections.
    admission_gate(ADMISSION_HEAVY_SLOTS=2, ADMISSION_HEAVY_TARGET=1.0, ADMISSION_MAX_IN_FLIGHT=256)
    lane = admission.gate().heavy_slots
    lane._clock = clock = lane_clock()
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    view = Export.as_view()

    def get_response(request: Any) -> Any:
        assert middleware.process_view(request, view, (), {}) is None
        return StreamingHttpResponse(iter(["rows"]))

    middleware.get_response = get_response
    other = taken(lane)  # another export runs all along
    try:
        response = middleware(rf.get("/export"))
        clock.now += 3.0  # its rows took three seconds to stream: the time counts until the body is closed
        assert b"".join(response) == b"rows"
        response.close()
        assert (lane.limit, lane.running) == (1, 1)
        assert_refusal(run_through(middleware, rf.get("/export"), Export), admission.HEAVY_BUSY)
    finally:
        lane.release(other)


@pytest.mark.parametrize("role", ["main", "bulk"])
def test_an_answer_that_was_no_bulk_work_frees_its_slot_untimed(admission_gate, monkeypatch, role):
    """A kept export or a 304 (``untimed``) is answered in a millisecond: timed, it would give the lane a slot back
    while the exports that compute are slow. In the bulk pool it also tells the forwarding worker so (a header)."""
    monkeypatch.setenv("VCCI_SERVER_ROLE", role)
    admission_gate(ADMISSION_HEAVY_SLOTS=2, ADMISSION_HEAVY_TARGET=1.0, ADMISSION_MAX_IN_FLIGHT=256)
    lane = admission.gate().heavy_slots
    lane._clock = clock = lane_clock()
    run_together(lane, clock, 3.0)  # slow bulk work, two at once: the limit is halved
    assert lane.limit == 1
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    view = Export.as_view()

    def kept_answer(request: Any) -> Any:
        assert middleware.process_view(request, view, (), {}) is None
        return admission.untimed(HttpResponse(b"kept"))

    middleware.get_response = kept_answer
    response = middleware(rf.get("/export"))
    assert response.content == b"kept"
    assert (lane.limit, lane.running) == (1, 0)  # freed, and no measure of bulk work: the limit stays
    assert response.get(admission.UNTIMED_HEADER) == ("1" if role == "bulk" else None)
    # The same answer timed would have given a slot back (a quick bulk request does).
    run_alone(lane, clock, 0.1)
    assert lane.limit == 2


def test_requests_beyond_the_in_flight_bound_are_refused_when_no_place_comes_free(settings):
    settings.ADMISSION_MAX_IN_FLIGHT = 2
    admission.reset()
    gate = admission.gate()
    assert gate.enter() and gate.enter()
    before = refused(admission.IN_FLIGHT)
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    # Refused before the view runs (any session, authentication or database work).
    assert_refusal(run_through(middleware, rf.get("/anything"), View), admission.IN_FLIGHT)
    assert refused(admission.IN_FLIGHT) == before + 1
    gate.leave()
    assert run_through(middleware, rf.get("/anything"), View).content == b"done"
    assert gate.in_flight == 1  # the one still held above


def run_window(backoff: admission.Backoff, clock: Clock, *, refused: int, served: int) -> list[int]:
    """One second of traffic; the Retry-After each refusal of it got."""
    delays = [backoff.refused() for _ in range(refused)]
    for _ in range(served):
        backoff.served()
    clock.now += admission.Backoff.WINDOW
    return delays


def test_retry_after_doubles_past_one_refusal_in_100_served_and_halves_under_one_in_400():
    clock = Clock(100.0)
    backoff = admission.Backoff(base=1, ceiling=16, clock=clock)
    seen = [run_window(backoff, clock, refused=6, served=500)[-1] for _ in range(7)]
    assert seen == [1, 2, 4, 8, 16, 16, 16]  # capped at the ceiling
    # Fewer than MIN_REFUSALS is no trend, even with nothing served.
    assert run_window(backoff, clock, refused=4, served=0) == [16] * 4
    # Between one in 400 and one in 100: the delay holds.
    assert run_window(backoff, clock, refused=5, served=1000) == [16] * 5
    assert run_window(backoff, clock, refused=5, served=500)[-1] == 16  # one in 100 exactly: not more
    # Fewer than one in 400: it halves each second, down to the base.
    seen = [run_window(backoff, clock, refused=2, served=1000)[-1] for _ in range(7)]
    assert seen == [16, 8, 4, 2, 1, 1, 1]
    # A worker serving fewer than 400 a second halves only after a second without a refusal: one that keeps
    # turning a client or two away each second, too few to double, keeps its delay.
    for _ in range(3):
        run_window(backoff, clock, refused=6, served=200)
    assert [run_window(backoff, clock, refused=1, served=200)[-1] for _ in range(3)] == [8, 8, 8]
    assert run_window(backoff, clock, refused=0, served=200) == []
    assert backoff.refused() == 4


def test_reachable_delays_are_every_retry_after_a_backoff_gives():
    # Up from 1 s to the ceiling and back down from any point: 30 -> 15 -> 7 -> 3, 3 -> 6 -> 12 -> 24, ...
    reachable = admission.reachable_delays
    assert reachable(admission.Backoff(base=1, ceiling=30)) == {1, 2, 3, 4, 6, 7, 8, 12, 14, 15, 16, 24, 28, 30}
    assert reachable(admission.Backoff(base=5, ceiling=30)) == {5, 7, 10, 14, 15, 20, 28, 30}
    assert reachable(admission.Backoff(base=0, ceiling=4)) == {0, 1, 2, 4}
    # A Backoff driven by random seconds (busy, calm, idle) never gives any other.
    rng = random.Random(7)
    for base, ceiling in ((1, 30), (5, 30), (0, 16), (3, 3)):
        clock = Clock(100.0)
        backoff = admission.Backoff(base=base, ceiling=ceiling, clock=clock)
        reachable = admission.reachable_delays(backoff)
        given = set()
        for _ in range(2_000):
            given.update(
                run_window(backoff, clock, refused=rng.choice((0, 1, 5, 30)), served=rng.choice((0, 100, 2000)))
            )
            clock.now += rng.choice((0, 0, 0, 2.5))  # now and then idle seconds
        assert given <= reachable
        assert len(given) > 1 or base == ceiling


def test_jittered_retry_after_is_drawn_from_the_upper_half_of_the_delay_never_near_the_keep_alive():
    clock = Clock(100.0)
    backoff = admission.Backoff(
        base=1, ceiling=30, clock=clock, jitter=random.Random(3), avoid=admission.keepalive_band(20)
    )
    backoff.delay = 24  # as 3 doubled three times would leave it; the clock stays within the second
    told = [backoff.refused() for _ in range(2_000)]
    # 12 to 24 s but 19, 20 and 21 (within 2 s of the 20-s keep-alive), each drawn.
    assert set(told) == set(range(12, 25)) - {19, 20, 21}
    assert max(told.count(seconds) for seconds in set(told)) < 2 * len(told) / len(set(told))  # spread, not piled
    # The delay's own steps are the same as without jitter: it is the offer that is drawn.
    assert backoff.delay == 24
    assert backoff.offered(1) == (1,) and backoff.offered(2) == (1, 2) and backoff.offered(3) == (2, 3)
    # Without jitter, the delay itself, even near the keep-alive (the check perf.W003 warns of that).
    plain = admission.Backoff(base=20, ceiling=20, avoid=admission.keepalive_band(20))
    assert plain.refused() == 20 and plain.offered(20) == (20,)


def test_reachable_delays_with_jitter_are_every_offer():
    band = admission.keepalive_band(20)
    assert set(band) == {19, 20, 21}
    assert list(admission.keepalive_band(0)) == []  # no keep-alive: no connection closes as a client sends
    for base, lowest in ((1, 1), (5, 3)):
        backoff = admission.Backoff(base=base, ceiling=30, jitter=random.Random(0), avoid=band)
        assert admission.reachable_delays(backoff) == set(range(lowest, 31)) - {19, 20, 21}
    # Driven by random seconds, a jittered Backoff never tells anything else.
    rng = random.Random(11)
    clock = Clock(100.0)
    backoff = admission.Backoff(base=1, ceiling=30, clock=clock, jitter=random.Random(5), avoid=band)
    given: set[int] = set()
    for _ in range(2_000):
        given.update(run_window(backoff, clock, refused=rng.choice((0, 1, 5, 30)), served=rng.choice((0, 100, 2000))))
        clock.now += rng.choice((0, 0, 0, 2.5))
    assert given <= admission.reachable_delays(backoff)
    assert len(given) > 10


def test_the_gates_retry_after_follows_the_jitter_setting_and_the_keep_alive(settings):
    settings.GUNICORN_KEEPALIVE = 20
    settings.ADMISSION_RETRY_AFTER_JITTER = True
    admission.reset()
    gate = admission.gate()
    offers = tuple(s for s in range(12, 25) if s not in (19, 20, 21))
    assert gate.backoff.offered(24) == offers
    # A refusal's header carries a draw. The clock is the real one: should a second end meanwhile, the refusals
    # double the delay to 30 s, whose offers (15 to 30 s) keep away from the keep-alive too.
    gate.backoff.delay = 24
    told = {int(admission.refusal(admission.IN_FLIGHT)["Retry-After"]) for _ in range(200)}
    assert told <= set(range(12, 31)) - {19, 20, 21} and len(told) > 1
    settings.ADMISSION_RETRY_AFTER_JITTER = False
    admission.reset()
    assert admission.gate().backoff.offered(24) == (24,)


def test_each_refusals_retry_after_is_observed_by_reason(settings):
    settings.ADMISSION_RETRY_AFTER_JITTER = True
    admission.reset()
    admission.gate().backoff.delay = 8

    def told(reason: str) -> tuple[float, float]:
        # (how many were observed, the seconds they said in all)
        name = "vcci_admission_retry_after_seconds"
        return sample(f"{name}_count", reason=reason), sample(f"{name}_sum", reason=reason)

    before, other_before = told(admission.IN_FLIGHT), told(admission.DB_POOL)
    said = [int(admission.refusal(admission.IN_FLIGHT)["Retry-After"]) for _ in range(20)]
    after = told(admission.IN_FLIGHT)
    assert after == (before[0] + 20, before[1] + sum(said))
    assert told(admission.DB_POOL) == other_before
    assert set(said) <= set(range(4, 31))  # the delay's upper half, should the refusals double it meanwhile


def test_retry_after_falls_back_after_idle_seconds():
    clock = Clock(100.0)
    backoff = admission.Backoff(base=1, ceiling=30, clock=clock)
    for _ in range(5):
        run_window(backoff, clock, refused=10, served=0)
    assert backoff.delay == 16
    # The last busy second is judged (16 -> 30, the ceiling), then each of the 3 idle ones halves it: 30 -> 3.
    clock.now += 3 * admission.Backoff.WINDOW
    assert backoff.refused() == 3


def test_a_refusal_carries_the_workers_current_delay_and_refusals_are_not_counted_as_served(settings):
    settings.ADMISSION_MAX_IN_FLIGHT = 1
    admission.reset()
    gate = admission.gate()
    clock = Clock(100.0)
    gate.backoff = admission.Backoff(base=1, ceiling=8, clock=clock)
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    retry_after = []
    for _ in range(4):
        # 496 requests served and 5 refused each second: more than one refusal in 100 served (4.96), so the delay
        # doubles each second. Were the refusals counted as served too (501), they would be fewer: no change.
        for _ in range(496):
            assert run_through(middleware, rf.get("/served"), View).content == b"done"
        assert gate.enter()
        seconds = {run_through(middleware, rf.get("/refused"), View)["Retry-After"] for _ in range(5)}
        gate.leave()
        assert len(seconds) == 1
        retry_after.append(seconds.pop())
        clock.now += admission.Backoff.WINDOW
    assert retry_after == ["1", "2", "4", "8"]


def test_a_request_waits_for_a_place_first_come_first_served(settings):
    settings.ADMISSION_MAX_IN_FLIGHT = 1
    settings.ADMISSION_QUEUE_WAIT = 30
    admission.reset()
    gate = admission.gate()
    assert gate.enter()
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    # The running request ends while the next one waits: it then gets the place instead of a 503.
    finishing = threading.Timer(0.2, gate.leave)
    finishing.start()
    assert run_through(middleware, rf.get("/waited"), View).content == b"done"
    finishing.join()
    assert gate.in_flight == 0


@pytest.mark.parametrize("patched", [False, True], ids=["threads", "gevent"])
def test_a_lane_bounds_its_turns_and_refuses_an_extra_release(monkeypatch, patched):
    # The semaphore of a gevent worker is gevent's own: the same behaviour as threading's, a fraction of its cost.
    monkeypatch.setattr(admission, "gevent_patched", lambda module: patched)
    lane = admission.Lane(2)
    assert isinstance(lane._semaphore, gevent.lock.BoundedSemaphore) is patched
    assert lane.enter() and lane.enter() and lane.count == 2
    assert not lane.enter() and not lane.enter(timeout=0.01) and lane.count == 2
    lane.leave()
    lane.leave()
    with pytest.raises(ValueError):
        lane.leave()  # released more often than taken, as a BoundedSemaphore refuses


def test_a_gevent_workers_lane_wakes_its_waiters_in_the_order_they_came(monkeypatch):
    monkeypatch.setattr(admission, "gevent_patched", lambda module: True)
    lane = admission.Lane(1)
    assert lane.enter()
    order: list[int] = []

    def wait(index: int) -> None:
        assert lane.enter(timeout=5)
        order.append(index)
        gevent.sleep(0)  # the others run meanwhile: none of them may take the turn out of order
        lane.leave()

    waiters = [gevent.spawn(wait, index) for index in range(5)]
    gevent.sleep(0.01)
    lane.leave()
    gevent.joinall(waiters, timeout=5, raise_error=True)
    assert order == [0, 1, 2, 3, 4]


def test_a_streamed_response_keeps_its_place_and_slot_until_closed(db):
    # db: closing a response sends request_finished, on which Django closes old database connections.
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    view = Export.as_view()

    def get_response(request: Any) -> Any:
        assert middleware.process_view(request, view, (), {}) is None
        return StreamingHttpResponse(iter(["a", "b"]))

    middleware.get_response = get_response
    response = middleware(rf.get("/export"))
    gate = admission.gate()
    assert gate.in_flight == 1
    assert gate.heavy_slots.acquire(blocking=False) is None  # still held while the body streams
    assert b"".join(response) == b"ab"
    response.close()
    assert gate.in_flight == 0
    assert gate.heavy_slots.acquire(blocking=False) is not None
    gate.heavy_slots.release()
    response.close()  # closing twice releases once (the lane raises on a release more than acquired)
    assert gate.in_flight == 0


def test_an_exception_leaves_the_gate_and_frees_the_slot():
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    view = Export.as_view()

    def get_response(request: Any) -> Any:
        middleware.process_view(request, view, (), {})
        raise RuntimeError("boom")

    middleware.get_response = get_response
    with pytest.raises(RuntimeError):
        middleware(rf.get("/export"))
    gate = admission.gate()
    assert gate.in_flight == 0
    assert gate.heavy_slots.acquire(blocking=False) is not None
    gate.heavy_slots.release()


def test_an_exhausted_database_pool_answers_503_other_database_errors_do_not():
    middleware = AdmissionMiddleware(lambda request: HttpResponse())
    before = refused(admission.DB_POOL)
    try:
        raise OperationalError("couldn't get a connection") from PoolTimeout("couldn't get a connection after 3.00 sec")
    except OperationalError as exc:
        pool_error = exc
    assert_refusal(middleware.process_exception(rf.get("/"), pool_error), admission.DB_POOL)
    assert refused(admission.DB_POOL) == before + 1
    assert middleware.process_exception(rf.get("/"), OperationalError("server closed the connection")) is None
    assert middleware.process_exception(rf.get("/"), ValueError("not ours")) is None


@pytest.fixture
def under_gevent(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cooperate`` as in a gevent worker (the test process is not monkey-patched)."""
    monkeypatch.setattr(admission, "_sleep", gevent.sleep)
    monkeypatch.setattr(admission, "_checked", True)


def test_cooperate_does_nothing_outside_gevent(monkeypatch, settings):
    settings.COOPERATE_SLICE_MS = 0
    monkeypatch.setattr(admission, "_sleep", None)
    monkeypatch.setattr(admission, "_checked", True)
    calls: list[float] = []
    monkeypatch.setattr(gevent, "sleep", calls.append)
    cooperate()
    assert calls == []


def test_a_long_loop_that_cooperates_lets_other_greenlets_run(under_gevent, settings):
    settings.COOPERATE_SLICE_MS = 0  # yield at every call: the interleaving is then deterministic
    order: list[str] = []

    def bulk() -> None:
        for index in range(3):
            order.append(f"bulk {index}")
            cooperate()

    def read() -> None:
        order.append("read")

    first = gevent.spawn(bulk)
    second = gevent.spawn(read)
    gevent.joinall([first, second])
    # Without the yield the read would wait for the whole loop: ["bulk 0", "bulk 1", "bulk 2", "read"].
    assert order == ["bulk 0", "read", "bulk 1", "bulk 2"]


@pytest.fixture
def fresh_run() -> Iterator[None]:
    """This test's greenlet starts a run at t=0 (the run is kept per context: tests share the main one)."""
    token = admission._run.set(admission._Run(0.0))
    yield
    admission._run.reset(token)


def yielded_at(monkeypatch: pytest.MonkeyPatch, calls: list[float], resumes: dict[float, float]) -> list[float]:
    """Call ``cooperate()`` with the clock at each of ``calls``; the calls at which it yielded. ``resumes``: the
    clock when the greenlet gets the CPU back after yielding at a call."""
    yields: list[float] = []
    monkeypatch.setattr(admission, "_sleep", yields.append)
    readings = [t for call in calls for t in ([call, resumes[call]] if call in resumes else [call])]
    clock = iter(readings)
    monkeypatch.setattr(admission.time, "perf_counter", lambda: next(clock))
    at = []
    for call in calls:
        before = len(yields)
        cooperate()
        if len(yields) > before:
            at.append(call)
    return at


def test_cooperate_keeps_the_cpu_within_a_slice(under_gevent, fresh_run, settings, monkeypatch):
    settings.COOPERATE_SLICE_MS = 5
    settings.COOPERATE_SLICE_PER_REQUEST_MS = 0
    calls = [0.0015, 0.0030, 0.0045, 0.0055, 0.0070, 0.0200, 0.0215, 0.0230, 0.0245, 0.0252]
    resumes = {0.0055: 0.0060, 0.0252: 0.0253}  # the clock when the greenlet gets the CPU back
    # 5.5 ms into the run: yields. At 20 ms it was switched out for 13 ms (its own I/O): a new run, no yield
    # for the others' time; 5.2 ms into that one: yields.
    assert yielded_at(monkeypatch, calls, resumes) == [0.0055, 0.0252]


def test_the_slice_grows_with_the_requests_running(under_gevent, fresh_run, settings, monkeypatch):
    """Bulk work keeps its share of the CPU as load grows: with 30 requests running (20 with a place, 10 with a turn
    in the cached lane) the slice is 30 ms, not 10."""
    settings.COOPERATE_SLICE_MS = 10
    settings.COOPERATE_SLICE_PER_REQUEST_MS = 1
    settings.ADMISSION_MAX_IN_FLIGHT = 64
    settings.ADMISSION_MAX_CACHED_IN_FLIGHT = 64
    admission.reset()
    gate = admission.gate()
    for _ in range(20):
        assert gate.enter()
    for _ in range(10):
        assert gate.cached.enter()
    assert gate.running == 30
    calls = [round(i * 0.0015, 4) for i in range(1, 22)]  # every 1.5 ms, a run of 31.5 ms
    assert yielded_at(monkeypatch, calls, {0.03: 0.0301}) == [0.03]  # not at 10.5 ms


@pytest.mark.django_db
def test_a_read_the_cache_answers_needs_a_turn_in_its_lane_and_one_it_cannot_a_place(api, org, settings):
    """Through the whole stack: with every place taken, a cached read is still answered (from its own lane), and a
    read the cache cannot answer, or a write, is refused; with every turn of the cached lane taken, a cached read is
    refused and a write is not; a computed read gives its turn back before it takes a place."""
    from django.urls import reverse

    from tests.factories import EmissionFactory

    settings.ADMISSION_MAX_IN_FLIGHT = 2
    settings.ADMISSION_MAX_CACHED_IN_FLIGHT = 2
    admission.reset()
    gate = admission.gate()
    EmissionFactory.create_batch(3, organization=org)
    url = reverse("emission-list")
    # What the cached lane holds whenever a request asks for a place: a miss must have given its turn back by then.
    cached_when_asked: list[int] = []
    held_here = [0]  # turns this test takes itself below
    enter = gate.places.enter

    def asking(timeout: float = 0) -> bool:
        cached_when_asked.append(gate.cached.count - held_here[0])
        return enter(timeout)

    gate.places.enter = asking
    first = api.get(url)  # computed (a place taken and given back), then stored
    assert first.status_code == 200 and gate.in_flight == 0 and gate.cached.count == 0
    assert gate.enter() and gate.enter()  # every place taken by requests that compute
    before = refused(admission.IN_FLIGHT)
    try:
        again = api.get(url)
        assert again.status_code == 200 and again.content == first.content  # from the cache, without a place
        assert_refusal(api.get(url, {"category": "1"}), admission.IN_FLIGHT)  # a miss: it must compute
        assert_refusal(api.post(reverse("supplier-list"), {"name": "S"}, format="json"), admission.IN_FLIGHT)
    finally:
        gate.leave()
        gate.leave()
    assert gate.cached.enter() and gate.cached.enter()  # every turn of the cached lane taken
    held_here[0] = 2
    try:
        assert_refusal(api.get(url), admission.IN_FLIGHT)
        created = api.post(reverse("supplier-list"), {"name": "S", "external_id": "S-1"}, format="json")
        assert created.status_code == 201, created.content
    finally:
        gate.cached.leave()
        gate.cached.leave()
        held_here[0] = 0
    assert refused(admission.IN_FLIGHT) == before + 3
    assert api.get(url, {"category": "1"}).status_code == 200
    assert gate.in_flight == 0 and gate.cached.count == 0
    # Asked for a place: the first read, the refused miss, the refused write, the created supplier, the last miss
    # (the test's own two enter() calls above go through it too). None of them held a turn when it asked.
    assert len(cached_when_asked) >= 5 and set(cached_when_asked) == {0}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/healthz", "/readyz", "/metrics"])
def test_the_operations_endpoints_answer_while_every_place_is_taken(url, settings):
    settings.ADMISSION_MAX_IN_FLIGHT = 1
    settings.ADMISSION_MAX_CACHED_IN_FLIGHT = 1
    admission.reset()
    gate = admission.gate()
    assert gate.enter() and gate.cached.enter()  # a request computing, a cached read: the worker is full
    client = Client(REMOTE_ADDR="127.0.0.1")
    before = refused(admission.IN_FLIGHT)

    # Liveness, readiness and the scrape are answered, at once, and take no place...
    assert client.get(url).status_code == 200
    assert gate.in_flight == 1 and gate.running == 2
    # ...while the API is refused, as the full worker must.
    assert_refusal(client.get("/api/v1/emissions/"), admission.IN_FLIGHT)
    assert refused(admission.IN_FLIGHT) == before + 1


@pytest.mark.django_db
def test_a_flood_of_readiness_probes_and_scrapes_is_bounded_in_its_own_lane_liveness_never(settings):
    admission.reset()
    gate = admission.gate()
    for _ in range(admission.OPERATIONS_IN_FLIGHT):
        assert gate.operations.enter()  # as many probes and scrapes as the lane holds, still running
    client = Client(REMOTE_ADDR="127.0.0.1")

    assert_refusal(client.get("/readyz"), admission.IN_FLIGHT)
    assert_refusal(client.get("/metrics"), admission.IN_FLIGHT)
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/v1/emissions/").status_code == 401  # the API's places are its own: admitted, then asked
    gate.operations.leave()
    assert client.get("/readyz").status_code == 200
    assert gate.operations.count == admission.OPERATIONS_IN_FLIGHT - 1  # its turn given back
