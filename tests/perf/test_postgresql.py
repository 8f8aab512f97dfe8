"""perf.postgresql (the project's PostgreSQL backend): PostgreSQL unreachable fails fast, a pool that is only busy
waits DB_POOL_TIMEOUT, and pooled connections that died with the server are replaced on checkout.

The shared PostgreSQL is never stopped: "unreachable" is a wrapper whose pool points at a closed port, and a
"restart" kills the backend of the test's own pooled connection (pg_terminate_backend).
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connection, connections
from django.db.utils import load_backend

from perf.postgresql.base import REACHABILITY, DatabaseUnreachable, server_key


def closed_port() -> int:
    """A local port nothing listens on (bound, then released): connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def make_wrapper() -> Iterator[Callable[..., Any]]:
    """``make_wrapper(alias, port=..., **pool)``: a wrapper of the configured backend with a pool of its own."""
    made: list[Any] = []

    def make(alias: str, *, port: int | None = None, **pool: Any) -> Any:
        settings_dict = copy.deepcopy(
            {key: value for key, value in connection.settings_dict.items() if key != "OPTIONS"}
        )
        options = {key: value for key, value in connection.settings_dict["OPTIONS"].items() if key != "pool"}
        settings_dict["OPTIONS"] = {**options, "pool": {**connection.settings_dict["OPTIONS"]["pool"], **pool}}
        if port is not None:
            settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", str(port)
        wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)
        # Registered: connection_created receivers (django.contrib.postgres's) look the connection up by alias.
        connections[alias] = wrapper
        made.append(wrapper)
        return wrapper

    yield make
    for wrapper in made:
        wrapper.close()
        if wrapper.alias in wrapper._connection_pools:
            wrapper.close_pool()
        del connections[wrapper.alias]
    REACHABILITY.reset()


def record_getconn(pool: Any) -> list[float | None]:
    """The ``timeout`` of every ``getconn`` call on ``pool`` (None: the pool's own, DB_POOL_TIMEOUT)."""
    timeouts: list[float | None] = []
    getconn = pool.getconn

    def recording(timeout: float | None = None) -> Any:
        timeouts.append(timeout)
        return getconn(timeout)

    pool.getconn = recording
    return timeouts


def test_pooled_connections_are_checked_on_checkout():
    # Django gives the pool psycopg_pool's check (an empty statement) when CONN_HEALTH_CHECKS is on.
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    assert settings.DATABASES["default"]["OPTIONS"]["connect_timeout"] >= 1


@pytest.mark.django_db
def test_an_unreachable_server_fails_within_the_short_wait_not_the_pool_timeout(make_wrapper, settings):
    port = closed_port()
    # A pool timeout no request should ever wait here: only DB_UNREACHABLE_WAIT may be waited for.
    wrapper = make_wrapper("unreachable", port=port, timeout=300.0, min_size=1, max_size=2)
    pool = wrapper.pool
    pool.open()  # its first connection attempt is refused
    key = server_key(wrapper.get_connection_params())
    deadline = time.monotonic() + 30
    while REACHABILITY.unreachable(key) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert REACHABILITY.unreachable(key) is not None, "the refused attempt was not recorded"

    timeouts = record_getconn(pool)
    with pytest.raises(OperationalError) as raised:
        wrapper.ensure_connection()
    assert isinstance(raised.value.__cause__, DatabaseUnreachable)
    assert "unreachable" in str(raised.value)
    assert timeouts == [settings.DB_UNREACHABLE_WAIT]


@pytest.mark.django_db
def test_a_busy_pool_still_waits_its_timeout(make_wrapper):
    # The server answers; a checkout waits the pool's timeout (FIFO) whatever the other server's state.
    REACHABILITY.failed(("elsewhere", "5432"), OSError("refused"))
    wrapper = make_wrapper("busy", min_size=0, max_size=1)
    timeouts = record_getconn(wrapper.pool)
    wrapper.ensure_connection()
    assert timeouts == [None]


@pytest.mark.django_db
def test_a_pooled_connection_killed_by_a_restart_is_replaced_on_checkout(make_wrapper):
    wrapper = make_wrapper("restarted", min_size=1, max_size=1)
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (killed,) = cursor.fetchone()
    wrapper.close()  # back to the pool, idle, as between two requests
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [killed])
        assert cursor.fetchone() == (True,)
        # Wait until the server has ended that backend.
        for _ in range(500):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [killed])
            if cursor.fetchone() == (0,):
                break
            time.sleep(0.01)

    with wrapper.cursor() as cursor:  # the next request: no error
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    assert pid != killed
