"""How long a ready greenlet waits for its gevent worker's event loop: the part of a request's latency no timer sees.

gunicorn's access log and ``django_http_requests_latency_including_middlewares_seconds`` start timing once a
request's head has been read. Before that, its bytes sit in the socket while the worker's hub runs every other
ready greenlet in turn, each until it next waits on I/O; the same wait comes back at each of the request's own
database and Redis round trips. A worker with many requests under way, or whose process gets little CPU, makes
each of them wait longer, and nothing inside the request can measure it.

``start`` runs one greenlet per worker that asks to be woken every ``interval`` seconds and observes how late it
was woken (``vcci_event_loop_lag_seconds``, by role): the wait any greenlet that becomes ready at that moment has
before it runs. It costs one timer a tick. ``EVENT_LOOP_LAG_INTERVAL`` (seconds, 0: off) sets the tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _tick(
    interval: float, observe: Callable[[float], None], clock: Callable[[], float], sleep: Callable[[float], Any]
) -> None:
    """One measurement: sleep ``interval`` and observe how much later than that the sleeper ran again."""
    asked = clock()
    sleep(interval)
    observe(max(clock() - asked - interval, 0.0))


def run(
    interval: float,
    observe: Callable[[float], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    ticks: int | None = None,
) -> None:
    """Measure forever (or ``ticks`` times). Precondition: ``sleep`` yields to the event loop being measured
    (gevent's, by default) and ``interval`` > 0."""
    if sleep is None:
        import gevent

        sleep = gevent.sleep
    done = 0
    while ticks is None or done < ticks:
        _tick(interval, observe, clock, sleep)
        done += 1


def start(interval: float) -> Any:
    """Start measuring this gevent worker's loop in a greenlet of its own; the greenlet, or None when
    ``interval`` is 0 (off). Precondition: the process is patched by gevent (a gevent worker)."""
    if interval <= 0:
        return None
    import gevent

    from perf.metrics import EVENT_LOOP_LAG, server_role

    child = EVENT_LOOP_LAG.labels(server_role())
    return gevent.spawn(run, interval, child.observe)
