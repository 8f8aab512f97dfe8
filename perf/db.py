"""Database plumbing for serving at scale: pool sizing and statistics, slow-query log, per-request DB stats.

Pool (see docs/database.md for the arithmetic)
    ``pool_size_for()`` / ``pool_options()`` are pure functions used by ``vcci/settings.py`` to size
    Django's native psycopg pool from the gunicorn worker count and gevent concurrency;
    ``pool_stats()`` reads the live pool's ``get_stats()`` for the monitoring layer.

Slow-query log
    ``slow_query_wrapper`` is a ``connection.execute_wrapper`` callable. ``install_execute_wrapper``
    (connected to ``connection_created`` in ``perf.apps``) puts it on every database connection
    Django opens, in any thread or greenlet, so web requests, management commands, shells and
    worker threads are all covered. Queries slower than ``settings.SLOW_QUERY_MS`` are logged on
    the ``vcci.slow_query`` logger with a normalized statement (literals -> ``?``) and counted by
    statement fingerprint in a process-local table (``slow_query_counts()``). Each one is also passed
    to ``SLOW_QUERY_LISTENERS`` (``perf.metrics`` registers the ``vcci_db_slow_query_seconds`` histogram).

Per-request stats
    ``db_stats_scope()`` (opened by ``perf.middleware.DBStatsMiddleware``) keeps a query count and
    DB time in a ``contextvars.ContextVar``. Under gevent each greenlet runs in its own context
    (greenlet >= 1.0 gives every greenlet its own ``contextvars`` context), so concurrent requests
    in one worker never mix their numbers; the same holds for threads.

This module imports nothing from Django at import time, so ``vcci/settings.py`` can use the
sizing helpers.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger("vcci.slow_query")

# --------------------------------------------------------------------------------------------------
# Pool sizing
# --------------------------------------------------------------------------------------------------

# gunicorn worker classes that run many requests concurrently in one process (one greenlet each).
CONCURRENT_WORKER_CLASSES = frozenset({"gevent", "eventlet"})


class PoolConfigError(ValueError):
    """A pool configuration that cannot work; the message names the setting and the problem."""


def worker_concurrency(worker_class: str, worker_connections: int, threads: int = 1) -> int:
    """How many requests one gunicorn worker process serves at the same time.

    A gevent/eventlet worker runs up to ``worker_connections`` greenlets; a gthread worker ``threads``
    threads (gunicorn also switches a sync worker with ``threads`` > 1 to gthread); a sync worker
    serves one request at a time (``worker_connections`` only applies to the async worker classes).
    """
    if worker_connections < 1:
        raise PoolConfigError(f"GUNICORN_WORKER_CONNECTIONS must be at least 1; got {worker_connections}.")
    if threads < 1:
        raise PoolConfigError(f"GUNICORN_THREADS must be at least 1; got {threads}.")
    # A class may be named by its short name ("gevent") or by its path ("gunicorn.workers.ggevent.GeventWorker").
    name = worker_class.lower()
    if name in CONCURRENT_WORKER_CLASSES or ".ggevent." in name or ".geventlet." in name:
        return worker_connections
    if name in ("gthread", "sync") or ".gthread." in name or ".sync." in name:
        return threads
    return 1


def pool_size_for(*, workers: int, worker_connections: int, max_connections: int, reserve: int) -> int:
    """The largest per-process pool ``max_size`` such that ``workers x max_size <= max_connections - reserve``.

    ``worker_connections`` is the worker's concurrency (see ``worker_concurrency``): a pool larger
    than it would never be used, so the result is clamped to it. Raises ``PoolConfigError`` when
    the database cannot give every worker even one connection.
    """
    if workers < 1:
        raise PoolConfigError(f"GUNICORN_WORKERS must be at least 1; got {workers}.")
    if worker_connections < 1:
        raise PoolConfigError(f"GUNICORN_WORKER_CONNECTIONS must be at least 1; got {worker_connections}.")
    if reserve < 0:
        raise PoolConfigError(f"DB_RESERVED_CONNECTIONS must not be negative; got {reserve}.")
    available = max_connections - reserve
    if available < workers:
        raise PoolConfigError(
            f"DB_MAX_CONNECTIONS ({max_connections}) minus DB_RESERVED_CONNECTIONS ({reserve}) leaves "
            f"{max(available, 0)} connections for {workers} gunicorn workers: fewer than one per worker."
        )
    return min(worker_connections, available // workers)


def pool_options(
    *,
    workers: int,
    worker_connections: int,
    max_connections: int,
    reserve: int,
    min_size: int | None = None,
    max_size: int | None = None,
    timeout: float = 10.0,
    reconnect_timeout: float = 1.0,
) -> dict[str, Any]:
    """``DATABASES[...]["OPTIONS"]["pool"]`` for psycopg_pool's ``ConnectionPool``.

    ``max_size`` defaults to ``pool_size_for(...)``; an explicit value above that budget is
    refused, because ``workers`` such pools could exhaust PostgreSQL's ``max_connections``.
    ``min_size`` defaults to 2 (capped at ``max_size``): connections kept warm per process.
    ``reconnect_timeout``: how long the pool retries one failed connection attempt (its delays double from 1 s)
    before giving it up. Short, so that after an outage the next request's demand starts a fresh attempt at once
    instead of waiting for a retry scheduled up to minutes ahead (psycopg_pool's default keeps trying for 300 s).
    """
    budget = pool_size_for(
        workers=workers, worker_connections=worker_connections, max_connections=max_connections, reserve=reserve
    )
    if max_size is None:
        max_size = budget
    elif max_size < 1:
        raise PoolConfigError(f"DB_POOL_MAX_SIZE must be at least 1; got {max_size}.")
    elif max_size > budget:
        raise PoolConfigError(
            f"DB_POOL_MAX_SIZE={max_size} is too large: {workers} workers x {max_size} connections exceeds "
            f"DB_MAX_CONNECTIONS ({max_connections}) minus DB_RESERVED_CONNECTIONS ({reserve}); at most {budget}."
        )
    if min_size is None:
        min_size = min(2, max_size)
    elif not 0 <= min_size <= max_size:
        raise PoolConfigError(f"DB_POOL_MIN_SIZE must be between 0 and DB_POOL_MAX_SIZE ({max_size}); got {min_size}.")
    if timeout <= 0:
        raise PoolConfigError(f"DB_POOL_TIMEOUT must be a positive number of seconds; got {timeout}.")
    if reconnect_timeout <= 0:
        raise PoolConfigError(
            f"DB_POOL_RECONNECT_TIMEOUT must be a positive number of seconds; got {reconnect_timeout}."
        )
    return {
        "min_size": min_size,
        "max_size": max_size,
        "timeout": timeout,
        "reconnect_timeout": reconnect_timeout,
        "name": "vcci",
    }


# The keys of pool_stats(), as psycopg_pool names them (psycopg_pool/base.py, BasePool._POOL_*, ...).
# Gauges: the pool's state now.
POOL_GAUGES = ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting")
# Counters: totals since the pool was created.
POOL_COUNTERS = (
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
)
POOL_STAT_KEYS = POOL_GAUGES + POOL_COUNTERS


def pool_stats(alias: str = "default") -> dict[str, int]:
    """The connection pool's statistics for database ``alias``: every key of ``POOL_STAT_KEYS``.

    Empty when that database has no pool (pooling off, PgBouncer mode, or not PostgreSQL).
    psycopg_pool only reports counters once they are non-zero; missing ones are filled with 0 so
    that the monitoring layer always sees the same keys. The pool is per process: under gunicorn
    each worker reports its own.
    """
    from django.db import connections

    pool = getattr(connections[alias], "pool", None)
    if pool is None:
        return {}
    raw = pool.get_stats()
    return {key: int(raw.get(key, 0)) for key in POOL_STAT_KEYS}


# --------------------------------------------------------------------------------------------------
# Statement normalization
# --------------------------------------------------------------------------------------------------

# Longer statements (multi-row INSERTs) are cut before normalizing: the head identifies them, and
# tokenizing megabytes of SQL inside a request would be a slowdown of its own.
MAX_NORMALIZED_INPUT = 8192
_STRING_PREFIXES = frozenset({"E", "B", "X", "U&", "N"})
_PLACEHOLDER_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_REPEATED_LISTS = re.compile(r"\(\?, \.\.\.\)(?:\s*,\s*\(\?, \.\.\.\))+")
_WHITESPACE = re.compile(r"\s+")


def normalize_sql(sql: str) -> str:
    """``sql`` with literals and parameters replaced by ``?``, comments dropped and whitespace collapsed.

    Value lists collapse: ``IN (?, ?, ?)`` -> ``IN (?, ...)`` and multi-row ``VALUES`` to one row,
    so statements that differ only in their values share one normalized text (and fingerprint).
    Quoted identifiers (``"col"``) are kept.
    """
    from sqlparse import tokens
    from sqlparse.lexer import tokenize

    truncated = len(sql) > MAX_NORMALIZED_INPUT
    parts: list[str] = []
    for ttype, value in tokenize(sql[:MAX_NORMALIZED_INPUT]):
        if ttype in tokens.Comment or ttype in tokens.Whitespace:
            parts.append(" ")
        elif ttype in tokens.String.Symbol:  # "quoted identifier", not a value
            parts.append(value)
        elif ttype in tokens.Literal or ttype in tokens.Name.Placeholder or ttype in tokens.Error:
            # E'...', B'...': the prefix is part of the literal.
            if parts and parts[-1].upper() in _STRING_PREFIXES and ttype in tokens.String:
                parts.pop()
            parts.append("?")
        else:
            parts.append(value)
    text = _WHITESPACE.sub(" ", "".join(parts)).strip()
    text = _PLACEHOLDER_LIST.sub("(?, ...)", text)
    text = _REPEATED_LISTS.sub("(?, ...), ...", text)
    return text + " ..." if truncated else text


def fingerprint(normalized_sql: str) -> str:
    """A short stable hash of a normalized statement: the key of ``slow_query_counts()``."""
    return hashlib.blake2b(normalized_sql.encode(), digest_size=8).hexdigest()


# --------------------------------------------------------------------------------------------------
# Slow-query counter (process-local)
# --------------------------------------------------------------------------------------------------


@dataclass
class SlowQueryStat:
    """How often one normalized statement was slow in this process, and how slow."""

    statement: str
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0


# Distinct statements tracked; beyond it, slow queries are added to OVERFLOW_KEY so a flood of
# ad-hoc SQL cannot grow the table without bound.
MAX_TRACKED_STATEMENTS = 1000
OVERFLOW_KEY = "other"
_slow_queries: dict[str, SlowQueryStat] = {}
# Under gevent ``threading`` is patched, so this lock is cooperative there.
_slow_queries_lock = threading.Lock()
# Called with each slow query's duration in seconds (perf.metrics.install adds the Prometheus histogram). A listener
# runs inside the query's own error guard: a failing one is logged, never raised into the query.
SLOW_QUERY_LISTENERS: list[Callable[[float], None]] = []


def _record_slow_query(statement: str, duration_ms: float) -> str:
    key = fingerprint(statement)
    with _slow_queries_lock:
        stat = _slow_queries.get(key)
        if stat is None:
            if len(_slow_queries) >= MAX_TRACKED_STATEMENTS:
                key = OVERFLOW_KEY
                stat = _slow_queries.setdefault(key, SlowQueryStat(statement="(statements beyond the tracking limit)"))
            else:
                stat = _slow_queries[key] = SlowQueryStat(statement=statement)
        stat.count += 1
        stat.total_ms += duration_ms
        stat.max_ms = max(stat.max_ms, duration_ms)
    return key


def slow_query_counts() -> dict[str, dict[str, Any]]:
    """A snapshot of this process's slow queries: ``{fingerprint: {statement, count, total_ms, max_ms}}``."""
    with _slow_queries_lock:
        return {key: asdict(stat) for key, stat in _slow_queries.items()}


def reset_slow_query_counts() -> None:
    """Empty the slow-query table (tests; a metrics exporter that wants per-interval numbers)."""
    with _slow_queries_lock:
        _slow_queries.clear()


# --------------------------------------------------------------------------------------------------
# Per-request stats
# --------------------------------------------------------------------------------------------------


@dataclass
class DBStats:
    """Queries run and wall time spent in them (ms) within one scope, usually one request."""

    queries: int = 0
    time_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"queries": self.queries, "time_ms": round(self.time_ms, 3)}


_current_stats: contextvars.ContextVar[DBStats | None] = contextvars.ContextVar("vcci_db_stats", default=None)


@contextmanager
def db_stats_scope() -> Iterator[DBStats]:
    """Count the queries run in this context (thread or greenlet) until the block exits.

    Scopes nest: an inner scope counts only its own queries and hides them from the outer one.
    """
    stats = DBStats()
    token = _current_stats.set(stats)
    try:
        yield stats
    finally:
        _current_stats.reset(token)


def request_db_stats(request: Any = None) -> dict[str, Any] | None:
    """``{"queries": n, "time_ms": t}`` for the current request, or for ``request`` once it has been served.

    Without ``request``: the stats of the scope open in this context (None outside any), for code
    running inside the request. With ``request``: the stats ``DBStatsMiddleware`` attached to it,
    for monitoring middleware that runs outside ours (None if our middleware did not see it).
    """
    stats = getattr(request, "db_stats", None) if request is not None else _current_stats.get()
    return stats.as_dict() if isinstance(stats, DBStats) else None


# --------------------------------------------------------------------------------------------------
# The execute wrapper
# --------------------------------------------------------------------------------------------------


def _threshold_ms() -> float:
    from django.conf import settings

    return float(getattr(settings, "SLOW_QUERY_MS", 200))


def slow_query_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """``connection.execute_wrapper`` callable: time the query, count it, log it when slow.

    Failed queries are timed too: a statement cancelled by ``statement_timeout`` is the slowest
    kind. ``executemany`` counts as one query. Under gevent the duration is wall time, which
    includes time this greenlet waited for the hub while others ran.
    """
    start = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        duration_ms = (time.perf_counter() - start) * 1000.0
        stats = _current_stats.get()
        if stats is not None:
            stats.queries += 1
            stats.time_ms += duration_ms
        if duration_ms >= _threshold_ms():
            _log_slow_query(sql, duration_ms, context)


@functools.lru_cache(maxsize=1024)
def _normalized(sql: str) -> str:
    """``normalize_sql``, remembered per statement text.

    Django passes the statement with ``%s`` placeholders, so a query shape has one text. Under CPU load many
    queries cross the threshold at once (their wall time includes waiting for the CPU): tokenizing each
    again cost 6 % of the workers' CPU at 500 users, making the overload worse (docs/capacity.md).
    """
    return normalize_sql(sql)


def _log_slow_query(sql: str, duration_ms: float, context: dict[str, Any]) -> None:
    # Never let the log break the query it describes.
    try:
        statement = _normalized(str(sql))
        key = _record_slow_query(statement, duration_ms)
        alias = getattr(context.get("connection"), "alias", "?")
        logger.warning(
            "slow query %.1f ms [%s] on %s: %s",
            duration_ms,
            key,
            alias,
            statement,
            extra={"duration_ms": round(duration_ms, 3), "statement": statement, "fingerprint": key, "db": alias},
        )
        for listener in SLOW_QUERY_LISTENERS:
            listener(duration_ms / 1000.0)
    except Exception:
        logger.exception("could not record a slow query")


def install_execute_wrapper(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """``connection_created`` receiver: put ``slow_query_wrapper`` on ``connection`` once.

    The signal fires whenever Django opens a connection (also when it takes one from the pool),
    before the first query on it. The wrapper is inserted at the front of ``execute_wrappers``:
    ``connection.execute_wrapper()`` blocks pop the list's *last* item on exit, so a connection
    first opened inside such a block would otherwise lose our wrapper and keep theirs.
    """
    if connection is not None and slow_query_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, slow_query_wrapper)


# --------------------------------------------------------------------------------------------------
# Planner statistics after bulk loads
# --------------------------------------------------------------------------------------------------


def refresh_statistics(tables: list[str], *, vacuum: bool = False, alias: str = "default") -> str | None:
    """``ANALYZE`` (or ``VACUUM (ANALYZE)``) each table after a bulk load; return the statement used.

    The planner needs fresh statistics after a big load (and autovacuum may be off or late), and
    index-only scans need the visibility map that only VACUUM sets. VACUUM cannot run inside a
    transaction block, so there (as in tests) only ANALYZE runs. Returns None on databases with
    neither (anything but PostgreSQL and SQLite).
    """
    from django.db import connections  # here, not at the top: settings import this module (see its docstring)

    connection = connections[alias]
    if connection.vendor not in ("postgresql", "sqlite"):
        return None
    can_vacuum = connection.vendor == "postgresql" and not connection.in_atomic_block
    statement = "VACUUM (ANALYZE)" if vacuum and can_vacuum else "ANALYZE"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and getattr(connection, "pg_version", 0) >= 150000:
            # PostgreSQL 15+ sends a backend's row counts to the statistics system lazily (at most once a
            # second, when idle). Counts of a just-committed load that arrive after the ANALYZE would mark
            # the fresh statistics as stale (n_mod_since_analyze) for check_indexes and autovacuum: flush first.
            cursor.execute("SELECT pg_stat_force_next_flush()")
        for table in tables:
            cursor.execute(f"{statement} {connection.ops.quote_name(table)}")
    return statement
