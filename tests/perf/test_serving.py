"""perf.serving: psycopg's wait function is accepted only if it yields to gevent; a gevent worker refuses otherwise."""

from __future__ import annotations

import logging
import subprocess
import sys
import types
from typing import Any

import gevent.select
import gevent.selectors
import psycopg.waiting
import pytest

from perf.serving import (
    BlockingWaitError,
    accept_in_batches,
    check_psycopg_waits_cooperatively,
    check_worker,
    is_gevent_worker,
    psycopg_wait_problems,
)


def patched_everywhere(module: str) -> bool:
    return True


def waiting_module(wait_name: str, *, gevent_selector: bool = True, gevent_select: bool = True) -> Any:
    """psycopg.waiting as a gevent-patched process sees it: its real functions, gevent's primitives."""
    import select
    import selectors

    return types.SimpleNamespace(
        wait=getattr(psycopg.waiting, wait_name),
        wait_poll=psycopg.waiting.wait_poll,
        wait_select=psycopg.waiting.wait_select,
        wait_selector=psycopg.waiting.wait_selector,
        wait_c=psycopg.waiting.wait_c,
        wait_epoll=psycopg.waiting.wait_epoll,
        select=types.SimpleNamespace(
            poll=gevent.select.poll if gevent_select else select.poll,
            select=gevent.select.select if gevent_select else select.select,
        ),
        DefaultSelector=gevent.selectors.GeventSelector if gevent_selector else selectors.DefaultSelector,
    )


@pytest.mark.parametrize("name", ["wait_poll", "wait_select", "wait_selector"])
def test_a_cooperative_wait_function_is_accepted(name):
    waiting = waiting_module(name)
    assert psycopg_wait_problems(waiting, patched=patched_everywhere) == []
    assert check_psycopg_waits_cooperatively(waiting, patched=patched_everywhere) == name


@pytest.mark.parametrize("name", ["wait_c", "wait_epoll"])
def test_a_blocking_wait_function_is_refused(name):
    with pytest.raises(BlockingWaitError, match=f"with {name} .*blocks the whole worker"):
        check_psycopg_waits_cooperatively(waiting_module(name), patched=patched_everywhere)


def test_a_wait_that_would_call_the_unpatched_poll_is_refused():
    waiting = waiting_module("wait_poll", gevent_select=False)
    [problem] = psycopg_wait_problems(waiting, patched=patched_everywhere)
    assert "wait_poll would call" in problem and "not gevent's" in problem


def test_connecting_through_the_unpatched_selector_is_refused():
    # wait_conn (every new connection) uses the DefaultSelector psycopg bound at import.
    [problem] = psycopg_wait_problems(waiting_module("wait_poll", gevent_selector=False), patched=patched_everywhere)
    assert "opens connections waiting on" in problem


def test_an_unpatched_process_is_refused_whatever_the_wait_function():
    with pytest.raises(BlockingWaitError, match="gevent has not monkey-patched socket, select, selectors"):
        check_psycopg_waits_cooperatively(waiting_module("wait_poll"), patched=lambda module: False)


def test_this_unpatched_test_process_is_refused():
    # The real psycopg.waiting of a process without gevent: the C wait, the epoll selector.
    problems = psycopg_wait_problems()
    assert len(problems) == 3
    assert "wait_c" in problems[1]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_psycopg_imported_after_gevent_patched_passes_the_check():
    # What gunicorn's gevent worker does: patch_all(), then load the application (which imports psycopg).
    result = run_python(
        "from gevent import monkey; monkey.patch_all()\n"
        "from perf.serving import check_psycopg_waits_cooperatively\n"
        "print(check_psycopg_waits_cooperatively())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "wait_poll"


def test_psycopg_imported_before_gevent_patched_fails_the_check():
    # What preload_app (or importing the project in gunicorn.conf.py) would do.
    result = run_python(
        "import psycopg\n"
        "from gevent import monkey; monkey.patch_all()\n"
        "from perf.serving import check_psycopg_waits_cooperatively\n"
        "check_psycopg_waits_cooperatively()\n"
    )
    assert result.returncode == 1
    assert "BlockingWaitError" in result.stderr and "wait_c" in result.stderr


class StubLog:
    def __init__(self) -> None:
        self.log = logging.getLogger("tests.perf.serving")
        self.info = self.log.info


class SyncWorker:
    log = StubLog()


def gevent_worker() -> Any:
    from gunicorn.workers.ggevent import GeventWorker

    # Not initialized: only its class matters to the check.
    worker = GeventWorker.__new__(GeventWorker)
    worker.log = StubLog()
    return worker


def test_only_gevent_workers_are_checked():
    assert is_gevent_worker(gevent_worker())
    assert not is_gevent_worker(SyncWorker())
    check_worker(SyncWorker())  # this process is not patched, and that is fine for a sync worker


def test_a_gevent_worker_with_a_blocking_psycopg_refuses_to_boot():
    with pytest.raises(BlockingWaitError):
        check_worker(gevent_worker())


def test_a_gevent_worker_with_a_cooperative_psycopg_boots(caplog):
    with caplog.at_level(logging.INFO, logger="tests.perf.serving"):
        check_worker(gevent_worker(), waiting=waiting_module("wait_poll"), patched=patched_everywhere)
    assert "psycopg waits cooperatively under gevent (wait_poll)" in caplog.text


# -- accepting connections in batches -------------------------------------------------------------------


@pytest.fixture
def ggevent_server_class(monkeypatch):
    """gunicorn's gevent worker module, its server class restored after the test."""
    import gunicorn.workers.ggevent as ggevent

    monkeypatch.setattr(ggevent, "StreamServer", ggevent.StreamServer)
    return ggevent


def batch_worker(workers: int, server_class: Any = None) -> Any:
    """A gunicorn gevent worker as ``post_worker_init`` sees it: its configuration and its server class."""
    return types.SimpleNamespace(cfg=types.SimpleNamespace(workers=workers), server_class=server_class)


@pytest.mark.parametrize("count", [1, 16])
def test_gunicorns_one_connection_per_wake_up_is_replaced_by_the_batch(ggevent_server_class, count):
    import socket

    import gevent.socket

    assert accept_in_batches(batch_worker(2), count)
    listener = gevent.socket.socket()
    clients: list[socket.socket] = []
    accepted: list[Any] = []
    # As GeventWorker.run builds it (a spawn that records each accepted connection instead of serving it), then
    # lowers max_accept with several workers.
    server = ggevent_server_class.StreamServer(
        listener, handle=lambda client, address: None, spawn=lambda *call: accepted.append(call[-1][0])
    )
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        server.max_accept = 1
        assert server.max_accept == count
        clients += [socket.create_connection(listener.getsockname()) for _ in range(5)]
        server.start()
        # One wake-up of the listening socket (no yield to the hub, so its watcher never runs in between): the
        # connections waiting in the kernel's queue, up to the batch.
        server._do_read()
        assert len(accepted) == min(count, 5)
    finally:
        server.stop()
        listener.close()
        for connection in clients + accepted:
            connection.close()


@pytest.mark.parametrize(
    "worker",
    [
        batch_worker(1),  # gunicorn leaves gevent's own batch (100) to a single worker
        batch_worker(2, server_class=object),  # the pywsgi worker class: its server sets its own
    ],
)
def test_the_batch_is_left_alone_where_gunicorn_does_not_lower_it(ggevent_server_class, worker):
    from gevent.server import StreamServer

    assert not accept_in_batches(worker, 16)
    assert ggevent_server_class.StreamServer is StreamServer


def test_a_batch_is_at_least_one_connection(ggevent_server_class):
    from gevent.server import StreamServer

    with pytest.raises(ValueError, match="count must be at least 1"):
        accept_in_batches(batch_worker(2), 0)
    assert ggevent_server_class.StreamServer is StreamServer
