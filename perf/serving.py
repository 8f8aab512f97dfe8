"""Serving checks for gunicorn's gevent workers: a database wait must never block the whole worker.

A gevent worker runs many requests as greenlets in one OS thread. While one greenlet waits for
PostgreSQL, the others run only if the wait goes through gevent's hub. psycopg 3 picks its wait
function once, when ``psycopg.waiting`` is imported (psycopg/waiting.py, end of the module):

- ``PSYCOPG_WAIT_FUNC`` in the environment names one explicitly;
- otherwise, with the C extension and ``gevent.monkey.is_module_patched("select")`` false, the C
  ``wait_c``, which calls poll(2) itself and blocks the whole process for the query's duration;
- otherwise ``wait_poll`` on Linux (``wait_select`` where the default selector is select,
  ``wait_selector`` elsewhere), which call ``select.poll()`` / ``select.select()`` /
  ``selectors.DefaultSelector`` and so yield to the hub once gevent has patched those.

``wait_conn`` (every new connection, including the pool's) uses ``DefaultSelector`` as bound when
psycopg was imported. So everything hinges on psycopg being imported after gevent patched the
standard library; ``vcci/gunicorn.conf.py`` arranges that (no ``preload_app``, no project import in
the master) and calls ``check_worker`` from ``post_worker_init`` to prove it held: a worker whose
psycopg would block refuses to boot (gunicorn then stops with "Worker failed to boot").

This module imports neither Django, psycopg nor gevent at import time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

# psycopg's pure-Python waits: they reach the OS through select/selectors at call time, which gevent
# patches. wait_c (C) and wait_epoll (select.epoll, which gevent's patching removes) never yield.
COOPERATIVE_WAITS = ("wait_poll", "wait_select", "wait_selector")
# The patched primitive each cooperative wait calls, as attribute paths on psycopg.waiting.
_WAIT_PRIMITIVES = {
    "wait_poll": ("select", "poll"),
    "wait_select": ("select", "select"),
    "wait_selector": ("DefaultSelector",),
}
# What gevent must have patched for a request never to block the worker: sockets (PostgreSQL, Redis),
# select and selectors (psycopg's waits), threading (psycopg_pool's locks, conditions and worker threads;
# Django's per-greenlet connections) and time (sleeps, e.g. the Redis lock's retry loop).
REQUIRED_PATCHES = ("socket", "select", "selectors", "threading", "time")
# gunicorn's gevent worker classes (GeventWorker, GeventPyWSGIWorker) live in this module.
GEVENT_WORKER_MODULE = "gunicorn.workers.ggevent"


class BlockingWaitError(RuntimeError):
    """psycopg would block the whole gevent worker while it waits for PostgreSQL."""


def gevent_patched(module: str) -> bool:
    """Whether gevent has monkey-patched ``module`` in this process (False when gevent is not in use)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched(module))


def _from_gevent(obj: object) -> bool:
    return str(getattr(obj, "__module__", "")).split(".")[0] == "gevent"


def _resolve(root: object, path: tuple[str, ...]) -> object:
    for name in path:
        root = getattr(root, name, None)
    return root


def psycopg_wait_problems(
    waiting: ModuleType | Any = None, *, patched: Callable[[str], bool] = gevent_patched
) -> list[str]:
    """Why psycopg would block a gevent worker; an empty list when each of its waits yields to the hub.

    ``waiting`` defaults to ``psycopg.waiting`` (imported here: call this only after gevent has
    patched, or the import itself makes psycopg choose ``wait_c``). ``patched(module)`` tells
    whether gevent patched a standard module; tests pass stand-ins for both.
    """
    if waiting is None:
        import psycopg.waiting as waiting

    problems = []
    missing = [module for module in REQUIRED_PATCHES if not patched(module)]
    if missing:
        problems.append(
            f"gevent has not monkey-patched {', '.join(missing)}: this is not a patched gevent process "
            "(run under gunicorn's gevent worker, which calls gevent.monkey.patch_all() first)."
        )
    wait = waiting.wait
    name = str(getattr(wait, "__name__", repr(wait)))
    if name not in COOPERATIVE_WAITS or wait is not getattr(waiting, name, None):
        problems.append(
            f"psycopg waits for PostgreSQL with {name} ({getattr(wait, '__module__', '?')}), which blocks the whole "
            "worker for each query. psycopg was imported before gevent patched select (preload_app, or a project "
            "import in gunicorn.conf.py or a master-side hook), or PSYCOPG_WAIT_FUNC forces it."
        )
    else:
        primitive = _resolve(waiting, _WAIT_PRIMITIVES[name])
        if not _from_gevent(primitive):
            problems.append(f"psycopg's {name} would call {primitive!r}, not gevent's cooperative version.")
    if not _from_gevent(getattr(waiting, "DefaultSelector", None)):
        problems.append(
            f"psycopg opens connections waiting on {getattr(waiting, 'DefaultSelector', None)!r}, not gevent's "
            "selector: psycopg was imported before gevent patched selectors."
        )
    return problems


def check_psycopg_waits_cooperatively(
    waiting: ModuleType | Any = None, *, patched: Callable[[str], bool] = gevent_patched
) -> str:
    """Return the name of psycopg's wait function; raise ``BlockingWaitError`` if it would block gevent.

    Same preconditions as ``psycopg_wait_problems``.
    """
    if waiting is None:
        import psycopg.waiting as waiting

    problems = psycopg_wait_problems(waiting, patched=patched)
    if problems:
        raise BlockingWaitError("A query would block the whole gevent worker: " + " ".join(problems))
    return str(waiting.wait.__name__)


def is_gevent_worker(worker: object) -> bool:
    """Whether ``worker`` is one of gunicorn's gevent workers (decided without importing gevent)."""
    return any(cls.__module__ == GEVENT_WORKER_MODULE for cls in type(worker).__mro__)


def check_worker(
    worker: Any, *, waiting: ModuleType | Any = None, patched: Callable[[str], bool] = gevent_patched
) -> None:
    """gunicorn ``post_worker_init`` check: under a gevent worker, refuse to serve with a blocking psycopg.

    Precondition: the worker has loaded the application (gevent patched first). Raises
    ``BlockingWaitError``; gunicorn then exits the worker with its boot-error code and the master
    stops rather than serve one request at a time per process. Other worker classes are not checked.
    ``waiting`` and ``patched`` are as for ``psycopg_wait_problems``.
    """
    if not is_gevent_worker(worker):
        return
    name = check_psycopg_waits_cooperatively(waiting, patched=patched)
    worker.log.info("psycopg waits cooperatively under gevent (%s)", name)


def accept_in_batches(worker: Any, count: int) -> bool:
    """Let ``worker`` accept up to ``count`` waiting connections each time its listening socket is ready; whether it
    applies (it does for gunicorn's ``GeventWorker`` with several workers).

    gunicorn's ``GeventWorker.run`` lowers each server's ``max_accept`` to 1 when there are several workers, so that
    one worker does not take a burst of connections the others could serve. A worker comes round to its listening
    socket once per turn of its event loop, tens of milliseconds under load (``perf.looplag``), so one connection per
    turn left starting clients in the accept queue (docs/serving.md, "Connections, admission and the database pool").
    A batch still spreads: a worker busy with requests comes round less often and the other takes more.

    Replaces the server class gunicorn's gevent worker module builds with a subclass on which gunicorn's assignment of
    ``max_accept`` has no effect; ``count`` is kept instead. A single worker keeps gevent's own (100), which gunicorn
    leaves alone; the pywsgi worker class (``gevent_pywsgi``) builds another server, which sets its own.
    Preconditions: called in the worker before ``GeventWorker.run`` builds its servers (``post_worker_init``);
    ``count`` >= 1.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1; got {count}")
    if getattr(worker, "server_class", None) is not None or worker.cfg.workers < 2:
        return False
    import gunicorn.workers.ggevent as ggevent
    from gevent.server import StreamServer

    class BatchAcceptServer(StreamServer):
        """gunicorn's StreamServer, accepting ``count`` connections per readiness of its socket whatever it is told."""

        max_accept = property(lambda self: count, lambda self, value: None)

    ggevent.StreamServer = BatchAcceptServer
    return True
