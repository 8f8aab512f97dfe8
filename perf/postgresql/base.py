"""Django's PostgreSQL backend (psycopg 3, native pool), telling "database unreachable" from "pool busy".

Django's pool hands a request a connection within ``DB_POOL_TIMEOUT`` seconds or raises ``PoolTimeout``
(``perf.admission`` answers that 503: the pool is busy). psycopg_pool cannot tell a waiting client that
its connection attempts fail: while PostgreSQL was down every request waited the whole timeout, then
failed with a 500. Here the pool's connections are ``TrackedConnection``, which records per server
whether the last attempt to connect failed (``Reachability``), and the pool is a ``FailFastPool``: a
checkout waits in slices of ``DB_UNREACHABLE_WAIT`` seconds (time for one connection attempt, which the
pool starts at once for a waiting request once it gave up its previous one: ``reconnect_timeout`` is
short, see ``perf.db.pool_options``) and, after a slice, gives up with ``DatabaseUnreachable`` if the last
attempt failed; the API answers that 503 with ``Retry-After`` (``perf.errors``). While the server answers,
it waits on, up to ``DB_POOL_TIMEOUT`` in all. The first connection that succeeds ends the unreachable
state, so the first request after PostgreSQL came back is served.

A request waiting through several slices goes back to the end of the pool's queue after each: only a
pool busy for longer than a slice reorders its waiters, and admission control keeps a worker's requests
below its pool size. Connections are checked as they are handed out when
``CONN_HEALTH_CHECKS`` is on (the default with the pool, ``DB_CONN_HEALTH_CHECKS``): a connection that
died with a restarted server is replaced instead of failing the request that drew it. The check
(``check_connection``) looks whether the server closed it without a round trip, and sends one (an empty statement)
to a connection that sat idle for ``DB_POOL_CHECK_IDLE`` seconds.

**Prepared statements for fixed-shape hot queries.** ``DatabaseWrapper.prepared_cursor()`` is Django's cursor
(its execute wrappers, its query log) around a ``PreparingCursor``: psycopg's server-binding cursor, which
prepares a text on the server once it has run ``PREPARE_THRESHOLD`` times on a connection, and from then on only
sends its parameters. PostgreSQL then no longer parses it, nor plans it once it settles on a generic plan (after
five executions, when that plan is estimated no costlier than the custom ones). Django's own cursors bind on the
client and are never prepared; the connection's ``prepare_threshold`` stays as configured (None, Django's default:
psycopg then keeps no bookkeeping of their texts) except while a ``PreparingCursor`` executes. ``perf.keyset_sql``
runs the kept page queries and the token lookup through it: their text is fixed per shape and only the parameters
change.
``prepared_cursor()`` is Django's cursor when ``DB_PREPARED_STATEMENTS`` is off (the default behind PgBouncer and
without persistent connections). A prepared statement whose table changed under it (another process altered a
column it reads) fails; ``recover_prepared`` then drops the connection's prepared statements so that the caller
can run it again.
"""

from __future__ import annotations

import _socket
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import psycopg
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from django.db.backends.postgresql.operations import DatabaseOperations as PostgreSQLOperations
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.db.backends.utils import CursorWrapper
from django.utils.asyncio import async_unsafe
from psycopg.abc import Params, QueryNoTemplate
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

ServerKey = tuple[str, str]
_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid


class DatabaseUnreachable(psycopg.OperationalError):
    """No connection to PostgreSQL could be made: its last connection attempt failed (see the module docstring)."""


class Reachability:
    """Per process: the servers whose most recent connection attempt failed, with that attempt's error."""

    def __init__(self) -> None:
        self._failed: dict[ServerKey, str] = {}
        self._lock = threading.Lock()

    def failed(self, key: ServerKey, error: BaseException) -> None:
        with self._lock:
            self._failed[key] = f"{type(error).__name__}: {error}".strip()

    def connected(self, key: ServerKey) -> None:
        with self._lock:
            self._failed.pop(key, None)

    def unreachable(self, key: ServerKey) -> str | None:
        """The last connection error of ``key`` while its last attempt failed; None once one succeeded."""
        return self._failed.get(key)

    def reset(self) -> None:
        with self._lock:
            self._failed.clear()


REACHABILITY = Reachability()


def server_key(params: dict[str, Any]) -> ServerKey:
    """What identifies a server among connection parameters (psycopg's keywords: host, port)."""
    return (str(params.get("host") or ""), str(params.get("port") or ""))


class TrackedConnection(psycopg.Connection[Any]):
    """psycopg's connection, recording in ``REACHABILITY`` whether connecting to its server succeeded, and when it
    was last given back to the pool (``returned_at``, ``time.monotonic()``; set by ``FailFastPool``)."""

    returned_at: float = -math.inf  # never given back yet

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
        key = server_key(kwargs)
        try:
            connection = super().connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            REACHABILITY.failed(key, exc)
            raise
        REACHABILITY.connected(key)
        return connection


# Executions of a text on a connection before it is prepared (psycopg's default): a text run only once or twice (an
# unusual ?limit=, a rare filter) costs no extra round trip to prepare and no room among the prepared_max kept.
PREPARE_THRESHOLD = 5


class PreparingCursor(psycopg.Cursor[Any]):
    """psycopg's cursor binding parameters on the server, preparing a text once it ran ``PREPARE_THRESHOLD`` times on
    its connection (module docstring)."""

    def execute(  # type: ignore[override]  # the same call; the threshold is this cursor's
        self,
        query: QueryNoTemplate,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> PreparingCursor:
        # Only while this cursor executes: with a threshold, psycopg also counts the texts of Django's client-bound
        # queries (values written in), which are never prepared. A connection serves one greenlet at a time.
        connection = self.connection
        configured = connection.prepare_threshold
        connection.prepare_threshold = PREPARE_THRESHOLD
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        finally:
            connection.prepare_threshold = configured


class DatabaseOperations(PostgreSQLOperations):
    """Django's, naming a prepared statement's query with its parameters in the query log as it names others."""

    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        if isinstance(cursor, PreparingCursor):
            # Django reads a client-binding cursor's last query; this one sent its parameters apart.
            try:
                return str(self.compose_sql(sql, params))
            except psycopg.errors.DataError:  # a value psycopg cannot quote: the text with its placeholders
                return sql
        return super().last_executed_query(cursor, sql, params)


def check_connection(conn: Any) -> None:
    """The pool's check of a connection it is about to hand out (``CONN_HEALTH_CHECKS``): psycopg_pool's
    ``check_connection`` (an empty statement, one round trip; it raises when the connection is dead) when the
    connection is closed, has something to read, or sat in the pool for ``DB_POOL_CHECK_IDLE`` seconds or more (or
    was never given back to it). Precondition: ``conn`` is idle (the pool's).

    An idle connection's server sends nothing unasked, except when it ends the connection: a backend terminated
    (``pg_terminate_backend``, an idle timeout) or a server shutting down writes its FATAL message and closes the
    socket, which then has bytes to read (``_has_input``). Asking the socket costs a few microseconds and no wait,
    not a round trip to a server process: under load that round trip on every request's checkout was 2 % of the
    workers' samples (docs/capacity/analysis.md, section 12). A message the server sent otherwise (a notice) makes
    the full check run, which reads it. What the socket cannot tell is a connection that something between the two
    ends dropped while it was idle (a NAT, a load balancer or a firewall forgetting it, a failover): only a packet
    sent finds out. Those forget connections idle for minutes, so one idle for ``DB_POOL_CHECK_IDLE`` gets the empty
    statement anyway; under load a connection is back in use within milliseconds and never does.
    """
    idle = time.monotonic() - getattr(conn, "returned_at", -math.inf)
    if conn.closed or idle >= getattr(settings, "DB_POOL_CHECK_IDLE", 30.0) or _has_input(conn.fileno()):
        ConnectionPool.check_connection(conn)


_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def _has_input(fd: int) -> bool:
    """Whether socket ``fd`` has bytes to read or was closed by its peer, without waiting and without reading them.

    A ``_socket`` object of the descriptor, which it does not own (``detach``): gevent replaces ``socket`` and
    ``select`` in the workers (and ``select`` cannot take a descriptor above 1023). Anything but "nothing to read
    yet" answers True, so that the full check decides.
    """
    try:
        sock = _socket.socket(fileno=fd)
    except (OSError, ValueError):  # not a socket, not open
        return True
    try:
        # Non-blocking (libpq's sockets are already), and no timeout: a socket object takes the process's default
        # timeout (socket.setdefaulttimeout, which some libraries set), and with one recv() first waits for input.
        sock.settimeout(0.0)
        sock.recv(1, _PEEK)  # b"" at the end of the stream, else the first byte, left in place
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()
    return True


class FailFastPool(ConnectionPool[Any]):
    """psycopg_pool's pool whose checkouts give up early while the server is unreachable (module docstring).

    ``unreachable_wait``: the slice a checkout waits before it looks whether the server's last connection
    attempt failed; it gives up then (``DatabaseUnreachable``), else waits another slice, up to the pool's
    ``timeout`` in all (then ``PoolTimeout``: the pool is busy). Connections are ``TrackedConnection``.
    """

    def __init__(self, *args: Any, unreachable_wait: float = 1.0, **kwargs: Any) -> None:
        kwargs.setdefault("connection_class", TrackedConnection)
        reset = kwargs.get("reset")

        def given_back(conn: Any) -> None:
            # psycopg_pool's reset callback, run on each connection given back: when it was (check_connection).
            if reset is not None:
                reset(conn)
            conn.returned_at = time.monotonic()

        kwargs["reset"] = given_back
        super().__init__(*args, **kwargs)
        self.unreachable_wait = unreachable_wait

    def getconn(self, timeout: float | None = None) -> Any:
        if timeout is not None:  # an explicit wait (readiness checks): the caller's
            return super().getconn(timeout)
        server = server_key(self.kwargs if isinstance(self.kwargs, dict) else {})
        start = time.monotonic()
        deadline = start + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            wait = min(remaining, self.unreachable_wait)
            try:
                return super().getconn(wait)
            except PoolTimeout:
                error = REACHABILITY.unreachable(server)
                if error is None and remaining <= wait:  # the whole timeout spent, the server reachable: busy
                    raise
            if error is not None:
                # Raised outside the except block: not chained to the PoolTimeout, which would read as "pool busy".
                raise DatabaseUnreachable(
                    f"PostgreSQL is unreachable (no connection within {time.monotonic() - start:.1f} s;"
                    f" last error: {error})"
                )
            # Reachable as far as is known: a busy pool. Wait on (at the back of the queue) until the deadline.


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL wrapper whose pool is a ``FailFastPool`` (module docstring)."""

    ops_class = DatabaseOperations
    # Django's (django-stubs does not declare them): the pools by alias, and the pool's configure callback.
    _connection_pools: ClassVar[dict[str, Any]]
    _configure_connection: Callable[[Any], None]

    @property
    def pool(self) -> Any:
        # Django 5.2's DatabaseWrapper.pool, building a FailFastPool instead of a ConnectionPool.
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        if self.alias not in self._connection_pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            if pool_options is True:
                pool_options = {}
            connect_kwargs = self.get_connection_params()
            # Ensure we run in autocommit, Django properly sets it later on.
            connect_kwargs["autocommit"] = True
            pool = FailFastPool(
                kwargs=connect_kwargs,
                open=False,  # opened on first use, by get_new_connection()
                configure=self._configure_connection,
                check=check_connection if self.settings_dict["CONN_HEALTH_CHECKS"] else None,
                unreachable_wait=float(getattr(settings, "DB_UNREACHABLE_WAIT", 1.0)),
                **pool_options,
            )
            # As Django: with concurrent first uses, the first pool stored wins (none is open yet).
            self._connection_pools.setdefault(self.alias, pool)
        return self._connection_pools[self.alias]

    @async_unsafe
    def prepared_cursor(self) -> CursorWrapper:
        """A cursor preparing the texts it runs repeatedly (``PreparingCursor``, module docstring), wrapped as
        ``cursor()`` wraps Django's; Django's own cursor when ``DB_PREPARED_STATEMENTS`` is off.

        For statements whose text repeats with other parameters only: each distinct text becomes one prepared
        statement per connection (psycopg keeps the last ``prepared_max``, 100, and deallocates older ones)."""
        if not getattr(settings, "DB_PREPARED_STATEMENTS", False):
            return self.cursor()
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = PreparingCursor(self.connection)
            # As Django's create_cursor: the connection's time zone, where its loader was made for another.
            loader = self.connection.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)
            if getattr(loader, "timezone", None) != self.timezone:
                register_tzloader(self.timezone, cursor)
            # As Django's _prepare_cursor: the query log's wrapper while queries are logged.
            self.validate_thread_sharing()
            wrapped: Any = cursor  # django-stubs type the argument as the wrapper it becomes
            return self.make_debug_cursor(wrapped) if self.queries_logged else self.make_cursor(wrapped)

    def recover_prepared(self, error: BaseException) -> bool:
        """Whether a ``prepared_cursor()`` execution that raised ``error`` may run again: it failed because a prepared
        statement no longer fits its tables (``cached plan must not change result type`` after another process
        altered a column it reads) or no longer exists, outside a transaction, and psycopg held prepared statements
        on the connection. Those are then dropped (deallocated before its next statement), as psycopg drops them
        itself when a transaction rolls back. Inside a transaction: False; the outermost rollback drops them (a
        savepoint's does not), else the next execution outside one recovers.

        Without this, the statement would fail on every later execution on that connection: psycopg keeps it as
        prepared, and nothing else on an autocommit connection makes it forget it. The message is matched as
        PostgreSQL writes it in English (``lc_messages``); in another language the error is raised as it is."""
        cause = error.__cause__ if isinstance(error.__cause__, psycopg.Error) else error
        if isinstance(cause, psycopg.errors.FeatureNotSupported):
            # 0A000 covers other refusals too; only this one is a stale prepared statement.
            if "cached plan" not in (cause.diag.message_primary or ""):
                return False
        elif not isinstance(cause, psycopg.errors.InvalidSqlStatementName):
            return False
        if self.connection is None or not self.get_autocommit() or self.in_atomic_block:
            return False
        # psycopg has no public call for this; its PrepareManager.clear() is what its own rollback calls. False when
        # psycopg held no prepared statement: then the error was not one of them, and running again would not help.
        return self.connection._prepared.clear()
