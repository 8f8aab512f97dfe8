"""perf.postgresql (the project's PostgreSQL backend): PostgreSQL unreachable fails fast, a pool that is only busy
waits DB_POOL_TIMEOUT, pooled connections that died with the server are replaced on checkout, and the prepared
cursor prepares a repeated text once per connection.

The shared PostgreSQL is never stopped: "unreachable" is a wrapper whose pool points at a closed port, and a
"restart" kills the backend of the test's own pooled connection (pg_terminate_backend).
"""

from __future__ import annotations

import copy
import datetime as dt
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError, connection, connections, transaction
from django.db.utils import load_backend
from django.test.utils import CaptureQueriesContext
from psycopg_pool import ConnectionPool, PoolTimeout

from perf.postgresql.base import (
    PREPARE_THRESHOLD,
    REACHABILITY,
    DatabaseUnreachable,
    PreparingCursor,
    _has_input,
    check_connection,
    server_key,
)


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


@pytest.fixture
def checkout_waits(monkeypatch) -> list[float | None]:
    """The ``timeout`` of every wait for a pooled connection (psycopg_pool's ``getconn``; None: the pool's own)."""
    waits: list[float | None] = []
    getconn = ConnectionPool.getconn

    def recording(self: Any, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return getconn(self, timeout)

    monkeypatch.setattr(ConnectionPool, "getconn", recording)
    return waits


def test_pooled_connections_are_checked_on_checkout():
    # The backend gives the pool its check (perf.postgresql.base.check_connection) when CONN_HEALTH_CHECKS is on.
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True
    assert settings.DATABASES["default"]["OPTIONS"]["connect_timeout"] >= 1


@pytest.mark.django_db
def test_an_unreachable_server_fails_after_one_short_wait_not_the_pool_timeout(make_wrapper, checkout_waits, settings):
    settings.DB_UNREACHABLE_WAIT = 0.5
    # A pool timeout no request should wait here: only DB_UNREACHABLE_WAIT may be waited for.
    wrapper = make_wrapper("unreachable", port=closed_port(), timeout=20.0, min_size=1, max_size=2)
    with pytest.raises(OperationalError) as raised:
        wrapper.ensure_connection()  # the first request: the pool opens, its first attempt is refused
    assert isinstance(raised.value.__cause__, DatabaseUnreachable), repr(raised.value.__cause__)
    assert "unreachable" in str(raised.value)
    # The checkout waited one slice and gave up: the refused attempt told it the server is unreachable.
    assert checkout_waits[-1:] == [0.5] and None not in checkout_waits
    assert REACHABILITY.unreachable(server_key(wrapper.get_connection_params())) is not None

    checkout_waits.clear()
    with pytest.raises(OperationalError) as raised:
        wrapper.ensure_connection()  # every request after it, alike
    assert isinstance(raised.value.__cause__, DatabaseUnreachable)
    assert checkout_waits == [0.5]


@pytest.mark.django_db
def test_a_busy_pool_waits_its_whole_timeout_and_says_busy(make_wrapper, checkout_waits, settings):
    settings.DB_UNREACHABLE_WAIT = 0.1
    wrapper = make_wrapper("busy", min_size=0, max_size=1, timeout=1.0)
    pool = wrapper.pool
    pool.open()
    held = pool.getconn(timeout=5)  # the pool's only connection, in use by another request
    try:
        checkout_waits.clear()
        with pytest.raises(OperationalError) as raised:
            wrapper.ensure_connection()
    finally:
        pool.putconn(held)
    assert isinstance(raised.value.__cause__, PoolTimeout), repr(raised.value.__cause__)
    # Slices of DB_UNREACHABLE_WAIT, one after another, until the pool's timeout was spent: more than one (an
    # unreachable server gives up after the first), however slowly a loaded machine runs them (10 fit the timeout).
    assert len(checkout_waits) >= 2 and all(wait is not None and wait <= 0.1 for wait in checkout_waits)


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


@pytest.fixture
def round_trip_checks(monkeypatch) -> list[Any]:
    """The connections psycopg_pool's own check (an empty statement, a round trip) was run on."""
    checked: list[Any] = []
    check = ConnectionPool.check_connection

    def recording(conn: Any) -> None:
        checked.append(conn)
        check(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(recording))
    return checked


def _three_requests(wrapper: Any) -> None:
    for _ in range(3):  # one connection, given back to the pool after each, as between requests
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        wrapper.close()


@pytest.mark.django_db
def test_a_live_connection_back_from_a_request_is_handed_out_without_a_round_trip(make_wrapper, round_trip_checks):
    wrapper = make_wrapper("live", min_size=1, max_size=1)
    assert wrapper.pool._check is check_connection

    _three_requests(wrapper)

    # Only the first checkout's: the new connection had never been given back (its idle time is unknown).
    assert len(round_trip_checks) == 1


@pytest.mark.django_db
def test_a_connection_idle_for_db_pool_check_idle_gets_the_round_trip(make_wrapper, round_trip_checks, settings):
    # A NAT or a firewall may drop an idle connection without the socket telling: past this, the empty statement.
    settings.DB_POOL_CHECK_IDLE = 0
    wrapper = make_wrapper("idle", min_size=1, max_size=1)

    _three_requests(wrapper)

    assert len(round_trip_checks) == 3


@pytest.mark.django_db
def test_a_connection_the_server_ended_gets_the_round_trip_check_and_fails_it(make_wrapper, round_trip_checks):
    wrapper = make_wrapper("ended", min_size=1, max_size=1)
    pool = wrapper.pool
    pool.open()
    conn = pool.getconn(timeout=5)
    try:
        (pid,) = conn.execute("SELECT pg_backend_pid()").fetchone()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        for _ in range(500):  # until its FATAL message and the end of the stream reach the socket
            if _has_input(conn.fileno()):
                break
            time.sleep(0.01)
        round_trip_checks.clear()  # the first checkout's, of a connection never given back
        conn.returned_at = time.monotonic()  # as if just given back: only its socket can tell
        with pytest.raises(psycopg.OperationalError):
            check_connection(conn)
        assert round_trip_checks == [conn]
    finally:
        conn.close()
        pool.putconn(conn)


def test_has_input_peeks_without_reading_or_waiting():
    ours, peer = socket.socketpair()
    with ours, peer:
        assert _has_input(ours.fileno()) is False  # nothing sent: no wait
        peer.sendall(b"E")
        assert _has_input(ours.fileno()) is True
        assert ours.recv(8) == b"E"  # left in place
        peer.close()
        assert _has_input(ours.fileno()) is True  # the end of the stream
        assert ours.fileno() != -1  # the descriptor is still ours, open
    assert _has_input(ours.fileno()) is True  # closed (-1): the full check decides


def test_has_input_does_not_wait_out_a_default_socket_timeout():
    # A socket object takes the process's default timeout; with one, recv() first waits for input (then times out,
    # which would read as "something to read").
    ours, peer = socket.socketpair()
    default = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        with ours, peer:
            assert _has_input(ours.fileno()) is False
    finally:
        socket.setdefaulttimeout(default)


def test_a_closed_connection_fails_the_check(round_trip_checks):
    conn = psycopg.connect(**{**connection.get_connection_params(), "dbname": "postgres"})  # any database will do
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        check_connection(conn)
    assert round_trip_checks == [conn]


def _prepared(text: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{text}%"])
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def preparing(settings):
    settings.DB_PREPARED_STATEMENTS = True
    return settings


@pytest.mark.django_db
def test_the_prepared_cursor_prepares_a_repeated_text_once_and_logs_it_with_its_parameters(preparing):
    query = "SELECT %s::int * 2, %s::timestamptz /* prepared-probe */"
    instant = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    runs = PREPARE_THRESHOLD + 2
    with CaptureQueriesContext(connection) as captured:
        results = []
        for value in range(runs):
            with connection.prepared_cursor() as cursor:
                assert isinstance(cursor.cursor, PreparingCursor)
                cursor.execute(query, [value, instant])
                results.append(cursor.fetchone())
            if value < PREPARE_THRESHOLD - 1:
                assert _prepared("prepared-probe") == []  # not before it ran PREPARE_THRESHOLD times
    assert results == [(2 * value, instant) for value in range(runs)]
    (statement,) = _prepared("prepared-probe")
    assert "$1" in statement and "$2" in statement
    # Django's own queries are not even counted by psycopg: the threshold is the prepared cursor's alone.
    assert connection.connection.prepare_threshold is None
    # The query log names each execution with its own values, as it names Django's client-bound queries.
    literal = "'2026-01-02 03:04:05+00:00'::timestamptz"  # as psycopg quotes an aware datetime
    logged = [entry["sql"] for entry in captured if "pg_prepared_statements" not in entry["sql"]]
    assert logged == [f"SELECT {value}::int * 2, {literal}::timestamptz /* prepared-probe */" for value in range(runs)]


@pytest.mark.django_db
def test_the_prepared_cursor_is_djangos_when_prepared_statements_are_off(settings):
    settings.DB_PREPARED_STATEMENTS = False
    for _ in range(PREPARE_THRESHOLD + 2):
        with connection.prepared_cursor() as cursor:
            assert not isinstance(cursor.cursor, PreparingCursor)
            cursor.execute("SELECT 1 /* unprepared-probe */")
            assert cursor.fetchone() == (1,)
    assert _prepared("unprepared-probe") == []


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_is_made_again_after_a_rollback(preparing):
    # psycopg deallocates its prepared statements when a transaction rolls back; the text is prepared again later.
    def run(value: int) -> Any:
        with connection.prepared_cursor() as cursor:  # type: ignore[attr-defined]  # perf.postgresql's
            cursor.execute("SELECT %s::int + 1 /* rollback-probe */", [value])
            return cursor.fetchone()[0]

    assert [run(value) for value in range(PREPARE_THRESHOLD + 1)] == list(range(1, PREPARE_THRESHOLD + 2))
    assert len(_prepared("rollback-probe")) == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        assert run(100) == 101
        raise RuntimeError("rolled back")
    assert _prepared("rollback-probe") == []
    assert [run(value) for value in range(PREPARE_THRESHOLD + 1)] == list(range(1, PREPARE_THRESHOLD + 2))
    assert len(_prepared("rollback-probe")) == 1
