"""Gunicorn settings for VCCI: ``gunicorn -c vcci/gunicorn.conf.py vcci.wsgi``.

Every knob comes from the environment so that one file serves a laptop and a container:

    GUNICORN_BIND                127.0.0.1:8000
    GUNICORN_WORKERS             2          processes (roughly one per CPU core)
    GUNICORN_WORKER_CLASS        gevent     "sync" to debug without greenlets, "gthread" for threads
    GUNICORN_THREADS             1          threads per gthread worker
    GUNICORN_WORKER_CONNECTIONS  1000       client connections (sockets, idle keep-alive included) per gevent
                                            worker; requests running at once are bounded by ADMISSION_MAX_IN_FLIGHT
                                            and ADMISSION_MAX_CACHED_IN_FLIGHT (cached reads)
    GUNICORN_ACCEPT_BATCH        16         connections a gevent worker accepts each time its listening socket is
                                            ready, with several workers (gunicorn's own: 1; perf.serving)
    GUNICORN_TIMEOUT             60         seconds a worker may be silent before it is killed
    GUNICORN_GRACEFUL_TIMEOUT    30         seconds to finish in-flight requests on restart/stop
    GUNICORN_KEEPALIVE           20         seconds to keep an idle client connection (longer than clients think,
                                            away from every Retry-After, shorter than the graceful timeout:
                                            see below)
    GUNICORN_MAX_REQUESTS        0          recycle a worker after N requests (0 = never)
    GUNICORN_LOG_LEVEL           info
    GUNICORN_BULK_WORKERS        1          processes of the bulk pool (0: no bulk pool, bulk requests served here)
    GUNICORN_BULK_NICE           5          how much lower the bulk pool's CPU priority is (nice(2) increment)
    PROMETHEUS_MULTIPROC_DIR     <tmp>/vcci-prometheus-<uid>-<bind>   metrics files of every worker
    GUNICORN_CONTROL_SOCKET      <tmp>/vcci-gunicorn-<uid>-<bind>/control.sock   the master's control socket
                                            (gunicornc -s PATH); "off" for none
    GUNICORN_SERVER_HEADER       vcci       the Server response header's value, instead of "gunicorn"

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
* The check. ``post_worker_init`` runs ``perf.serving.check_worker``: in a gevent worker,
  psycopg's wait function must be one that yields to gevent's hub (``wait_poll`` on Linux) and
  its connection selector gevent's. Otherwise the worker raises, exits with gunicorn's boot-error
  code and the master stops ("Worker failed to boot"): a worker whose every query blocks all its
  greenlets must not serve. tests/vcci/test_gunicorn_serving.py proves both the refusal and that
  two ``pg_sleep(0.5)`` requests on one worker overlap.

worker_connections, admission and the database pool
---------------------------------------------------
Connections are not concurrency. ``worker_connections`` is how many client sockets a gevent worker
holds, idle keep-alive connections included: a browser or locust user keeps its connection open
between requests, so with 500 clients and 2 workers each worker holds about 250 sockets while running
a handful of requests. Capped low (it used to be tied to the database pool: 90 per worker), the sockets
beyond the cap waited in the kernel's accept queue, behind keep-alive clients that never went idle for
``keepalive`` seconds, until their clients gave up (60 s timeouts at 500 users: docs/capacity.md). The
default is therefore large (1,000 per worker); a socket costs a greenlet and a few kilobytes.

An idle connection is closed after ``keepalive`` seconds (20). A client that sends on a connection at the moment
the server closes it gets no answer ("connection closed"); clients retry an idempotent request on a new
connection, never a POST. With 5 s, users thinking about 5 s, and clients waiting out a Retry-After of 5 s, met
that moment again and again: POSTs failed under load with nothing wrong on the server (docs/capacity/analysis.md).
20 s is longer than every pause of the load suite's users but the ERP clients' (20-60 s, whose connections are
closed while idle, mostly long before they send: one pausing just over 20 s meets the close, two POSTs of a 10-minute
run in docs/capacity/analysis.md section 22), and at least 2 s from every Retry-After the workers give (a value from
the upper half of 1 s doubled up to ADMISSION_RETRY_AFTER_MAX, 30 s, and halved back, the draw leaving out 19 to
21 s: perf.admission.keepalive_band; the system check perf.W003 warns when other settings leave one within 2 s): a
client that sends again as soon as it has waited 18 s finds its connection open, one back after 22 s or more finds
it closed before and opens another, as the ERP clients do (a
client that also pauses after the wait may meet the close, as any client pausing about 20 s may); idle sockets
cost little, as above.
It is kept below ``graceful_timeout``: a stopping gevent worker (a deploy, HUP, max_requests) waits for its idle
connections too, so a longer keep-alive made every restart with clients connected wait the whole graceful
timeout, then cut the connections.

What is bounded is work: ``perf.admission`` (a middleware) refuses with 503 + ``Retry-After`` a request
that finds ADMISSION_MAX_IN_FLIGHT requests that compute already running in its worker (reads the cache answers
wait in a lane of their own, ADMISSION_MAX_CACHED_IN_FLIGHT), admits bulk requests by slot
(ADMISSION_HEAVY_SLOTS) and answers 503 when the database pool had no connection within
DB_POOL_TIMEOUT seconds. The pool (vcci/settings.py, perf.db.pool_options) bounds database work:
P = min(concurrency, (DB_MAX_CONNECTIONS - DB_RESERVED_CONNECTIONS - the bulk pool's) // W) connections per
worker, 41 with the defaults, whatever ``worker_connections`` is. See docs/capacity.md, docs/database.md and
docs/serving.md.

Metrics from several workers (prometheus_client multiprocess mode)
-------------------------------------------------------------------
Each worker is a process with its own counters; ``/metrics`` is answered by whichever worker
accepts the scrape. In multiprocess mode every worker writes its samples to files in
PROMETHEUS_MULTIPROC_DIR and the view merges them (``perf.metrics``), so counters are summed
over all workers, including dead ones (totals never go backwards). The variable must be in the
environment before a worker imports prometheus_client:

* ``on_starting`` (master, before any worker exists) sets it when unset, to a directory per
  user and bind under the system temp dir; creates it (mode 0700; refused when owned by another
  user); deletes the metric files a previous run left there (only files named like
  prometheus_client's, ``counter_<pid>.db`` etc.), so counters start at zero with the server.
  Workers inherit the environment when forked. One directory per server: two servers sharing
  one would empty and mix each other's files.
* ``child_exit`` (master) calls ``prometheus_client.multiprocess.mark_process_dead(pid)``: a
  dead worker's "live" gauges (the pool gauges, ``livesum``) stop counting.
* ``post_fork`` (worker) drops the master's copy of prometheus_client, which ``child_exit``
  imported: the worker imports its own after gevent's patching, like everything else.

The bulk pool: bulk work at a lower CPU priority
------------------------------------------------
Bulk requests (the views ``perf.admission.heavy`` declares: large activity writes and batch calculations,
exports) are served by a second gunicorn, the bulk pool (``perf.bulkpool``), which ``on_starting`` starts
from this same file (``VCCI_SERVER_ROLE=bulk``): GUNICORN_BULK_WORKERS gevent workers listening on a Unix
socket in a private directory, niced by GUNICORN_BULK_NICE, so that the kernel gives the CPU to the
workers serving reads and small writes first. The workers forward bulk requests there (``BULK_POOL_SOCKET``,
inherited) and relay the answers; the pool admits at most as many at once as all workers may forward
(GUNICORN_WORKERS x ADMISSION_HEAVY_SLOTS; fewer while they take longer than ADMISSION_HEAVY_TARGET, as each
worker does), and its database connections come out of the workers' budget
(``BULK_POOL_DB_CONNECTIONS``). It dies with the master (``on_exit``; ``PR_SET_PDEATHSIG`` if the master
is killed). While it is unreachable the workers serve bulk requests themselves. It writes its metrics to
the same directory, so ``/metrics`` counts its requests too (once: a forwarded request never reaches the
forwarding worker's Django), and its access-log lines start with ``bulk``.

The control socket and the Server header
----------------------------------------
gunicorn (25.1 and later) has its master listen on a control socket for ``gunicornc`` (worker status,
scaling, reload). Its default path is one per user, ``$XDG_RUNTIME_DIR/gunicorn.ctl`` or
``~/.gunicorn/gunicorn.ctl``: every master of that user binds the same path, and each one removes the
socket of the one before, whose ``gunicornc`` then reaches the newest server instead. ``on_starting``
gives each server its own, ``control.sock`` in a private directory (0700) per user and bind beside the
metrics directory, unless GUNICORN_CONTROL_SOCKET (or ``--control-socket``) names one; "off" (or
``--no-control-socket``) disables it. The bulk pool has none: its master is managed by this one.

gunicorn writes ``Server: gunicorn`` on every HTTP/1 response, and has no setting for it (its maintainers
keep the header). The value is ``gunicorn.http.wsgi.SERVER``, which each response copies when it is built:
``post_fork`` sets it to GUNICORN_SERVER_HEADER in every worker, so that responses do not name the server
software (and one less thing identifies its version to a scanner).

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

import contextlib
import ctypes
import gc
import os
import re
import signal
import subprocess
import sys
import tempfile
from typing import Any


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer; got {raw!r}") from exc


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# "bulk" when this file configures the bulk pool's server (started by on_starting below), else the main server.
ROLE_ENV = "VCCI_SERVER_ROLE"
role = os.environ.get(ROLE_ENV, "main")
if role not in ("main", "bulk"):
    raise SystemExit(f"{ROLE_ENV} must be 'main' or 'bulk'; got {role!r}")
BULK_SOCKET_ENV = "BULK_POOL_SOCKET"
# prometheus_client's per-process files (counter_<pid>.db, gauge_livesum_<pid>.db, ...): all on_starting deletes.
_METRIC_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")


bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = _int("GUNICORN_WORKERS", 2)
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
bulk_workers = _int("GUNICORN_BULK_WORKERS", 1)
bulk_nice = _int("GUNICORN_BULK_NICE", 5)
if bulk_workers < 0 or not 0 <= bulk_nice <= 19:
    raise SystemExit(f"GUNICORN_BULK_WORKERS must be >= 0 and GUNICORN_BULK_NICE 0-19; got {bulk_workers}, {bulk_nice}")
# Threads per gthread worker (the settings size its database pool to them); gunicorn turns sync into gthread above 1.
threads = _int("GUNICORN_THREADS", 1)
# Sockets, not concurrent requests (see "worker_connections, admission and the database pool" above).
worker_connections = _int("GUNICORN_WORKER_CONNECTIONS", 1000)
if worker_connections < 1:
    raise SystemExit(f"GUNICORN_WORKER_CONNECTIONS must be at least 1; got {worker_connections}")
# Connections a gevent worker accepts per turn of its event loop (perf.serving.accept_in_batches: gunicorn's 1 left
# new clients waiting in the accept queue while users started).
accept_batch = _int("GUNICORN_ACCEPT_BATCH", 16)
if accept_batch < 1:
    raise SystemExit(f"GUNICORN_ACCEPT_BATCH must be at least 1; got {accept_batch}")
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 20)
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
if role == "bulk":
    # The bulk pool's lines, told apart; its peer is a worker on a Unix socket, the client is in X-Forwarded-For.
    access_log_format = 'bulk %({x-forwarded-for}i)s "%(r)s" %(s)s %(B)s %(M)sms %(D)sus "%(a)s"'
# gunicorn's logger, but building only the atoms the format names, not one per header and environ key (perf.accesslog).
logger_class = "perf.accesslog.AccessLogger"

# The master's control socket (see "The control socket and the Server header" above): a path, or "off".
CONTROL_SOCKET_ENV = "GUNICORN_CONTROL_SOCKET"
_control_socket = os.environ.get(CONTROL_SOCKET_ENV, "").strip()
if _control_socket.lower() in ("off", "0", "false", "none"):
    control_socket_disable = True
elif _control_socket:
    control_socket = _control_socket
# The Server header's value (a product token: RFC 9110 wants one, so it is replaced rather than left empty).
server_header = os.environ.get("GUNICORN_SERVER_HEADER", "vcci").strip() or "vcci"
if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:/[!#$%&'*+.^_`|~0-9A-Za-z-]+)?", server_header):
    raise SystemExit(f"GUNICORN_SERVER_HEADER must be a product token such as 'vcci'; got {server_header!r}")

# Behind a reverse proxy on the same host, trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "vcci-bulk" if role == "bulk" else "vcci"


def _server_dir(kind: str, binds: list[str]) -> str:
    """A directory of this user's server on ``binds`` under the temp dir (one server per bind, so one per server)."""
    name = re.sub(r"[^A-Za-z0-9.]+", "-", "_".join(binds)).strip("-") or "default"
    return os.path.join(tempfile.gettempdir(), f"vcci-{kind}-{os.getuid()}-{name}")


def default_control_socket(binds: list[str]) -> str:
    """The control socket of this user's server on ``binds``, in a directory of its own."""
    return os.path.join(_server_dir("gunicorn", binds), "control.sock")


def configure_control_socket(server: Any) -> str | None:
    """Master, in ``on_starting`` (before gunicorn opens it): this server's control socket; None when disabled.

    gunicorn's default path is shared by every master of the user; unless one was chosen (environment,
    ``--control-socket``), the socket goes in this server's private directory.
    """
    cfg = server.cfg
    setting = getattr(cfg, "settings", {}).get("control_socket")
    if setting is None or cfg.control_socket_disable:  # a gunicorn without the feature, or it is turned off
        return None
    if cfg.control_socket == setting.default:
        path = default_control_socket(list(cfg.bind))
        _private_dir(
            os.path.dirname(path), f"{os.path.dirname(path)} belongs to another user; set {CONTROL_SOCKET_ENV}."
        )
        cfg.set("control_socket", path)
    return str(cfg.control_socket)


def hide_server_software() -> None:
    """Worker: responses carry ``Server: <server_header>`` instead of ``Server: gunicorn`` (module docstring)."""
    from gunicorn.http import wsgi

    wsgi.SERVER = server_header


def default_multiproc_dir(binds: list[str]) -> str:
    """A metrics directory of this user's server on ``binds``."""
    return _server_dir("prometheus", binds)


def _private_dir(directory: str, refusal: str) -> None:
    """Create ``directory`` (0700) if needed; refuse (SystemExit, ``refusal``) one owned by another user: what it
    holds would be theirs to forge."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.stat(directory).st_uid != os.getuid():
        raise SystemExit(refusal)


def prepare_multiproc_dir(directory: str) -> int:
    """Create ``directory`` (0700) if needed and delete prometheus_client's files in it; return how many.

    Refuses (SystemExit) a directory owned by another user: its files would be theirs to forge.
    """
    _private_dir(directory, f"{MULTIPROC_ENV}={directory} belongs to another user; choose another directory.")
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if _METRIC_FILE.match(entry.name) and entry.is_file(follow_symlinks=False):
                os.remove(entry.path)
                removed += 1
    return removed


def on_starting(server: Any) -> None:
    """Master, before the first worker: prepare the metrics directory and export what the workers inherit.

    Sets PROMETHEUS_MULTIPROC_DIR (when unset) and GUNICORN_WORKER_CONNECTIONS (the value gunicorn
    uses) in the environment, which forked workers inherit before they import anything.
    """
    if role == "bulk":
        # Started by the main server's master, which prepared the metrics directory and set everything else.
        return
    control = configure_control_socket(server)
    server.log.info("Control socket %s", control or "disabled")
    directory = os.environ.get(MULTIPROC_ENV) or default_multiproc_dir(list(server.cfg.bind))
    removed = prepare_multiproc_dir(directory)
    os.environ[MULTIPROC_ENV] = directory
    server.log.info("Prometheus multiprocess directory %s (%d stale file(s) removed)", directory, removed)
    # The workers' settings size their pools (database, Redis) from the value gunicorn uses, whichever of the
    # environment, this file or the command line set it.
    os.environ["GUNICORN_WORKER_CONNECTIONS"] = str(int(server.cfg.worker_connections))
    os.environ.pop(BULK_SOCKET_ENV, None)
    os.environ.pop("BULK_POOL_DB_CONNECTIONS", None)
    if bulk_workers > 0:
        start_bulk_pool(server)


_bulk_pool: subprocess.Popen[bytes] | None = None
# The Linux prctl(2) option that sends a signal to a process when its parent dies.
_PR_SET_PDEATHSIG = 1


def bulk_socket_path(binds: list[str]) -> str:
    """The bulk pool's socket, in a private directory (0700) per user and bind like the metrics directory's."""
    directory = _server_dir("bulk", binds)
    _private_dir(directory, f"{directory} belongs to another user; the bulk pool's socket cannot be kept there.")
    return os.path.join(directory, "bulk.sock")


def bulk_pool_env(server: Any, socket_path: str) -> tuple[dict[str, str], int]:
    """The bulk pool's environment, and how many database connections its processes may hold in all.

    It admits as many bulk requests at once as the workers may forward (each worker's ADMISSION_HEAVY_SLOTS), so
    that while bulk work is quick it admits whatever they forward; while its requests take longer than
    ADMISSION_HEAVY_TARGET it admits fewer (perf.admission.HeavyLane), as each worker does, and the next one waits
    ADMISSION_HEAVY_WAIT at most, then gets the 503 its worker relays. Its pools are sized to the most, not to the
    workers' budget.
    """
    concurrency = int(server.cfg.workers) * _int("ADMISSION_HEAVY_SLOTS", 3)
    sockets = concurrency + 2  # a closing connection may linger while the next one arrives
    # Not inherited: the main server's command-line arguments, and its workers' pool sizes (the pool sizes its own).
    dropped = (BULK_SOCKET_ENV, "GUNICORN_CMD_ARGS", "DB_POOL_MAX_SIZE", "DB_POOL_MIN_SIZE")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(
        {
            ROLE_ENV: "bulk",
            "GUNICORN_BIND": f"unix:{socket_path}",
            "GUNICORN_WORKERS": str(bulk_workers),
            "GUNICORN_WORKER_CLASS": "gevent",
            "GUNICORN_WORKER_CONNECTIONS": str(sockets),
            "ADMISSION_MAX_IN_FLIGHT": str(concurrency),
            "ADMISSION_HEAVY_SLOTS": str(concurrency),
            "CACHE_WARM_ON_BOOT": "0",
        }
    )
    return env, bulk_workers * sockets


def _lower_priority() -> None:  # pragma: no cover - runs in the forked child, before exec
    """In the bulk pool's process, before it runs: lower its CPU priority; die with the master."""
    os.nice(bulk_nice)
    # Not on Linux, no prctl: on_exit still stops it.
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_bulk_pool(server: Any) -> None:
    """Master, in ``on_starting``: start the bulk pool's gunicorn and tell the workers its socket (module docstring)."""
    global _bulk_pool
    socket_path = bulk_socket_path(list(server.cfg.bind))
    if os.path.exists(socket_path):
        os.remove(socket_path)  # a previous run's
    env, connections = bulk_pool_env(server, socket_path)
    app_uri = getattr(server.app, "app_uri", None) or server.cfg.wsgi_app or "vcci.wsgi"
    command = [sys.executable, "-m", "gunicorn", "-c", os.path.abspath(__file__), "--no-control-socket", app_uri]
    _bulk_pool = subprocess.Popen(command, env=env, preexec_fn=_lower_priority)  # the master has no threads yet
    os.environ[BULK_SOCKET_ENV] = socket_path
    os.environ["BULK_POOL_DB_CONNECTIONS"] = str(connections)
    server.log.info(
        "Bulk pool: %d worker(s) at nice +%d on %s (pid %d)", bulk_workers, bulk_nice, socket_path, _bulk_pool.pid
    )


def on_exit(server: Any) -> None:
    """Master, on its way out: stop the bulk pool it started (SIGTERM, then SIGKILL after the graceful timeout)."""
    global _bulk_pool
    if _bulk_pool is None or _bulk_pool.poll() is not None:
        return
    _bulk_pool.terminate()
    try:
        _bulk_pool.wait(timeout=graceful_timeout + 5)
    except subprocess.TimeoutExpired:
        _bulk_pool.kill()
        _bulk_pool.wait(timeout=5)
    _bulk_pool = None


def post_fork(server: Any, worker: Any) -> None:
    """Worker, before gevent patches: forget the master's prometheus_client (``child_exit`` imports it there), and
    write each response's head with its body (``perf.wire``).

    A module imported before the patching keeps the unpatched ``threading.Lock`` it bound at import
    time; the worker imports prometheus_client afresh, patched, when the application loads.
    """
    for name in [name for name in sys.modules if name == "prometheus_client" or name.startswith("prometheus_client.")]:
        del sys.modules[name]
    # One send(2) for a response's head and its first body bytes (perf.wire imports neither Django nor psycopg).
    from perf.wire import install

    install()
    hide_server_software()


def child_exit(server: Any, worker: Any) -> None:
    """Master, after a worker exited: its live gauges (``multiprocess_mode="live*"``) stop counting."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, directory)


def post_worker_init(worker: Any) -> None:
    """Refuse a gevent worker whose psycopg would block; let it accept connections in batches
    (``perf.serving.accept_in_batches``); then freeze what is loaded (``perf.gcpause``), start
    measuring the event loop's lag (``perf.looplag``) and start the cache warm-up (which never raises).

    Gunicorn calls it in the worker after ``load_wsgi()``, so gevent has patched and Django is set
    up: importing the project here is safe, unlike at the top of this file (read by the master).
    ``perf.serving.check_worker`` raises ``BlockingWaitError`` on purpose, outside the ``try``: the
    worker then exits with gunicorn's boot-error code and the master stops.
    """
    from django.urls import get_resolver

    from perf.serving import accept_in_batches, check_worker, is_gevent_worker

    check_worker(worker)
    if is_gevent_worker(worker) and accept_in_batches(worker, accept_batch):
        worker.log.info("Accepting up to %d connections each time the listening socket is ready", accept_batch)
    # Import the URLconf (and through it every view module) now, before the worker serves: lazily, the
    # first request of each worker would wait for it (about 0.5 s).
    get_resolver().url_patterns  # noqa: B018
    from django.conf import settings

    from perf.gcpause import tune_for_serving

    thresholds = tune_for_serving(settings.GC_THRESHOLDS, freeze=settings.GC_FREEZE)
    worker.log.info("Garbage collector: %d objects frozen, thresholds %s", gc.get_freeze_count(), thresholds)
    if is_gevent_worker(worker):
        from perf.looplag import start

        start(settings.EVENT_LOOP_LAG_INTERVAL)
    try:
        from perf.warm import warm_on_boot

        warm_on_boot(worker)
    except Exception:
        # A cold cache only costs speed; a worker that fails to boot costs capacity.
        worker.log.exception("Could not start the cache warm-up; the worker serves with a cold cache")


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Under gevent, yield to the worker's other greenlets after every request.

    A greenlet runs until it blocks. On a keep-alive connection whose next request has already
    arrived, reading it does not block, so a busy client can be served request after request
    while the worker's other connections wait: the tail latency of everyone else grows to seconds
    under load. One ``gevent.sleep(0)`` per request lets every ready greenlet run in turn.
    """
    if getattr(worker, "wsgi", None) is not None and type(worker).__module__ == "gunicorn.workers.ggevent":
        import gevent

        gevent.sleep(0)
