"""gunicorn's HTTP/1 response writing its head and its first body bytes in one ``send(2)``.

gunicorn's ``Response`` sends the status line and headers with one system call and the body with another.
Every ``send(2)`` costs the worker a system call, and on a connection to a client on the same host (a proxy or
sidecar, a load generator) the kernel runs the receiving side's TCP processing within it, and wakes the
receiver twice for one response. Under load the headers' own ``send`` was 5 % of the workers' samples
(docs/capacity.md). ``CoalescingResponse`` keeps the head gunicorn built until the first body bytes, or the
end of the response, and sends both at once: the bytes on the wire are the same, in one write instead of two.

The head and the framing are gunicorn's own (its ``send_headers``, ``_emit_body`` and ``close`` write into a
buffer instead of the socket); a response that goes out by ``sendfile`` (static files) sends its head first, as
gunicorn does. ``install()`` makes gunicorn build its HTTP/1 responses with this class (``gunicorn.http.wsgi
.create`` looks ``Response`` up when it is called); ``vcci/gunicorn.conf.py`` calls it in every worker.

This module imports neither Django nor psycopg: the gunicorn configuration imports it in the workers' hook.
"""

from __future__ import annotations

from typing import Any

from gunicorn.http import wsgi


class _Buffer:
    """Stands in for the socket while gunicorn writes: keeps what it would have sent."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)


class CoalescingResponse(wsgi.Response):
    """gunicorn's ``Response``, its head sent with the first body bytes (module docstring)."""

    sock: Any  # gunicorn's attribute (untyped there)
    _head: bytes = b""
    _direct = False

    def _captured(self, write: Any, *args: Any) -> bytes:
        """What gunicorn's ``write(*args)`` would send on the socket, as bytes, without sending it."""
        sock, buffer = self.sock, _Buffer()
        self.sock = buffer
        try:
            write(*args)
        finally:
            self.sock = sock
        return b"".join(buffer.parts)

    def send_headers(self) -> None:
        if self.headers_sent:
            return
        if self._direct:
            super().send_headers()
            return
        self._head = self._captured(super().send_headers)

    def _emit_body(self, data: bytes) -> None:
        if not self._head:
            super()._emit_body(data)
            return
        # Non-chunked, gunicorn sends the body as it is; chunked, it frames it (captured, to stay its framing).
        framed = self._captured(super()._emit_body, data) if self.chunked else bytes(data)
        head, self._head = self._head, b""
        self.sock.sendall(head + framed)

    def sendfile(self, respiter: Any) -> bool:
        # gunicorn's sendfile writes to the socket itself: whatever head is due goes first, as it would.
        self._flush()
        self._direct = True
        try:
            return bool(super().sendfile(respiter))
        finally:
            self._direct = False

    def close(self) -> None:
        if not self.headers_sent:
            self.send_headers()
        tail = self._captured(super().close)
        head, self._head = self._head, b""
        if head or tail:
            self.sock.sendall(head + tail)

    def _flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self.sock.sendall(head)


def install() -> None:
    """Make gunicorn build its HTTP/1 responses as ``CoalescingResponse`` (in this process)."""
    wsgi.Response = CoalescingResponse
