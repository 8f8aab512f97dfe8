"""Admission control and cooperative scheduling: no unbounded queue, bulk work neither starves nor is starved.

A gevent worker runs every request of its connections on one thread. Four things decide whether a request
that has reached the worker is served, waits (for a bounded time), or is refused with ``Retry-After``:

**Heavy work is admitted by slot.** A view declares which of its methods are bulk work (``admission_heavy``
on the view class: ``{"post"}`` for a batch endpoint, ``{"get"}`` for an export), optionally only above a
body size (``admission_heavy_min_body``: a small write stays a small write). Each worker runs at most
``ADMISSION_HEAVY_SLOTS`` of them at once; a further one waits for a slot at most
``ADMISSION_HEAVY_WAIT`` seconds, then is refused with 503 and ``Retry-After``. Reads and small writes
never wait for these slots: when work exceeds capacity, bulk work is what is refused first.

**Everything in flight is bounded.** A worker runs at most ``ADMISSION_MAX_IN_FLIGHT`` requests at once; the
next waits for a place, first come first served, at most ``ADMISSION_QUEUE_WAIT`` seconds, then is refused
(503, ``Retry-After``). Without the bound, every request admitted makes every other one slower: under
overload each worker ran some 250 at once, bulk requests got a 250th of the CPU and ran past their clients'
timeouts, and requests holding database connections waited for the CPU while others waited for them. Idle keep-alive
connections are not requests: they hold a socket, not a slot (``worker_connections`` bounds sockets,
see vcci/gunicorn.conf.py; the database pool bounds database work).

**A database pool that is exhausted answers 503.** A request that waited ``DB_POOL_TIMEOUT`` seconds
for a pooled connection is answered 503 with ``Retry-After`` (JSON), not a 500 with a traceback.

**CPU-bound loops yield.** ``cooperate()``, called once per item by loops that can run for long
(batch calculations, bulk writes, exports), lets the worker's other greenlets run when the current one
has held the CPU for a slice (``COOPERATE_SLICE_MS``, longer when many requests are in flight): a 200-item
calculation then delays a cached read by at most one slice instead of its whole run. Outside gevent (a sync
or gthread worker, tests, commands) it does nothing: the operating system schedules threads.

Refusals are counted in ``vcci_admission_refused_total{reason}`` and carry ``Retry-After``; the JSON
body is ``{"detail": ...}`` like every other API error.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from perf.errors import exception_chain, json_error
from perf.serving import gevent_patched

# Reasons a request is refused (the metric's label values).
HEAVY_BUSY = "heavy_busy"
IN_FLIGHT = "in_flight"
DB_POOL = "db_pool"
# The environ key by which perf.bulkpool's forwarder asks the worker's Django to refuse a request (a reason above).
REFUSE = "vcci.admission.refuse"

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
    once. The slice is ``COOPERATE_SLICE_MS``, or ``COOPERATE_SLICE_PER_REQUEST_MS`` per request in flight if
    that is more: after each slice the loop waits for a turn of every other running request, so a fixed slice
    would give bulk work a share of the CPU that shrinks as load grows (under overload a 500-line write took
    over 50 s with 10 ms slices and 64 requests in flight). A slice proportional to the requests in flight
    keeps its share about constant: some 1 / (1 + a request's turn in ms), a third at 2 ms turns.
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
    slice_ms = max(settings.COOPERATE_SLICE_MS, settings.COOPERATE_SLICE_PER_REQUEST_MS * gate().in_flight)
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
    """503 with ``Retry-After`` and a JSON ``detail``, counted under ``reason``."""
    from perf.metrics import ADMISSION_REFUSED

    ADMISSION_REFUSED.labels(reason=reason).inc()
    response = json_error(503, _MESSAGES[reason])
    response["Retry-After"] = str(settings.ADMISSION_RETRY_AFTER)
    # Counted above; Django would otherwise log every refusal as an error with its request, which under
    # overload is thousands of log lines a second doing the work the refusal spares.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def _pool_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is (or was caused by) psycopg_pool's PoolTimeout: no pooled connection came in time."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # no pool installed: nothing to recognise
        return False
    return any(isinstance(link, PoolTimeout) for link in exception_chain(exc))


class Gate:
    """One worker's admission state: places for requests in flight and heavy slots (a process has one: ``gate()``).

    Both are semaphores, patched by gevent in a gevent worker (cooperative: a waiting greenlet costs nothing,
    and waiters are woken in the order they came), real ones elsewhere. ``max_in_flight`` 0: no bound.
    """

    def __init__(self, *, max_in_flight: int, heavy_slots: int) -> None:
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._places = threading.BoundedSemaphore(max_in_flight) if max_in_flight else None
        self.heavy_slots = threading.BoundedSemaphore(heavy_slots)

    def enter(self, timeout: float = 0) -> bool:
        """Take a place, waiting for one at most ``timeout`` seconds; False when none came free in time."""
        if self._places is not None:
            taken = self._places.acquire(timeout=timeout) if timeout > 0 else self._places.acquire(blocking=False)
            if not taken:
                return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        if self._places is not None:
            self._places.release()


_gate: Gate | None = None
_gate_lock = threading.Lock()


def gate() -> Gate:
    """This process's gate, built from the settings on first use (``reset()`` forgets it)."""
    global _gate
    with _gate_lock:
        if _gate is None:
            _gate = Gate(max_in_flight=settings.ADMISSION_MAX_IN_FLIGHT, heavy_slots=settings.ADMISSION_HEAVY_SLOTS)
        return _gate


def reset() -> None:
    """Forget the gate (tests that change the admission settings)."""
    global _gate
    with _gate_lock:
        _gate = None


class _Once:
    """Leave the gate and release the request's heavy slot, once, whichever of the two ends comes first."""

    __slots__ = ("done", "gate", "request")

    def __init__(self, gate: Gate, request: HttpRequest) -> None:
        self.gate, self.request, self.done = gate, request, False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.gate.leave()
        slot = getattr(self.request, "_admission_slot", None)
        if slot is not None:
            slot.release()


class AdmissionMiddleware:
    """Bound what runs at once; what cannot start within its wait gets 503 + ``Retry-After`` (module docstring).

    Place it right after the first metrics middleware: refusals are then counted in the HTTP metrics
    and cost no session, authentication or database work.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        # The bulk pool's forwarder (perf.bulkpool, outside Django) found no slot: refused here, so that the
        # refusal is counted and logged like every other.
        refused = request.META.get(REFUSE)
        if refused in _MESSAGES:
            return refusal(refused)
        current = gate()
        if not current.enter(timeout=settings.ADMISSION_QUEUE_WAIT):
            return refusal(IN_FLIGHT)
        done = _Once(current, request)
        try:
            response = self.get_response(request)
        except BaseException:
            done()
            raise
        if response.streaming:
            # A streamed body (an export) is produced after this returns, while the server iterates it: the
            # request stays in flight, and keeps its heavy slot, until the server closes the response
            # (``_resource_closers``: the callables Django's ``HttpResponseBase.close()`` runs).
            response._resource_closers.append(done)  # type: ignore[attr-defined]
        else:
            done()
        return response

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponseBase | None:
        view_class = getattr(view_func, "view_class", None) or getattr(view_func, "cls", None)
        if not is_heavy(view_class, request.method or "", request.META):
            return None
        slots = gate().heavy_slots
        if not slots.acquire(timeout=settings.ADMISSION_HEAVY_WAIT):
            return refusal(HEAVY_BUSY)
        # Released with the request's in-flight place (``_Once``): for a streamed body, when it is closed.
        request._admission_slot = slots  # type: ignore[attr-defined]
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponseBase | None:
        if isinstance(exception, OperationalError) and _pool_timeout(exception):
            return refusal(DB_POOL)
        return None
