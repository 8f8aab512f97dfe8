"""Admission control and cooperative scheduling: no unbounded queue, bulk work neither starves nor is starved.

A gevent worker runs every request of its connections on one thread. Four things decide whether a request
that has reached the worker is served, waits (for a bounded time), or is refused with ``Retry-After``:

**Heavy work is admitted by slot.** A view declares which of its methods are bulk work (``admission_heavy``
on the view class: ``{"post"}`` for a batch endpoint, ``{"get"}`` for an export), optionally only above a
body size (``admission_heavy_min_body``: a small write stays a small write). Each worker runs at most
``ADMISSION_HEAVY_SLOTS`` of them at once; a further one waits for a slot at most
``ADMISSION_HEAVY_WAIT`` seconds, then is refused with 503 and ``Retry-After``. Reads and small writes
never wait for these slots: when work exceeds capacity, bulk work is what is refused first. The slots in use
follow how long bulk requests take (``HeavyLane``): fewer at once while they take longer than
``ADMISSION_HEAVY_TARGET``, so that those admitted still finish within seconds.

**Everything that reaches an API view is bounded.** A worker runs at most ``ADMISSION_MAX_IN_FLIGHT`` requests that
compute at once; the next waits for a place, first come first served, at most ``ADMISSION_QUEUE_WAIT`` seconds,
then is refused (503, ``Retry-After``). The place is taken once the URL is resolved: a 404 or a redirect answered
by the middleware takes none. Without the bound, every request admitted makes every other one slower: under
overload each worker ran some 250 at once, bulk requests got a 250th of the CPU and ran past their clients'
timeouts, and requests holding database connections waited for the CPU while others waited for them. Idle keep-alive
connections are not requests: they hold a socket, not a slot (``worker_connections`` bounds sockets,
see vcci/gunicorn.conf.py; the database pool bounds database work). Reads the cache answers have a lane of their
own: a view that answers cached reads first (``admission_after_cache``) waits for one of
``ADMISSION_MAX_CACHED_IN_FLIGHT`` turns instead of a place, and takes a place (``admit()``) only when the cache
cannot answer (so such a read waits at most twice ``ADMISSION_QUEUE_WAIT``: for a turn, then for a place). With a
single queue, every user waited its turn whatever it asked for, and the cheap requests that
make most of the traffic were answered as slowly as the dear ones (served req/s fell from 888 at 50 users to 330
at 500, without think time); with cached reads unbounded, they were so many at once that the requests that
compute waited seconds for the CPU.

**A database pool that is exhausted answers 503.** A request that waited ``DB_POOL_TIMEOUT`` seconds
for a pooled connection is answered 503 with ``Retry-After`` (JSON), not a 500 with a traceback.

**CPU-bound loops yield.** ``cooperate()``, called once per item by loops that can run for long
(batch calculations, bulk writes, exports), lets the worker's other greenlets run when the current one
has held the CPU for a slice (``COOPERATE_SLICE_MS``, longer when many requests are in flight): a 200-item
calculation then delays a cached read by at most one slice instead of its whole run. Outside gevent (a sync
or gthread worker, tests, commands) it does nothing: the operating system schedules threads.

**Refused clients are told to come back later the more the worker refuses.** A refusal costs CPU too (the
request is read, answered and counted), and a client that honours ``Retry-After`` comes back after it: with a
fixed second, 500 clients the server cannot serve come back some 450 times a second, and answering them takes
the CPU the served requests needed. ``Backoff`` compares each second's refusals with the requests served: while
refusals are more than one in a hundred of the served ones (and at least five), the delay doubles (up to
``ADMISSION_RETRY_AFTER_MAX``); once they are fewer than one in four hundred, it halves (down to
``ADMISSION_RETRY_AFTER``). Refusals are the sign that more clients are sending than the worker serves without
queueing; each one sent away for longer keeps one fewer in the queue. While the delay doubled only once refusals
were half the requests served, under overload (500 users without think time) the workers refused about a quarter
as many as they served, refused clients came back about as fast as they were refused, 190 to 240 requests were
inside the server at any moment, and every request waited behind them: the cheap ones (cached reads) cost their
clients as many requests as the dear ones, so the mix shifted to dear ones and the server's CPU per served request
rose by two thirds against 50 users (docs/capacity/analysis.md, section 17). With the lower thresholds the queue
is shorter (about 110-125 in the server at 500 users, 43 at 50), and the delay falls back as soon as the load does.
Each refusal is told a random whole number of seconds from the upper half of the delay
(``ADMISSION_RETRY_AFTER_JITTER``) rather than the delay itself, never one near gunicorn's keep-alive
(``keepalive_band``): the clients refused in one second would otherwise come back in one second, together.

**The operations endpoints do not wait for the API.** Refused under overload as the API was (a probe every 50 ms
got 503 for 58 of 271 ``/healthz`` at 500 users without think time), an orchestrator would restart healthy workers
and take instances out of rotation just when load peaks, and the scrape would miss the minutes an operator needs
(``up`` 0 fires VCCIInstanceDown). Liveness (``/healthz``), which touches nothing, is ``admission_exempt``: it takes
no place and waits for none. Readiness (``/readyz``) and the Prometheus scrape (``/metrics``) check PostgreSQL and
Redis, so unbounded they could be sent many at once and hold the database pool the API needs: they take a turn in
a lane of their own (``operations_lane``, ``OPERATIONS_IN_FLIGHT`` per worker), which the API's load never fills.

Refusals are counted in ``vcci_admission_refused_total{reason}`` and carry ``Retry-After``, whose seconds go to
``vcci_admission_retry_after_seconds{reason}``; the JSON body is ``{"detail": ...}`` like every other API error.
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from perf.errors import exception_chain, json_error
from perf.serving import gevent_patched

logger = logging.getLogger("vcci.admission")

_View = TypeVar("_View", bound=Callable[..., Any])

# Readiness checks and scrapes running at once per worker (``operations_lane``): a readiness probe and a scrape.
# More wait (ADMISSION_QUEUE_WAIT) and are then refused: a flood of them holds no more than two pooled connections.
OPERATIONS_IN_FLIGHT = 2

# Reasons a request is refused (the metric's label values).
HEAVY_BUSY = "heavy_busy"
IN_FLIGHT = "in_flight"
DB_POOL = "db_pool"
# The environ key by which perf.bulkpool's forwarder asks the worker's Django to refuse a request (a reason above).
REFUSE = "vcci.admission.refuse"

# The response header by which the bulk pool tells the worker that forwarded a request that its answer was no bulk
# work done (``untimed``): the worker frees its slot untimed too, and does not relay the header.
UNTIMED_HEADER = "X-VCCI-Untimed"

_MESSAGES = {
    HEAVY_BUSY: "The server is busy with bulk work; retry this request after the delay in Retry-After.",
    IN_FLIGHT: "The server is at capacity; retry this request after the delay in Retry-After.",
    DB_POOL: "The server is at capacity (no database connection was free); retry after the delay in Retry-After.",
}


class _Run:
    """When the current greenlet's run began (it last got the CPU) and when it last called ``cooperate()``."""

    __slots__ = ("last", "since")

    def __init__(self, now: float) -> None:
        self.since = self.last = now


# Per greenlet (each has its own context): other greenlets' CPU must not count as this one's.
_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("cooperate_run", default=None)
# A gap this long (seconds) between two calls of one loop means the greenlet was switched out in between (it
# waited for the database or Redis while others ran): its run starts again. A loop's items take far less CPU.
RESUMED_GAP = 0.002
_sleep: Callable[[float], Any] | None = None
_checked = False


def _gevent_sleep() -> Callable[[float], Any] | None:
    global _sleep, _checked
    if not _checked:
        if gevent_patched("threading"):
            import gevent

            _sleep = gevent.sleep
        _checked = True
    return _sleep


def cooperate() -> None:
    """Yield to the worker's other greenlets if this one has run for a whole slice; else return at once.

    Cheap enough to call once per item of a loop (a clock read). Only under gevent: elsewhere it returns at
    once. The slice is ``COOPERATE_SLICE_MS``, or ``COOPERATE_SLICE_PER_REQUEST_MS`` per request running (a place
    or a cached-lane turn) if that is more: after each slice the loop waits for a turn of every other running
    request, so a fixed slice would give bulk work a share of the CPU that shrinks as load grows (under overload a
    500-line write took over 50 s with 10 ms slices and 64 requests in flight). A slice proportional to the
    requests running keeps its share about constant: some 1 / (1 + a request's turn in ms), a third at 2 ms turns.
    """
    sleep = _gevent_sleep()
    if sleep is None:
        return
    now = time.perf_counter()
    run = _run.get()
    if run is None:
        run = _Run(now)
        _run.set(run)
    elif now - run.last > RESUMED_GAP:
        # Switched out since the last call (its own I/O let the others run): a new run starts now. Counting
        # the others' time as its own would make a loop that does I/O per item yield twice per item.
        run.since = now
    run.last = now
    slice_ms = max(settings.COOPERATE_SLICE_MS, settings.COOPERATE_SLICE_PER_REQUEST_MS * gate().running)
    if (now - run.since) * 1000 < slice_ms:
        return
    sleep(0)
    # Measured after the yield: the slice is this greenlet's own CPU time since it got the CPU back.
    run.since = run.last = time.perf_counter()


def heavy(*methods: str, min_body: int = 0) -> Callable[[type], type]:
    """Class decorator: ``methods`` of this view are bulk work, admitted by slot (see the module docstring).

    ``min_body``: only requests whose body is at least this many bytes (``Content-Length``) count as heavy.
    """

    def declare(cls: type) -> type:
        cls.admission_heavy = frozenset(method.lower() for method in methods)  # type: ignore[attr-defined]
        cls.admission_heavy_min_body = min_body  # type: ignore[attr-defined]
        return cls

    return declare


def admission_exempt(view: _View) -> _View:
    """View decorator: requests to ``view`` are neither bounded nor refused by admission (liveness; module
    docstring). Precondition: the view touches neither the database nor the cache and its work is tiny: nothing bounds
    how many run at once."""
    view.admission_exempt = True  # type: ignore[attr-defined]
    return view


def operations_lane(view: _View) -> _View:
    """View decorator: requests to ``view`` take a turn in the worker's operations lane (``OPERATIONS_IN_FLIGHT``),
    not a place among the API's requests: the API's load neither queues nor refuses them, and a flood of them is
    bounded on its own (module docstring)."""
    view.admission_operations = True  # type: ignore[attr-defined]
    return view


def is_heavy(view_class: type | None, method: str, meta: Mapping[str, Any]) -> bool:
    """Whether ``view_class`` declares ``method`` heavy, and the body (``CONTENT_LENGTH`` in ``meta``: a request's
    ``META`` or a WSGI environ) is large enough to count."""
    methods = getattr(view_class, "admission_heavy", None)
    if not methods or method.lower() not in methods:
        return False
    min_body: int = getattr(view_class, "admission_heavy_min_body", 0)
    if min_body <= 0:
        return True
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        # Django refuses the body itself; it is not bulk work.
        return False
    return length >= min_body


def refusal(reason: str) -> HttpResponse:
    """503 with ``Retry-After`` and a JSON ``detail``, counted under ``reason`` with the seconds it told."""
    from perf.metrics import ADMISSION_REFUSED, ADMISSION_RETRY_AFTER_TOLD, child

    seconds = gate().backoff.refused()
    child(ADMISSION_REFUSED, reason).inc()
    child(ADMISSION_RETRY_AFTER_TOLD, reason).observe(seconds)
    response = json_error(503, _MESSAGES[reason])
    response["Retry-After"] = str(seconds)
    response.admission_refused = True  # type: ignore[attr-defined]
    # Counted above; Django would otherwise log every refusal as an error with its request, which under
    # overload is thousands of log lines a second doing the work the refusal spares.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def untimed(response: HttpResponseBase) -> HttpResponseBase:
    """Mark ``response`` of a bulk view as no bulk work done (a body kept in the cache, a 304): its heavy slot is
    freed without being timed. The lane's limit follows how long bulk work takes, and an answer of a millisecond
    would raise it while the bulk work itself is slow."""
    response.admission_untimed = True  # type: ignore[attr-defined]
    return response


def _pool_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) psycopg_pool's PoolTimeout: no pooled connection came in time."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # no pool installed: nothing to recognise
        return False
    return any(isinstance(link, PoolTimeout) for link in exception_chain(exc))


# Seconds a Retry-After keeps away from gunicorn's keep-alive (``keepalive_band``, the check ``perf.W003``).
KEEPALIVE_MARGIN = 2


def keepalive_band(keepalive: int) -> range:
    """The delays within ``KEEPALIVE_MARGIN`` seconds of ``keepalive``: a client told to wait one of them sends again
    about when gunicorn closes its idle connection, and a POST sent at the moment of the close fails."""
    if keepalive <= 0:  # gunicorn keeps no idle connection: none is closed as a client sends
        return range(0)
    return range(keepalive - KEEPALIVE_MARGIN + 1, keepalive + KEEPALIVE_MARGIN)


class Backoff:
    """The ``Retry-After`` of one worker's refusals: longer while it refuses more than one request in a hundred it
    serves (module docstring).

    Counts refusals and served requests per ``WINDOW`` seconds; at the end of each window, more than ``HIGH``
    refusals per served request (and at least ``MIN_REFUSALS``: a refusal or two is not a trend) double the delay
    (at most ``ceiling``), fewer than ``LOW`` halve it (at least ``base``); in between it holds. Up to 400 requests
    served a window, fewer than ``LOW`` means none: a worker that keeps refusing one to four a second keeps its
    delay, as it keeps turning clients away. The counts are not locked (under threads a lost count only shifts a
    decision by one request); the end of a window is, so that it is judged once.

    With ``jitter`` (a random source), each refusal is told a whole number of seconds drawn from the upper half of the
    delay (``ceil(delay / 2)`` to ``delay``) instead of the delay itself: the clients refused in one second would
    otherwise all come back in one second, and be refused together again. Values in ``avoid`` are never drawn
    (``keepalive_band``); a delay whose whole half is in ``avoid`` is told as it is (``offered``).
    """

    WINDOW = 1.0
    HIGH = 0.01
    LOW = 0.0025
    MIN_REFUSALS = 5

    def __init__(
        self,
        *,
        base: int,
        ceiling: int,
        clock: Callable[[], float] = time.monotonic,
        jitter: random.Random | None = None,
        avoid: Collection[int] = (),
    ) -> None:
        self.base = max(base, 0)
        self.ceiling = max(ceiling, self.base)
        self.delay = self.base
        self._clock = clock
        self._jitter = jitter
        self._avoid = frozenset(avoid)
        self._offers: dict[int, tuple[int, ...]] = {}
        self._window_end = clock() + self.WINDOW
        self._refused = self._served = 0
        self._lock = threading.Lock()

    def _roll(self) -> None:
        now = self._clock()
        if now < self._window_end:
            return
        with self._lock:
            if now >= self._window_end:  # not judged by another thread meanwhile
                self._judge(now)

    def _doubled(self, delay: int) -> int:
        return min(max(delay * 2, 1), self.ceiling)

    def _halved(self, delay: int) -> int:
        return max(delay // 2, self.base)

    def _judge(self, now: float) -> None:
        if self._refused >= self.MIN_REFUSALS and self._refused > self.HIGH * self._served:
            self.delay = self._doubled(self.delay)
        elif self._refused < self.LOW * self._served:
            self.delay = self._halved(self.delay)
        # A window with no traffic at all (idle) counts as calm: the delay halves per idle window (at most 16 times:
        # that takes any delay up to 65,535 s to the base).
        if now - self._window_end >= self.WINDOW:
            idle_windows = int((now - self._window_end) // self.WINDOW)
            for _ in range(min(idle_windows, 16)):
                self.delay = self._halved(self.delay)
        self._window_end = now + self.WINDOW
        self._refused = self._served = 0

    def offered(self, delay: int) -> tuple[int, ...]:
        """The seconds a refusal may be told while the delay is ``delay``: the delay itself without ``jitter``, else
        the upper half of it, but for ``avoid``."""
        offers = self._offers.get(delay)
        if offers is None:
            span = range((delay + 1) // 2, delay + 1) if self._jitter is not None else (delay,)
            offers = self._offers[delay] = tuple(s for s in span if s not in self._avoid) or (delay,)
        return offers

    def refused(self) -> int:
        """Count a refusal; the seconds its ``Retry-After`` says."""
        self._roll()
        self._refused += 1
        offers = self.offered(self.delay)
        return offers[0] if self._jitter is None or len(offers) == 1 else self._jitter.choice(offers)

    def served(self) -> None:
        """Count a request that was served (whatever its status, but a refusal)."""
        self._roll()
        self._served += 1


def settings_backoff() -> Backoff:
    """A worker's ``Backoff`` as the settings make it: ``ADMISSION_RETRY_AFTER`` up to ``ADMISSION_RETRY_AFTER_MAX``,
    jittered per ``ADMISSION_RETRY_AFTER_JITTER``, away from ``GUNICORN_KEEPALIVE``. The gate's, and the one
    ``perf.checks`` reads ``reachable_delays`` of."""
    return Backoff(
        base=settings.ADMISSION_RETRY_AFTER,
        ceiling=settings.ADMISSION_RETRY_AFTER_MAX,
        jitter=random.Random() if settings.ADMISSION_RETRY_AFTER_JITTER else None,
        avoid=keepalive_band(settings.GUNICORN_KEEPALIVE),
    )


def reachable_delays(backoff: Backoff) -> set[int]:
    """Every ``Retry-After`` ``backoff`` can give: what it offers at each delay from its base, doubled up to the
    ceiling and halved back, from wherever the load turned it (the Backoff's own steps). ``perf.checks`` keeps them
    away from the keep-alive."""
    seen: set[int] = set()
    todo = [backoff.base]
    while todo:
        delay = todo.pop()
        if delay in seen:
            continue
        seen.add(delay)
        todo += [backoff._doubled(delay), backoff._halved(delay)]
    return {offer for delay in seen for offer in backoff.offered(delay)}


def _semaphore(size: int) -> Any:
    """A ``BoundedSemaphore`` of ``size``: gevent's where gevent has patched threading, else threading's."""
    if gevent_patched("threading"):
        import gevent.lock

        return gevent.lock.BoundedSemaphore(size)
    return threading.BoundedSemaphore(size)


class Lane:
    """At most ``size`` requests at once (0: no bound), a further one waiting for a turn; ``count``: how many hold one.

    A semaphore: gevent's own in a gevent worker (cooperative: a waiting greenlet costs nothing, and waiters are
    woken in the order they came), a thread one elsewhere. Every request takes and gives back a turn: threading's
    semaphore, written in Python over a condition and two gevent-patched locks, took 5 us for the pair, gevent's
    0.3 us (docs/capacity/analysis.md, section 20).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.count = 0
        self._semaphore: Any = _semaphore(size) if size else None

    def enter(self, timeout: float = 0) -> bool:
        """Take a turn, waiting for one at most ``timeout`` seconds; False when none came free in time."""
        if self._semaphore is not None:
            taken = self._semaphore.acquire(timeout=timeout) if timeout > 0 else self._semaphore.acquire(blocking=False)
            if not taken:
                return False
        self.count += 1
        return True

    def leave(self) -> None:
        self.count -= 1
        if self._semaphore is not None:
            self._semaphore.release()


class HeavyLane:
    """Bulk requests running at once: at most ``limit``, which follows how long they take; ``running``: how many.

    A fixed number of slots is too many or too few. While bulk work finishes quickly (the machine has CPU to spare),
    more of it at once costs nobody anything and refusing it is a needless error; once the CPU is short, the bulk
    pool's lower priority leaves it a sliver of it, shared by every bulk request running. With a fixed two per worker
    and the pool at nice +10, they took up to 9 s under overload; adapting, with the pool at nice +5, under 5 s
    (neither alone was enough: docs/capacity/analysis.md, section 10). So the limit adapts to each request's time
    (``release(started)``), additive increase, multiplicative decrease:

    - one that took longer than ``target`` seconds halves it (not below 1), if it shared the lane with another
      request at some time (one running alone is slow because it is large: fewer at once would not have helped
      it) and was admitted after the last decrease (those admitted before it tell about the limit already cut:
      one slow period halves it once);
    - one that took at most half of ``target`` raises it by one, up to ``slots``;
    - a limit below ``slots`` is raised by one every ``RECOVERY`` targets without a change, so that a mix of large
      requests (never quick, even alone) does not keep it low once the machine has CPU again.

    ``target`` 0 keeps ``slots`` fixed (0 slots: every bulk request is refused). A request that finds the limit
    reached waits for a turn (gevent-patched in a gevent worker) at most its timeout; a request arriving meanwhile
    may take a slot first, as with a semaphore. The time measured is the slot's, until it is released: for a
    streamed body (an export), until the client has read it, so a slow reader counts as slow bulk work.

    The interface is a semaphore's: ``acquire`` answers the time the slot was taken (``None`` when none came free),
    to be given back to ``release``; a release without it frees the slot without a measurement (a request that did
    no bulk work). Releasing more than was acquired raises ``ValueError``, as a ``BoundedSemaphore`` does.
    Precondition: ``clock`` is monotonic and, when a waiting ``acquire`` is to end, advances with real time
    (``Condition.wait`` waits in real time; a test clock serves only non-waiting calls).
    """

    RECOVERY = 4

    def __init__(
        self,
        slots: int,
        *,
        target: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_limit: Callable[[int], None] | None = None,
        on_slots: Callable[[int], None] | None = None,
    ) -> None:
        self.slots = max(slots, 0)
        self.limit = self.slots
        self.target = max(target, 0.0)
        self.running = 0
        self._clock = clock
        self._on_limit, self._on_slots = on_limit, on_slots
        self._turn = threading.Condition(threading.Lock())
        now = clock()
        # When the limit last changed (recovery) and last decreased (one decrease per slow period), and when a timed
        # request last gave its slot back (whether a finishing request shared the lane).
        self._changed_at = self._decreased_at = now
        self._last_release = float("-inf")
        # The most it admits first (what its limit is compared with), then the limit.
        self._publish(self.slots, slots=True)
        self._publish(self.limit)

    def now(self) -> float:
        """The lane's clock: what ``acquire`` answers, for a caller that starts the measurement later."""
        return self._clock()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> float | None:
        """Take a slot, waiting at most ``timeout`` seconds (forever: None; not at all: ``blocking`` False or
        ``timeout`` 0); the time it was taken at, or None when none came free in time."""
        deadline = None if timeout is None else self._clock() + timeout
        started: float | None = None
        raised = 0
        with self._turn:
            while True:
                if self._recover():
                    raised = self.limit
                if self.running < self.limit:
                    self.running += 1
                    started = self._clock()
                    break
                remaining = None if deadline is None else deadline - self._clock()
                if not blocking or (remaining is not None and remaining <= 0):
                    break
                self._turn.wait(self._until_recovery(remaining))
        if raised:
            self._publish(raised)
        return started

    def release(self, started: float | None = None, *, admitted: float | None = None) -> None:
        """Free a slot; ``started`` (what ``acquire`` answered, or a later ``now()``: the time to judge is measured
        from it) adjusts the limit by the time since. ``admitted``: what ``acquire`` answered, when ``started`` is
        later (a request judged after its upload still belongs to the period it was admitted in)."""
        with self._turn:
            if self.running <= 0:
                raise ValueError("HeavyLane released more often than acquired")
            now = self._clock()
            shared = started is not None and (self.running > 1 or self._last_release > started)
            self.running -= 1
            limit = self.limit
            if started is not None and self.target > 0:
                # Only requests that did bulk work mark the others as having shared the lane with them.
                self._last_release = now
                took = now - started
                admitted = started if admitted is None else admitted
                if took > self.target:
                    if shared and admitted >= self._decreased_at and limit > 1:
                        self.limit = limit // 2
                        self._changed_at = self._decreased_at = now
                elif took <= self.target / 2 and limit < self.slots:
                    self.limit = limit + 1
                    self._changed_at = now
            # Wake as many waiters as there are free slots (a raised limit may free one more than this release).
            self._turn.notify(max(self.limit - self.running, 0))
            changed = self.limit if self.limit != limit else 0
        if changed:
            self._publish(changed)

    def _until_recovery(self, remaining: float | None) -> float | None:
        """How long a waiter waits before looking again: ``remaining``, or less when a slot is due to be recovered
        first (a waiter then takes it, not a request arriving later). Holding the lock."""
        if self.target <= 0 or self.limit >= self.slots:
            return remaining
        due = max(self._changed_at + self.RECOVERY * self.target - self._clock(), 0.0)
        return due if remaining is None else min(remaining, due)

    def _recover(self) -> bool:
        """Raise a limit left below the slots for ``RECOVERY`` targets; whether it did. Holding the lock."""
        if self.target <= 0 or self.limit >= self.slots:
            return False
        now = self._clock()
        if now - self._changed_at < self.RECOVERY * self.target:
            return False
        self.limit += 1
        self._changed_at = now
        return True

    def _publish(self, value: int, *, slots: bool = False) -> None:
        """Tell ``on_limit`` the limit (or ``on_slots`` the slots); outside the lock, and never failing the request or
        the worker's start (it is a metric)."""
        publish = self._on_slots if slots else self._on_limit
        if publish is None:
            return
        try:
            publish(value)
        except Exception:  # a metrics file that cannot be written must not fail a bulk request
            logger.exception("Could not publish the heavy lane's %s", "slots" if slots else "limit")


def _publish_heavy_limit(limit: int) -> None:
    """``vcci_admission_heavy_limit`` of this process's role (``HeavyLane._publish`` guards the call)."""
    from perf.metrics import ADMISSION_HEAVY_LIMIT, server_role

    ADMISSION_HEAVY_LIMIT.labels(server_role()).set(limit)


def _publish_heavy_slots(slots: int) -> None:
    """``vcci_admission_heavy_slots`` of this process's role (``HeavyLane._publish`` guards the call)."""
    from perf.metrics import ADMISSION_HEAVY_SLOTS, server_role

    ADMISSION_HEAVY_SLOTS.labels(server_role()).set(slots)


class Gate:
    """One worker's admission state (a process has one: ``gate()``): places for requests in flight, the lane of
    cached reads, heavy slots, and the delay refusals carry.

    ``places`` bound the requests that compute (``ADMISSION_MAX_IN_FLIGHT``); ``cached`` the reads that the cache
    may answer (``ADMISSION_MAX_CACHED_IN_FLIGHT``), apart, so that neither kind waits behind the other: a cached
    read is answered in about a millisecond, and one behind requests that compute waited as long as they did; and
    unbounded, cached reads were so many at once under overload that every request that computes waited for a turn
    of all of them at each of its queries.
    """

    def __init__(self, *, max_in_flight: int, heavy_slots: int, max_cached: int = 0, heavy_target: float = 0.0) -> None:
        self.places = Lane(max_in_flight)
        self.cached = Lane(max_cached)
        self.operations = Lane(OPERATIONS_IN_FLIGHT)
        self.heavy_slots = HeavyLane(
            heavy_slots, target=heavy_target, on_limit=_publish_heavy_limit, on_slots=_publish_heavy_slots
        )
        self.backoff = settings_backoff()

    @property
    def in_flight(self) -> int:
        """Requests holding a place (computing)."""
        return self.places.count

    @property
    def running(self) -> int:
        """Requests holding a place or a turn in the cached lane: those sharing the worker's CPU."""
        return self.places.count + self.cached.count

    def enter(self, timeout: float = 0) -> bool:
        """Take a place, waiting for one at most ``timeout`` seconds; False when none came free in time."""
        return self.places.enter(timeout)

    def leave(self) -> None:
        self.places.leave()


_gate: Gate | None = None
_gate_lock = threading.Lock()


def gate() -> Gate:
    """This process's gate, built from the settings on first use (``reset()`` forgets it)."""
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = Gate(
                max_in_flight=settings.ADMISSION_MAX_IN_FLIGHT,
                heavy_slots=settings.ADMISSION_HEAVY_SLOTS,
                max_cached=settings.ADMISSION_MAX_CACHED_IN_FLIGHT,
                heavy_target=settings.ADMISSION_HEAVY_TARGET,
            )
        return _gate


def reset() -> None:
    """Forget the gate (tests that change the admission settings)."""
    global _gate
    with _gate_lock:
        _gate = None


class _Held:
    """What one request holds of its worker's gate: a place, a turn in the cached lane or in the operations lane, a
    heavy slot. Released once (``__call__``), at whichever end comes first: the response returned, or its streamed
    body closed."""

    __slots__ = ("cached", "done", "gate", "heavy", "operations", "place", "untimed")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.place = False
        self.cached = False
        self.operations = False
        # When the heavy slot was taken (``HeavyLane.acquire``), None while none is held.
        self.heavy: float | None = None
        self.untimed = False  # the answer was no bulk work (``untimed``): the slot is freed without a measurement
        self.done = False

    def leave_cached(self) -> None:
        if self.cached:
            self.cached = False
            self.gate.cached.leave()

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.leave_cached()
        if self.operations:
            self.gate.operations.leave()
        if self.place:
            self.gate.leave()
        if self.heavy is not None:
            self.gate.heavy_slots.release(None if self.untimed else self.heavy)


def admit(request: HttpRequest) -> bool:
    """Take ``request``'s place among the requests in flight, waiting at most ``ADMISSION_QUEUE_WAIT`` seconds; False
    when none came free in time (answer ``refusal(IN_FLIGHT)``). Taking it twice takes one place. A turn in the
    cached lane is given back first: the request computes now.

    A request that did not come through ``AdmissionMiddleware`` (a view called directly) is not bounded: True.
    """
    held: _Held | None = getattr(request, "_admission", None)
    if held is None or held.place:
        return True
    held.leave_cached()
    if not held.gate.enter(timeout=settings.ADMISSION_QUEUE_WAIT):
        return False
    held.place = True
    return True


class AdmissionMiddleware:
    """Bound what runs at once; what cannot start within its wait gets 503 + ``Retry-After`` (module docstring).

    Place it right after the first metrics middleware: refusals are then counted in the HTTP metrics and cost no
    database work (the middleware after it has only set up its lazy session and user when ``process_view`` runs,
    and runs before the other middleware's ``process_view``). The place is taken once the view is known
    (``process_view``), except for views that answer cached reads before any other work
    (``admission_after_cache``: ``perf.conditional.CachedResponseMixin``), which get a turn in the cached lane
    instead, and take a place with ``admit()`` only when the cache cannot answer (``Gate``).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        # The bulk pool's forwarder (perf.bulkpool, outside Django) found no slot: refused here, so that the
        # refusal is counted and logged like every other.
        refused = request.META.get(REFUSE)
        if refused in _MESSAGES:
            return refusal(refused)
        held = _Held(gate())
        request._admission = held  # type: ignore[attr-defined]
        try:
            response = self.get_response(request)
        except BaseException:
            held()
            raise
        if not getattr(response, "admission_refused", False):
            held.gate.backoff.served()
        if getattr(response, "admission_untimed", False) and held.heavy is not None:
            held.untimed = True
            from perf.metrics import server_role

            if server_role() == "bulk":
                response.headers[UNTIMED_HEADER] = "1"  # for the forwarding worker's lane (perf.bulkpool)
        if response.streaming:
            # A streamed body (an export) is produced after this returns, while the server iterates it: the
            # request stays in flight, and keeps its heavy slot, until the server closes the response
            # (``_resource_closers``: the callables Django's ``HttpResponseBase.close()`` runs).
            response._resource_closers.append(held)  # type: ignore[attr-defined]
        else:
            held()
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponseBase | None:
        if getattr(view_func, "admission_exempt", False):
            return None
        held: _Held = request._admission  # type: ignore[attr-defined]  # set by __call__, around this
        if getattr(view_func, "admission_operations", False):
            if not held.gate.operations.enter(timeout=settings.ADMISSION_QUEUE_WAIT):
                return refusal(IN_FLIGHT)
            held.operations = True
            return None
        view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
        if request.method == "GET" and getattr(view_class, "admission_after_cache", False):
            # A turn in the cached lane (only GETs are answered from the cache); the view takes a place (admit)
            # if the cache cannot answer.
            if not held.gate.cached.enter(timeout=settings.ADMISSION_QUEUE_WAIT):
                return refusal(IN_FLIGHT)
            held.cached = True
        elif not admit(request):
            return refusal(IN_FLIGHT)
        if not is_heavy(view_class, request.method or "", request.META):
            return None
        started = held.gate.heavy_slots.acquire(timeout=settings.ADMISSION_HEAVY_WAIT)
        if started is None:
            return refusal(HEAVY_BUSY)
        # Released with the request's place (``_Held``): for a streamed body, when it is closed; the time it was held
        # adjusts the lane's limit.
        held.heavy = started
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if isinstance(exception, OperationalError) and _pool_timeout(exception):
            return refusal(DB_POOL)
        return None
