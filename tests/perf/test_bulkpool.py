"""perf.bulkpool: which requests are bulk work, what is forwarded and relayed, the worker's fallbacks (unreachable
pool, failed pool, no slot). The bulk pool here is a small HTTP server on a Unix socket in a thread, which echoes
what it received; tests/vcci/test_gunicorn_serving.py runs the real one under gunicorn."""

from __future__ import annotations

import io
import json
import logging
import socketserver
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings

from perf import admission
from perf.admission import UNTIMED_HEADER
from perf.bulkpool import (
    REFUSE,
    BulkPoolForwarder,
    BulkPoolPeer,
    downstream_headers,
    is_bulk,
    serving_application,
    upstream_headers,
)
from perf.metrics import ADMISSION_REFUSED, BULK_POOL_REQUESTS

BULK_BODY = b'{"items": [' + b'{"x": 1},' * 2000 + b'{"x": 1}]}'  # > 16 KiB: a bulk batch calculation


def environ(method: str, path: str, body: bytes = b"", query: str = "", **extra: Any) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": query,
        "RAW_URI": path + (f"?{query}" if query else ""),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "HTTP_HOST": "api.example.com",
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    env.update(extra)
    return env


def outcome(name: str) -> float:
    return BULK_POOL_REQUESTS.labels(outcome=name)._value.get()


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received, as JSON, in chunks (the way an export streams)."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]]
    mode = "echo"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.mode == "refuse_unread":  # the bulk pool's Django refuses before reading the body, and closes
            type(self).seen.append({"method": self.command, "target": self.path, "body": None})
            self._refuse()
            return
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        received = {"method": self.command, "target": self.path, "headers": headers, "body": body}
        type(self).seen.append(received)
        if self.mode == "drop":
            self.close_connection = True
            return  # closes without answering: a bulk worker that died
        if self.mode == "kept":  # answered from the cache there: no bulk work (perf.admission.untimed)
            kept = b"kept"
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header(UNTIMED_HEADER, "1")
            self.send_header("Content-Length", str(len(kept)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(kept)
            return
        if self.mode == "busy":  # the bulk pool's own lane is full: its Django refuses
            self._refuse()
            return
        payload = json.dumps({**received, "body": body.decode()}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", '"abc"')
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for start in range(0, len(payload), 1000):
            piece = payload[start : start + 1000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _refuse(self) -> None:
        refusal = b'{"detail":"busy"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "2")
        self.send_header("Content-Length", str(len(refusal)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(refusal)

    do_GET = do_POST = _answer

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(socketserver.ThreadingUnixStreamServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-answer (a test closing a relay early) is part of the test, not a traceback to print."""


@pytest.fixture
def bulk_pool(tmp_path: Path) -> Iterator[type[_Echo]]:
    handler = type("Echo", (_Echo,), {"seen": [], "mode": "echo"})
    server = _QuietServer(str(tmp_path / "bulk.sock"), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.socket_path = str(tmp_path / "bulk.sock")  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def slots(admission_gate: Callable[..., None]) -> None:
    # Without jitter a refusal says the delay itself (4 s), which the tests read back as the worker's.
    admission_gate(
        ADMISSION_HEAVY_SLOTS=1, ADMISSION_HEAVY_WAIT=0, ADMISSION_RETRY_AFTER=4, ADMISSION_RETRY_AFTER_JITTER=False
    )


@pytest.fixture
def django_handler() -> Iterator[WSGIHandler]:
    """Django's WSGI handler, without its connection recycling at each request's start and end (the test client
    goes without it too): recycling checks a connection an earlier test left open, a database access these tests
    are not allowed."""
    signals = (request_started, request_finished)
    for signal in signals:
        signal.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        for signal in signals:
            signal.connect(close_old_connections)


class Recorder:
    """A WSGI application standing for the worker's Django: records that it was called."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"served here"]


def call(app: Any, env: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI application as a server does: start_response, the body iterated, then closed."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started.update(status=status, headers=headers)

    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], started["headers"], body


def slot_is_free() -> bool:
    slots = admission.gate().heavy_slots
    if slots.acquire(blocking=False) is not None:
        slots.release()
        return True
    return False


# -- which requests are bulk work --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "size", "expected"),
    [
        ("POST", "/api/v1/calculate/batch/", 20_000, True),
        ("POST", "/api/v1/calculate/batch/", 2_000, False),  # a small batch stays a small request
        ("POST", "/api/v1/activities/", 20_000, True),
        ("GET", "/api/v1/activities/", 0, False),
        ("GET", "/api/v1/emissions/export.csv", 0, True),
        ("GET", "/api/v1/emissions/", 0, False),
        ("POST", "/api/v1/calculate/", 20_000, False),
        ("GET", "/no/such/path/", 0, False),
    ],
)
def test_bulk_requests_are_those_the_views_declare_heavy(method, path, size, expected):
    assert is_bulk(environ(method, path, b"x" * size)) is expected


# -- what is forwarded -------------------------------------------------------------------------------


def test_upstream_headers_keep_the_end_to_end_ones_and_say_who_asked():
    env = environ(
        "POST",
        "/api/v1/activities/",
        b"{}",
        HTTP_AUTHORIZATION="Token abc",
        HTTP_IF_NONE_MATCH='"v1"',
        HTTP_CONNECTION="keep-alive",
        HTTP_KEEP_ALIVE="timeout=5",
        HTTP_TE="trailers",
        HTTP_X_FORWARDED_PROTO="http",  # a client's claim, never believed
        HTTP_X_FORWARDED_FOR="198.51.100.1",
    )
    headers = upstream_headers(env)
    assert ("authorization", "Token abc") in headers
    assert ("if-none-match", '"v1"') in headers
    assert ("host", "api.example.com") in headers
    assert ("content-type", "application/json") in headers and ("content-length", "2") in headers
    names = [name for name, _ in headers]
    assert "keep-alive" not in names and "te" not in names
    assert [value for name, value in headers if name == "connection"] == ["close"]
    # This hop's scheme (gunicorn decided it), and the client appended to the chain it came with.
    assert [value for name, value in headers if name == "x-forwarded-proto"] == ["https"]
    assert [value for name, value in headers if name == "x-forwarded-for"] == ["198.51.100.1, 203.0.113.7"]


def test_downstream_headers_drop_the_hop_by_hop_ones_and_the_servers_own():
    headers = [("Content-Type", "text/csv"), ("Transfer-Encoding", "chunked"), ("Connection", "close"), ("ETag", "x")]
    headers += [("Date", "Thu, 03 Dec 2026 10:00:00 GMT"), ("Server", "gunicorn")]  # the worker's gunicorn sets its own
    assert downstream_headers(headers) == [("Content-Type", "text/csv"), ("ETag", "x")]


def test_a_bulk_request_is_forwarded_as_received_and_its_answer_relayed(bulk_pool):
    forwarded = outcome("forwarded")
    # A stopped clock: the window never ends, so the count is not reset while the request is forwarded.
    backoff = admission.gate().backoff = admission.Backoff(base=1, ceiling=8, clock=lambda: 0.0)
    local = Recorder()
    forwarder = BulkPoolForwarder(local, socket_path=bulk_pool.socket_path)
    env = environ(
        "POST", "/api/v1/calculate/batch/", BULK_BODY, query="dry_run=1&x=%C3%A9", HTTP_AUTHORIZATION="Token abc"
    )
    status, headers, body = call(forwarder, env)
    assert status == "201 Created"
    # The chunked framing was the bulk pool's hop; the worker's gunicorn frames the body again.
    assert dict(headers) == {"Content-Type": "application/json", "ETag": '"abc"'}
    received = json.loads(body)
    assert received["method"] == "POST"
    assert received["target"] == "/api/v1/calculate/batch/?dry_run=1&x=%C3%A9"
    assert received["body"] == BULK_BODY.decode()
    assert received["headers"]["authorization"] == "Token abc"
    assert received["headers"]["host"] == "api.example.com"
    assert local.calls == []
    assert outcome("forwarded") == forwarded + 1
    # Counted as served, as a request this worker's Django answers: the Retry-After of its refusals weighs both.
    assert backoff._served == 1
    assert slot_is_free()


def timed_lane(admission_gate: Callable[..., None]) -> tuple[admission.HeavyLane, list[float]]:
    """The worker's heavy lane, two slots, a 1 s target, on a clock the test moves (``now[0]``)."""
    admission_gate(ADMISSION_HEAVY_SLOTS=2, ADMISSION_HEAVY_WAIT=0, ADMISSION_HEAVY_TARGET=1.0)
    lane = admission.gate().heavy_slots
    now = [time.monotonic()]  # from the real clock's time, which the lane was made at
    lane._clock = lambda: now[0]
    return lane, now


def test_the_bulk_pools_time_for_a_forwarded_request_adjusts_the_workers_heavy_slots(
    bulk_pool, admission_gate, monkeypatch
):
    lane, now = timed_lane(admission_gate)
    exchange = BulkPoolForwarder._exchange

    def slow_pool(connection: Any, environ: Any, on_sent: Any = None) -> Any:
        response = exchange(connection, environ, on_sent)
        now[0] += 4.0  # the bulk pool took four seconds to answer
        return response

    forwarder = BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path)
    held = lane.acquire(blocking=False)  # another bulk request runs meanwhile: the lane is shared
    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(slow_pool))
    assert call(forwarder, environ("POST", "/api/v1/calculate/batch/", BULK_BODY))[0] == "201 Created"
    assert (lane.limit, lane.running) == (1, 1)
    lane.release()
    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(exchange))
    assert call(forwarder, environ("POST", "/api/v1/calculate/batch/", BULK_BODY))[0] == "201 Created"
    assert (lane.limit, lane.running) == (2, 0)  # a quick one gives the slot back
    assert held is not None


def test_a_slow_upload_is_not_the_bulk_pools_time(bulk_pool, admission_gate, monkeypatch):
    lane, now = timed_lane(admission_gate)
    exchange = BulkPoolForwarder._exchange

    def slow_upload(connection: Any, environ: Any, on_sent: Any = None) -> Any:
        now[0] += 30.0  # the client took thirty seconds to send its body
        return exchange(connection, environ, on_sent)

    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(slow_upload))
    lane.acquire(blocking=False)  # shared: only the time measured decides
    forwarder = BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path)
    assert call(forwarder, environ("POST", "/api/v1/calculate/batch/", BULK_BODY))[0] == "201 Created"
    assert lane.limit == 2
    lane.release()


def test_a_failed_or_unfinished_relay_is_not_timed(bulk_pool, admission_gate, monkeypatch):
    lane, now = timed_lane(admission_gate)
    exchange = BulkPoolForwarder._exchange

    def slow_after_sending(connection: Any, environ: Any, on_sent: Any = None) -> Any:
        def sent() -> None:
            on_sent()
            now[0] += 4.0  # four seconds pass once the request is sent: timed, this would halve the limit

        return exchange(connection, environ, sent)

    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(slow_after_sending))
    forwarder = BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path)
    other = lane.acquire(blocking=False)  # shared: only whether it is timed decides
    bulk_pool.mode = "drop"
    assert call(forwarder, environ("POST", "/api/v1/calculate/batch/", BULK_BODY))[0].startswith("502")
    assert (lane.limit, lane.running) == (2, 1)
    bulk_pool.mode = "echo"
    started: dict[str, Any] = {}
    result = forwarder(
        environ("POST", "/api/v1/calculate/batch/", BULK_BODY), lambda status, headers, exc_info=None: started
    )
    next(iter(result))  # the client goes away after the first chunk
    result.close()
    assert (lane.limit, lane.running) == (2, 1)
    lane.release(other)


def test_a_refusal_by_the_bulk_pool_is_relayed_and_counted_as_one_not_timed(bulk_pool, admission_gate, monkeypatch):
    lane, now = timed_lane(admission_gate)
    bulk_pool.mode = "busy"
    backoff = admission.gate().backoff = admission.Backoff(base=1, ceiling=8, clock=lambda: 0.0)
    exchange = BulkPoolForwarder._exchange

    def slow_refusal(connection: Any, environ: Any, on_sent: Any = None) -> Any:
        response = exchange(connection, environ, on_sent)
        now[0] += 4.0  # it waited for the pool's lane, then was refused
        return response

    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(slow_refusal))
    lane.acquire(blocking=False)
    status, headers, body = call(
        BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path),
        environ("POST", "/api/v1/calculate/batch/", BULK_BODY),
    )
    assert status.startswith("503")
    assert dict(headers)["Retry-After"] == "2"
    assert json.loads(body) == {"detail": "busy"}
    assert (backoff._refused, backoff._served) == (1, 0)
    assert (lane.limit, lane.running) == (2, 1)  # freed, and the wait was no bulk work
    lane.release()


def test_an_answer_the_bulk_pool_says_was_no_bulk_work_is_relayed_untimed(bulk_pool, admission_gate, monkeypatch):
    lane, now = timed_lane(admission_gate)
    bulk_pool.mode = "kept"
    exchange = BulkPoolForwarder._exchange

    def slow_kept(connection: Any, environ: Any, on_sent: Any = None) -> Any:
        response = exchange(connection, environ, on_sent)
        now[0] += 4.0  # slow for whatever reason: timed, this would halve the limit
        return response

    monkeypatch.setattr(BulkPoolForwarder, "_exchange", staticmethod(slow_kept))
    lane.acquire(blocking=False)  # shared: only the time measured decides
    status, headers, body = call(
        BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path),
        environ("GET", "/api/v1/emissions/export.csv"),
    )
    assert (status, body) == ("200 OK", b"kept")
    assert UNTIMED_HEADER.lower() not in {name.lower() for name, _ in headers}  # the pool's word, not the client's
    assert (lane.limit, lane.running) == (2, 1)
    lane.release()


def test_other_requests_are_served_here(bulk_pool):
    local = Recorder()
    forwarder = BulkPoolForwarder(local, socket_path=bulk_pool.socket_path)
    assert call(forwarder, environ("GET", "/api/v1/emissions/"))[2] == b"served here"
    assert call(forwarder, environ("POST", "/api/v1/calculate/batch/", b"{}"))[2] == b"served here"
    assert len(local.calls) == 2 and bulk_pool.seen == []


def test_without_a_bulk_pool_everything_is_served_here(settings):
    settings.BULK_POOL_SOCKET = ""
    local = Recorder()
    assert call(BulkPoolForwarder(local), environ("GET", "/api/v1/emissions/export.csv"))[2] == b"served here"
    assert len(local.calls) == 1


def test_an_unreachable_bulk_pool_leaves_the_request_to_this_worker(tmp_path, caplog):
    local_before = outcome("local")
    local = Recorder()
    forwarder = BulkPoolForwarder(local, socket_path=str(tmp_path / "missing.sock"))
    with caplog.at_level(logging.WARNING, logger="vcci.bulk_pool"):
        for _ in range(2):
            status, _, body = call(forwarder, environ("POST", "/api/v1/activities/", BULK_BODY))
            assert (status, body) == ("200 OK", b"served here")
    # The body was not consumed by the failed attempt: the worker's Django reads it whole.
    assert [env["wsgi.input"].read() for env in local.calls] == [BULK_BODY, BULK_BODY]
    assert outcome("local") == local_before + 2
    # Said once per outage, not once per request.
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    assert slot_is_free()


def test_a_bulk_pool_failing_after_the_request_was_sent_is_a_502(bulk_pool, caplog):
    bulk_pool.mode = "drop"
    failed = outcome("failed")
    local = Recorder()
    forwarder = BulkPoolForwarder(local, socket_path=bulk_pool.socket_path)
    with caplog.at_level(logging.ERROR, logger="vcci.bulk_pool"):
        status, headers, body = call(forwarder, environ("POST", "/api/v1/activities/", BULK_BODY))
    assert status == "502 Bad Gateway"
    assert ("Cache-Control", "no-store") in headers
    assert "may or may not have run" in json.loads(body)["detail"]
    assert len(bulk_pool.seen) == 1 and local.calls == []  # sent, so never run a second time here
    assert outcome("failed") == failed + 1
    assert slot_is_free()


def test_a_refusal_the_bulk_pool_writes_before_reading_the_body_is_relayed_not_a_502(bulk_pool, caplog):
    bulk_pool.mode = "refuse_unread"
    failed, forwarded = outcome("failed"), outcome("forwarded")
    large = b'{"items": [' + b'{"x": 1},' * 500_000 + b'{"x": 1}]}'  # far beyond the socket's buffers: sending fails
    with caplog.at_level(logging.ERROR, logger="vcci.bulk_pool"):
        status, headers, body = call(
            BulkPoolForwarder(Recorder(), socket_path=bulk_pool.socket_path),
            environ("POST", "/api/v1/activities/", large),
        )
    assert status == "503 Service Unavailable"
    assert ("Retry-After", "2") in headers
    assert json.loads(body) == {"detail": "busy"}
    assert [seen["body"] for seen in bulk_pool.seen] == [None]  # the pool never read it
    assert (outcome("failed"), outcome("forwarded")) == (failed, forwarded + 1)
    assert "failed" not in caplog.text
    assert slot_is_free()


def test_with_no_slot_free_the_workers_django_refuses_it(bulk_pool, django_handler):
    refused_before = ADMISSION_REFUSED.labels(reason=admission.HEAVY_BUSY)._value.get()
    slots = admission.gate().heavy_slots
    assert slots.acquire(blocking=False) is not None  # the one slot is taken by a bulk request in progress
    try:
        env = environ("POST", "/api/v1/activities/", BULK_BODY, HTTP_HOST="testserver")
        status, headers, body = call(BulkPoolForwarder(django_handler, socket_path=bulk_pool.socket_path), env)
    finally:
        slots.release()
    assert status.startswith("503")
    assert ("Retry-After", "4") in headers
    assert json.loads(body) == {"detail": admission._MESSAGES[admission.HEAVY_BUSY]}
    assert env[REFUSE] == admission.HEAVY_BUSY and bulk_pool.seen == []
    assert ADMISSION_REFUSED.labels(reason=admission.HEAVY_BUSY)._value.get() == refused_before + 1


def test_another_urlconf_is_resolved_afresh(settings, monkeypatch):
    export = environ("GET", "/api/v1/emissions/export.csv")
    assert is_bulk(export)  # resolved once, kept
    empty = types.ModuleType("tests_perf_no_urls")
    empty.urlpatterns = []
    monkeypatch.setitem(sys.modules, empty.__name__, empty)
    settings.ROOT_URLCONF = empty.__name__
    assert not is_bulk(export)


# -- in the bulk pool: the client address the worker saw ---------------------------------------------


def in_the_bulk_pool(worker: dict[str, Any]) -> dict[str, Any]:
    """The environ the bulk pool's gunicorn makes of ``worker``'s request forwarded to it: the forwarder's headers,
    and '' for REMOTE_ADDR (the peer is on a Unix socket)."""
    env = environ(worker["REQUEST_METHOD"], worker["PATH_INFO"], REMOTE_ADDR="")
    env.pop("HTTP_HOST")
    for name, value in upstream_headers(worker):
        if name not in ("content-type", "content-length", "connection"):
            env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


@pytest.mark.parametrize(
    ("remote", "forwarded_for"),
    [("203.0.113.7", None), ("10.0.0.2", "198.51.100.1"), ("10.0.0.2", "198.51.100.1, 192.0.2.5"), ("", "192.0.2.5")],
)
def test_the_bulk_pool_sees_the_client_address_the_worker_saw(remote, forwarded_for):
    """REMOTE_ADDR is the worker's peer again, X-Forwarded-For the chain as the worker received it: NUM_PROXIES
    counts the same proxies in either server."""
    extra = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    worker = environ("GET", "/api/v1/emissions/export.csv", REMOTE_ADDR=remote, **extra)
    app = Recorder()
    call(BulkPoolPeer(app), in_the_bulk_pool(worker))
    (seen,) = app.calls
    assert (seen["REMOTE_ADDR"], seen.get("HTTP_X_FORWARDED_FOR")) == (remote, forwarded_for)


def test_the_bulk_pool_throttles_each_client_address_on_its_own(monkeypatch, throttle_clock, django_handler):
    """In the bulk pool's role (VCCI_SERVER_ROLE=bulk) the application counts each forwarded client under its own
    address, not all of them under the Unix socket's ''."""
    monkeypatch.setenv("VCCI_SERVER_ROLE", "bulk")
    app = serving_application(django_handler)
    configured = django_settings.REST_FRAMEWORK
    rates = {**configured["DEFAULT_THROTTLE_RATES"], "anon": "1/min"}
    with override_settings(REST_FRAMEWORK={**configured, "DEFAULT_THROTTLE_RATES": rates}):
        statuses = [
            call(app, in_the_bulk_pool(environ("GET", "/api/docs/", REMOTE_ADDR=address, HTTP_HOST="testserver")))[0]
            for address in ("203.0.113.7", "198.51.100.4", "203.0.113.7")
        ]
    assert [status[:3] for status in statuses] == ["200", "200", "429"]


def test_the_main_server_forwards_bulk_work(monkeypatch):
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)
    assert isinstance(serving_application(Recorder()), BulkPoolForwarder)
