"""perf.trace: the server's half of the load test's request trace."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from perf import trace


class Body:
    """A response iterable that notes when the server closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed = True


def app_answering(body: Body, status: str = "201 Created") -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response(status, [("Content-Type", "text/plain")])
        return body

    return app


def serve(app: Any, request_id: str | None, sock: Any = None) -> tuple[list[str], bytes, Any]:
    """``app`` called as gunicorn calls it (on the client socket ``sock``, when given): the status it started, the body
    read, the iterable (not closed yet)."""
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    if sock is not None:
        environ["gunicorn.socket"] = sock
    if request_id is not None:
        environ["HTTP_X_REQUEST_ID"] = request_id
    started: list[str] = []
    iterable = app(environ, lambda status, headers, exc_info=None: started.append(status))
    return started, b"".join(iterable), iterable


def lines(directory: Path) -> dict[str, list[list[str]]]:
    return {path.name: [line.split("\t") for line in path.read_text().splitlines()] for path in directory.iterdir()}


def test_without_the_directory_the_application_is_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(trace.TRACE_DIR_ENV, raising=False)
    app = app_answering(Body([b"x"]))
    assert trace.traced(app) is app


def test_a_request_is_recorded_by_its_id_once_its_response_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)
    body = Body([b"hello ", b"world"])
    app = trace.traced(app_answering(body))

    started, content, iterable = serve(app, "t123-7")

    assert started == ["201 Created"] and content == b"hello world"  # passed through unchanged
    assert list(tmp_path.iterdir()) == []  # nothing until the server has closed the response
    iterable.close()
    assert body.closed  # the application's own close still runs
    [(name, [record])] = lines(tmp_path).items()
    assert name == f"main-{os.getpid()}.tsv"
    request_id, called, done, status, opened = record
    assert request_id == "t123-7" and status == "201" and float(called) <= float(done)
    assert opened == "-"  # no client socket in the environ: not known whether it opened a connection


def test_requests_without_a_recordable_id_are_served_and_not_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    app = trace.traced(app_answering(Body([b"ok"]), status="200 OK"))
    for request_id in (None, "", "with\ttab", "x" * 65):
        started, content, iterable = serve(app, request_id)
        iterable.close()
        assert started == ["200 OK"] and content == b"ok"
    assert list(tmp_path.iterdir()) == []


def test_the_bulk_pool_records_under_its_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("VCCI_SERVER_ROLE", "bulk")
    app = trace.traced(app_answering(Body([b"ok"])))
    for request_id in ("a-1", "a-2"):
        serve(app, request_id)[2].close()
    assert {name: [record[0] for record in records] for name, records in lines(tmp_path).items()} == {
        f"bulk-{os.getpid()}.tsv": ["a-1", "a-2"]
    }


def test_a_body_without_close_is_recorded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("204 No Content", [])
        return []

    _, content, iterable = serve(trace.traced(app), "b-1")
    iterable.close()
    assert content == b"" and [record[3] for records in lines(tmp_path).values() for record in records] == ["204"]


def test_the_answer_is_recorded_before_the_applications_own_close_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the application's close does (Django's request_finished, a relayed answer's slot given back) runs after
    the client has its answer: it is not counted in the request's time, and a close that fails loses no record."""
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)
    seen_at_close: list[int] = []

    class FailingClose(Body):
        def close(self) -> None:
            seen_at_close.append(sum(len(records) for records in lines(tmp_path).values()))
            raise RuntimeError("the application's close failed")

    _, _, iterable = serve(trace.traced(app_answering(FailingClose([b"x"]))), "c-1")
    with pytest.raises(RuntimeError, match="close failed"):
        iterable.close()
    assert seen_at_close == [1]


def test_the_first_request_on_each_client_socket_opened_its_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(trace.TRACE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)
    app = trace.traced(app_answering(Body([b"ok"])))
    first, second = socket.socket(), socket.socket()
    try:
        for request_id, sock in (("k-1", first), ("k-2", first), ("k-3", second), ("k-4", first)):
            serve(app, request_id, sock)[2].close()
    finally:
        first.close()
        second.close()
    [records] = lines(tmp_path).values()
    assert [(record[0], record[4]) for record in records] == [("k-1", "1"), ("k-2", "0"), ("k-3", "1"), ("k-4", "0")]
