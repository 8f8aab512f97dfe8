"""Python's cyclic garbage collector in the server: paused around bounded bulk work, and set up for serving.

A batch request (``POST /api/v1/activities/`` with up to 10,000 items, ``/calculate/batch/``)
builds hundreds of thousands of short-lived objects: parsed JSON, validated data, model
instances, the response's dicts. Every 700 allocations the collector runs; every few of those runs
walk older generations, and a full collection walks every container the process holds, the
long-lived objects of Django and the app included. None of that work frees anything the request
made: its objects die by reference counting when it ends, and the few cycles among them are
collected by the first collection after the pause. The batch POST's end-to-end time is in
``docs/benchmarks/db.md`` (``make bench-db``).

The collector has one process-wide switch, so the pause is counted: concurrent batches (gevent
greenlets, gthread threads) turn it back on only when the last of them ends, and a collector that
was already off before the first stays off.

A server process also prepares its collector once the application is loaded (``tune_for_serving``, from gunicorn's
``post_worker_init``): everything loaded by then is frozen, out of every later pass, and each pass is timed
(``vcci_gc_pause_seconds``, observed by perf.metrics after each request).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def collection_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (reference counting still frees memory).

    Precondition: the block's allocations are bounded (a request capped in size), since cycles it
    creates wait for the pause to end.
    """
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def tune_for_serving(thresholds: Sequence[int], *, freeze: bool = True) -> tuple[int, ...]:
    """Prepare a server process's collector once it has loaded the application: what the process holds so far
    (Django, DRF, the URLconf, the views) moves to the permanent generation (unless not ``freeze``), and
    ``thresholds`` (gen0, gen1, gen2; fewer values keep the rest) replace Python's. Each pass is timed
    (``timed_passes``; perf.metrics observes them into ``vcci_gc_pause_seconds`` after each request). Returns the
    thresholds in force.

    Why: under load (500 users, the seed scenario) each full pass walked everything the process had loaded,
    stopping every request of the worker for 217-282 ms; frozen objects are never walked again, and a full pass
    took 57-130 ms (docs/serving.md, "The collector in a serving process"). Python's thresholds stay the default:
    higher ones made the passes rarer but each one longer.

    Precondition: called once per process, after the application is loaded and before it serves (gunicorn's
    ``post_worker_init``), so the frozen objects are the long-lived ones.
    """
    if freeze:
        gc.collect()
        gc.freeze()
    if _time_passes not in gc.callbacks:
        gc.callbacks.append(_time_passes)
    if thresholds:
        current = list(gc.get_threshold())
        current[: len(thresholds)] = thresholds
        gc.set_threshold(*current)
    return gc.get_threshold()


_pass_started = 0.0
# Each pass's (generation, seconds), until perf.metrics takes them (``timed_passes``). Bounded: a process that serves
# no request keeps the newest only.
_passes: deque[tuple[int, float]] = deque(maxlen=10_000)


def _time_passes(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks`` entry: note each pass's duration.

    Only a clock and a deque's atomic append here: a pass starts at whatever allocation crossed the threshold, maybe
    inside an import or while a lock is held (prometheus_client's, gevent's). Importing or locking from here could
    wait for this very greenlet, which would never resume: an early version observed the histogram here and hung a
    worker.
    """
    global _pass_started
    if phase == "start":
        _pass_started = time.perf_counter()
    else:
        _passes.append((info["generation"], time.perf_counter() - _pass_started))


def timed_passes() -> Iterator[tuple[int, float]]:
    """The passes noted since the last call, oldest first, as (generation, seconds); each is given once."""
    while True:
        try:
            yield _passes.popleft()
        except IndexError:
            return
