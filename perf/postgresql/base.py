"""Django's PostgreSQL backend (psycopg 3, native pool), telling "database unreachable" from "pool busy".

Django's pool hands a request a connection within ``DB_POOL_TIMEOUT`` seconds or raises ``PoolTimeout``
(``perf.admission`` answers that 503: the pool is busy). psycopg_pool cannot tell a waiting client that
its connection attempts fail: while PostgreSQL is down every request waited the whole timeout and then
failed. This backend remembers, per server, whether the last attempt to connect failed
(``Reachability``, fed by ``TrackedConnection``, the pool's connection class). While it did, a request
waits at most ``DB_UNREACHABLE_WAIT`` seconds for a connection (time for one attempt, which the pool
makes at once when it has given up on its previous one: ``reconnect_timeout`` is short, see
``perf.db.pool_options``) and then raises ``DatabaseUnreachable``, which the API answers 503 with
``Retry-After`` (``perf.errors``). The first connection that succeeds ends that state, so the request
after PostgreSQL came back is served.

A request already waiting for a connection when PostgreSQL went down keeps its ``DB_POOL_TIMEOUT``: the
pool gives it no signal. Connections are checked (an empty statement) when handed out when
``CONN_HEALTH_CHECKS`` is on (the default with the pool, ``DB_CONN_HEALTH_CHECKS``): a connection that
died with the server is replaced instead of failing the request that drew it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from django.conf import settings
from django.db.backends.postgresql import base
from psycopg_pool import PoolTimeout

ServerKey = tuple[str, str]


class DatabaseUnreachable(psycopg.OperationalError):
    """No connection to PostgreSQL could be made: its last connection attempt failed (see the module docstring)."""


class Reachability:
    """Per process: the servers whose most recent connection attempt failed, since when, and with what error."""

    def __init__(self) -> None:
        self._failed: dict[ServerKey, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def failed(self, key: ServerKey, error: BaseException) -> None:
        with self._lock:
            since = self._failed.get(key, (time.monotonic(), ""))[0]
            self._failed[key] = (since, f"{type(error).__name__}: {error}".strip())

    def connected(self, key: ServerKey) -> None:
        with self._lock:
            self._failed.pop(key, None)

    def unreachable(self, key: ServerKey) -> str | None:
        """The last connection error of ``key`` while its last attempt failed; None once one succeeded."""
        failed = self._failed.get(key)
        return None if failed is None else failed[1]

    def reset(self) -> None:
        with self._lock:
            self._failed.clear()


REACHABILITY = Reachability()


def server_key(params: dict[str, Any]) -> ServerKey:
    """What identifies a server among connection parameters (psycopg's keywords: host, port)."""
    return (str(params.get("host") or ""), str(params.get("port") or ""))


class TrackedConnection(psycopg.Connection[Any]):
    """psycopg's connection, recording in ``REACHABILITY`` whether connecting to its server succeeded."""

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


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL wrapper: the pool's connections are ``TrackedConnection``; fail fast when unreachable."""

    @property
    def pool(self) -> Any:
        options = self.settings_dict["OPTIONS"].get("pool")
        if isinstance(options, dict) and "connection_class" not in options:
            # Before Django builds the pool from these options (on first use, once per process and alias).
            options["connection_class"] = TrackedConnection
        return super().pool

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pool
        if pool is not None:
            error = REACHABILITY.unreachable(server_key(conn_params))
            if error is not None:
                self._wait_for_reachable(pool, error)
        return super().get_new_connection(conn_params)

    @staticmethod
    def _wait_for_reachable(pool: Any, error: str) -> None:
        """While the server is unreachable: a connection within ``DB_UNREACHABLE_WAIT`` s, else ``DatabaseUnreachable``.

        A connection obtained goes back to the pool, where Django's own checkout takes it (or another).
        """
        wait = min(float(pool.timeout), float(settings.DB_UNREACHABLE_WAIT))
        pool.open()
        try:
            connection = pool.getconn(timeout=wait)
        except PoolTimeout:
            pass
        else:
            pool.putconn(connection)
            return
        # Raised outside the except block: not chained to the PoolTimeout, which would read as "pool busy".
        raise DatabaseUnreachable(f"PostgreSQL is unreachable (no connection within {wait:g} s; last error: {error})")
