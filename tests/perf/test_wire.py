"""perf.wire: gunicorn's responses written with their head and first body bytes in one send, byte for byte the
same as gunicorn's own, whatever the framing (length, chunked, no body, sendfile)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.http import wsgi

from perf.wire import CoalescingResponse, install


class Socket:
    """Records every write gunicorn makes, one entry per system call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def send(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        data = file.read(count)
        self.writes.append(data)
        return len(data)


def request(method: str = "GET", version: tuple[int, int] = (1, 1)) -> Any:
    return SimpleNamespace(method=method, version=version, should_close=lambda: False)


CONFIG = SimpleNamespace(protocol="http", sendfile=None, is_ssl=False)


def serve(
    response_class: type[wsgi.Response],
    status: str,
    headers: list[tuple[str, str]],
    body: Iterable[bytes],
    *,
    method: str = "GET",
    version: tuple[int, int] = (1, 1),
    file: bool = False,
) -> list[bytes]:
    """What a gunicorn worker does with one WSGI answer: start_response, every body item written, close."""
    sock = Socket()
    response = response_class(request(method, version), sock, CONFIG)
    response.start_response(status, headers)
    if file:
        with tempfile.TemporaryFile() as handle:
            handle.write(b"".join(body))
            handle.seek(0)
            response.write_file(SimpleNamespace(filelike=handle))
    else:
        for item in body:
            response.write(item)
    response.close()
    return sock.writes


@pytest.fixture(autouse=True)
def same_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gunicorn.util.http_date", lambda *args: "Thu, 03 Dec 2026 12:00:00 GMT")


JSON = [("Content-Type", "application/json")]
CASES: dict[str, tuple[str, list[tuple[str, str]], list[bytes], dict[str, Any], int]] = {
    # name: status, headers, body items, options, how many writes the coalescing response makes
    "a body with its length": ("200 OK", [*JSON, ("Content-Length", "11")], [b'{"a": true}'], {}, 1),
    "a chunked body in pieces": ("200 OK", JSON, [b"one,", b"", b"two,", b"three"], {}, 4),
    "a chunked body in one piece": ("200 OK", JSON, [b"whole"], {}, 2),
    "no body items at all": ("200 OK", JSON, [], {}, 1),
    "a 304 (the body is dropped)": ("304 Not Modified", [("ETag", '"v1"')], [b"ignored"], {}, 1),
    "a HEAD": ("200 OK", [*JSON, ("Content-Length", "5")], [b"12345"], {"method": "HEAD"}, 1),
    "HTTP/1.0, no length": ("200 OK", JSON, [b"ab", b"cd"], {"version": (1, 0)}, 2),
    "a file by sendfile": ("200 OK", [("Content-Length", "6")], [b"static"], {"file": True}, 2),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_bytes_on_the_wire_are_gunicorns(case):
    status, headers, body, options, writes = CASES[case]
    theirs = serve(wsgi.Response, status, headers, body, **options)
    ours = serve(CoalescingResponse, status, headers, body, **options)
    assert b"".join(ours) == b"".join(theirs)
    assert len(ours) == writes


def test_a_small_response_goes_out_in_one_write_instead_of_two():
    headers = [*JSON, ("Content-Length", "2")]
    theirs = serve(wsgi.Response, "200 OK", headers, [b"{}"])
    ours = serve(CoalescingResponse, "200 OK", headers, [b"{}"])
    assert len(theirs) == 2 and len(ours) == 1
    assert ours[0].startswith(b"HTTP/1.1 200 OK\r\n") and ours[0].endswith(b"\r\n\r\n{}")


def test_the_head_counts_as_sent_once_built():
    # gunicorn's error handling asks headers_sent: once the head is committed, no second status line may follow.
    response = CoalescingResponse(request(), Socket(), CONFIG)
    response.start_response("200 OK", JSON)
    response.send_headers()
    assert response.headers_sent


def test_install_makes_gunicorn_build_coalescing_responses(monkeypatch):
    monkeypatch.setattr(wsgi, "Response", wsgi.Response)  # restored after the test
    install()
    # gunicorn.http.wsgi.create looks the class up when it builds each response.
    assert wsgi.Response is CoalescingResponse
