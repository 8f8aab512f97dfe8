"""Pausing Python's cyclic garbage collector around bounded bulk work.

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
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
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
