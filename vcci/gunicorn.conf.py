"""Gunicorn settings for VCCI: ``gunicorn -c vcci/gunicorn.conf.py vcci.wsgi``.

Every knob comes from the environment so that one file serves a laptop and a container:

    GUNICORN_BIND                127.0.0.1:8000
    GUNICORN_WORKERS             2          processes (roughly one per CPU core)
    GUNICORN_WORKER_CLASS        gevent     "sync" to debug without greenlets
    GUNICORN_WORKER_CONNECTIONS  100        concurrent requests (greenlets) per gevent worker
    GUNICORN_TIMEOUT             60         seconds a worker may be silent before it is killed
    GUNICORN_GRACEFUL_TIMEOUT    30         seconds to finish in-flight requests on restart/stop
    GUNICORN_KEEPALIVE           5          seconds to keep an idle client connection
    GUNICORN_MAX_REQUESTS        0          recycle a worker after N requests (0 = never)
    GUNICORN_LOG_LEVEL           info

Why gevent, and why it is safe with Django + psycopg 3
-------------------------------------------------------
The API spends most of a request waiting on PostgreSQL and Redis, so cooperative
greenlets give many concurrent requests per process for little memory.

* Patching order. gunicorn's gevent worker (gunicorn/workers/ggevent.py,
  ``GeventWorker.init_process``) calls ``monkey.patch_all()`` and ``hub.reinit()`` and only
  then ``super().init_process()``, which calls ``load_wsgi()`` -- the first import of
  ``vcci.wsgi``, hence of Django and psycopg. That holds only while the application is NOT
  loaded in the master, hence ``preload_app = False`` below. This file itself is read by
  the master, so it must not import Django, psycopg or anything that opens sockets.
* psycopg 3 needs no psycogreen: it supports gevent by itself since 3.1.14 (per the
  psycogreen README). psycopg/waiting.py picks its wait function at import time: when
  ``gevent.monkey.is_module_patched("select")`` is true it uses the (patched, cooperative)
  poll/select waits instead of the C ``wait_c``, which would block the whole worker. That
  check is another reason psycopg must be imported after patching.
* Connections. Under gevent Django's per-thread connections become per-greenlet, so
  without a pool a host could open WORKERS x WORKER_CONNECTIONS PostgreSQL connections at
  peak (200 with the defaults). vcci/settings.py therefore gives each worker a psycopg pool
  of at most (DB_MAX_CONNECTIONS - DB_RESERVED_CONNECTIONS) // WORKERS connections (capped at
  WORKER_CONNECTIONS; 45 with the defaults), reading GUNICORN_WORKERS, GUNICORN_WORKER_CLASS
  and GUNICORN_WORKER_CONNECTIONS with the same defaults as this file. Greenlets beyond the
  pool wait for a connection up to DB_POOL_TIMEOUT seconds. See docs/database.md.

No ``post_fork``/``on_starting`` hook is needed: the worker class already patches at the
right moment, and psycopg detects the patching on its own.

Cache warm-up on boot
---------------------
With ``CACHE_WARM_ON_BOOT`` on (settings), ``post_worker_init`` below starts
``perf.warm.warm_on_boot``: each worker, once its application is loaded, fills the cache for
every organization with activity data in the background (a greenlet under gevent, else a
daemon thread) while it already serves. The first worker fills Redis (L2); the others and
recycled workers (``GUNICORN_MAX_REQUESTS``) mostly find it there. The hook imports Django
lazily, inside the function: this file is read by the master too.
"""

from __future__ import annotations

import os
from typing import Any


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer; got {raw!r}") from exc


bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = _int("GUNICORN_WORKERS", 2)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 100)
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
# Spread recycling so all workers do not restart at the same moment.
max_requests_jitter = max_requests // 10

# Load the app in each worker, after gevent has patched the standard library (see above).
# Preloading would import Django and psycopg in the unpatched master; workers would inherit
# blocking sockets and psycopg's non-cooperative C wait function.
preload_app = False

loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
accesslog = "-"
errorlog = "-"
# %(M)s = request time in milliseconds, %(D)s = in microseconds (logged for precise percentiles).
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms %(D)sus "%(a)s"'

# Behind a reverse proxy on the same host, trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "vcci"


def post_worker_init(worker: Any) -> None:
    """Start the background cache warm-up of this worker (``perf.warm.warm_on_boot``); never raises.

    Gunicorn calls it in the worker after ``load_wsgi()``, so gevent has patched and Django is set
    up: importing the project here is safe, unlike at the top of this file (read by the master).
    """
    try:
        from perf.warm import warm_on_boot

        warm_on_boot(worker)
    except Exception:
        # A cold cache only costs speed; a worker that fails to boot costs capacity.
        worker.log.exception("Could not start the cache warm-up; the worker serves with a cold cache")
