"""When each request reached the application and when its response was done: the server's half of the load test's
request trace (``bench.loadtest --trace``; the load generator writes the other half, ``bench.trace`` joins them).

A request timer inside the server starts when the application is called: the time a request spent before that (in
the kernel's accept queue, waiting for its worker to read it, waiting for the CPU) is in no server metric, yet the
client waits it. Joined by request id with the client's own record of the same request (sent at, answered after), the
two say where the client's time went: before the application, in it, after it.

Off unless ``REQUEST_TRACE_DIR`` names a directory (``vcci/wsgi.py`` wraps the application then; never in
production). Every serving process then appends one line per request carrying an ``X-Request-ID`` to
``<dir>/<role>-<pid>.tsv`` (role ``main`` for a gunicorn worker, ``bulk`` for the bulk pool, which sees the bulk
requests the workers relay to it, under the same id): the id, the wall-clock time (``time.time()``) the application
was called, the time the server closed the response's iterable (gunicorn closes it once it has written the last byte
and logged the request; a streamed export is produced until then; taken before the application's own ``close``
runs), the status, and whether the request opened its connection (``1``: the first this process served on that
client socket, which waited in the accept queue; ``0``: a later one on a kept-alive connection; ``-``: unknown, a
server that does not hand the socket to the application as gunicorn does, ``gunicorn.socket``). One ``write`` per
line on a file opened for appending, so lines of one process never interleave and nothing is lost when a worker is
stopped. Wall-clock times, because the load generator's records are taken in other processes of the same machine.

While it is on, gunicorn cannot send a ``FileResponse`` with ``sendfile`` to a request carrying an id (its response
is wrapped); the API sends none.
"""

from __future__ import annotations

import os
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

TRACE_DIR_ENV = "REQUEST_TRACE_DIR"
# The ids recorded: what the load generator sends (bench.trace), never a tab or a line break.
_RECORDED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def role() -> str:
    """This process's serving role, as the trace files are named: ``main`` or ``bulk``."""
    from perf.metrics import ROLE_ENV

    return os.environ.get(ROLE_ENV) or "main"


class TracedApplication:
    """``app``, recording each request that carries an ``X-Request-ID`` to ``directory`` (module docstring)."""

    def __init__(self, app: WSGIApp, directory: str) -> None:
        self.app = app
        self.directory = directory
        self._fd: int | None = None
        self._pid: int | None = None
        # The client sockets this process has served a request on; a closed connection's drops out with its socket.
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()

    def _descriptor(self) -> int:
        # Opened in the process that serves: a worker forked after the application was loaded writes its own file.
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            path = os.path.join(self.directory, f"{role()}-{pid}.tsv")
            self._fd, self._pid = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), pid
        return self._fd

    def record(self, request_id: str, started: float, done: float, status: str, opened: str) -> None:
        line = f"{request_id}\t{started:.6f}\t{done:.6f}\t{status}\t{opened}\n"
        os.write(self._descriptor(), line.encode())

    def opened(self, environ: dict[str, Any]) -> str:
        """``1`` when ``environ``'s request is the first this process serves on its client socket, ``0`` when it is
        not, ``-`` when the server does not say which socket it came on."""
        sock = environ.get("gunicorn.socket")
        if sock is None:
            return "-"
        try:
            if sock in self._sockets:
                return "0"
            self._sockets.add(sock)
        except TypeError:  # a socket that cannot be referenced weakly
            return "-"
        return "1"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id = environ.get("HTTP_X_REQUEST_ID", "")
        if not _RECORDED_ID.fullmatch(request_id):
            return self.app(environ, start_response)
        started = time.time()
        opened = self.opened(environ)
        status = ["-"]

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        body = self.app(environ, start)
        return _Closed(body, lambda: self.record(request_id, started, time.time(), status[0], opened))


class _Closed:
    """A response iterable that calls ``done`` when the server closes it (it has written the last byte), before the
    application's own ``close``: what that does then (Django's ``request_finished``, a relayed answer's slot given
    back) runs after the client has its answer, and may first wait for a turn of the event loop."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body = body
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            self.done()
        finally:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()


def traced(app: WSGIApp) -> WSGIApp:
    """``app`` recording requests when ``REQUEST_TRACE_DIR`` is set (the directory must exist), else ``app``."""
    directory = os.environ.get(TRACE_DIR_ENV)
    return TracedApplication(app, directory) if directory else app
