"""The bulk pool: bulk requests run in a server of their own, at a lower CPU priority than everything else.

A gevent worker shares one CPU among its requests; ``perf.admission.cooperate()`` keeps a 500-line write from
holding it for seconds, but the write still takes its share of the CPU from the reads around it, and on a busy
machine every request waits longer. Bulk work (the views ``perf.admission.heavy`` declares: large activity
writes and batch calculations, exports) is therefore served by a second gunicorn, the *bulk pool*, which
``vcci/gunicorn.conf.py`` starts next to the workers with a higher nice value (``GUNICORN_BULK_NICE``, 5): the
kernel gives the CPU to the interactive workers first, and the bulk pool runs on what they leave. When the
machine is idle it runs at full speed; when it is busy, bulk requests slow down (and are refused first, by
slot) instead of the reads.

``BulkPoolForwarder`` wraps the WSGI application of the interactive workers, outside Django's middleware: a
request that the view's ``heavy`` declaration makes bulk work is sent, as received, over the bulk pool's Unix
socket (``BULK_POOL_SOCKET``), and its response is relayed back as it comes (an export streams). Django's
middleware and metrics run once per request, in whichever server serves it. Each worker forwards at most
``ADMISSION_HEAVY_SLOTS`` requests at once, fewer while they take longer than ``ADMISSION_HEAVY_TARGET``
(``perf.admission.HeavyLane``, timed from the request sent to the relayed answer's end); a further one waits for
a slot at most ``ADMISSION_HEAVY_WAIT`` seconds, then the worker's own Django answers 503 with ``Retry-After``
(``REFUSE``), counted like every refusal. The bulk pool's own lane adapts the same way: a refusal of its own is
relayed as it comes and counted in the worker's ``Retry-After`` as a refusal.

The contract is unchanged for clients: the same URL, status, headers and body as when the worker serves it.
When the bulk pool cannot be reached (not started yet, restarting), the worker serves the request itself, as
without a bulk pool, and says so in its log and in ``vcci_bulk_pool_requests_total{outcome="local"}``. A bulk
pool that fails after the request was sent is answered 502 (the request may or may not have run).

In the bulk pool itself (``VCCI_SERVER_ROLE=bulk``), ``BulkPoolPeer`` gives the application the client address
the worker saw: its peer is the worker, on a Unix socket (``REMOTE_ADDR`` ''), which appends that address to
``X-Forwarded-For``. ``serving_application`` picks the wrapper of the server's role (``vcci/wsgi.py``).
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import Resolver404, resolve

from perf.admission import HEAVY_BUSY, REFUSE, UNTIMED_HEADER, gate, is_heavy

logger = logging.getLogger("vcci.bulk_pool")

# Connection-level headers (RFC 9110 section 7.6.1): they describe one hop, never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
# Set by the forwarder from what the worker knows; a client's own values would be believed by the bulk pool,
# which trusts its Unix socket's peer.
_REPLACED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-ssl", "x-forwarded-protocol"})
# Not relayed downstream: the hop-by-hop ones, and those the worker's gunicorn writes itself (a second copy would be
# a duplicate header).
_NOT_RELAYED = HOP_BY_HOP | {"date", "server", UNTIMED_HEADER.lower()}
CHUNK = 64 * 1024
_BAD_GATEWAY = json.dumps({"detail": "The bulk pool failed while serving this request; it may or may not have run."})

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket (the bulk pool listens on one; gevent patches ``socket``)."""

    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


@functools.lru_cache(maxsize=2048)
def _view_class(path_info: str) -> type | None:
    """The view class ``path_info`` resolves to (a DRF view set's class), None when nothing matches.

    Cached per path: resolving walks the URL patterns, and the same few paths come again and again (detail
    paths carry ids, hence the bound).
    """
    try:
        func = resolve(path_info).func
    except Resolver404:
        return None
    view_class: type | None = getattr(func, "view_class", None) or getattr(func, "cls", None)
    return view_class


@receiver(setting_changed)
def _forget_views(*, setting: str, **kwargs: Any) -> None:
    """Another URLconf (tests override it) resolves paths to other views."""
    if setting == "ROOT_URLCONF":
        _view_class.cache_clear()


def is_bulk(environ: dict[str, Any]) -> bool:
    """Whether the request in ``environ`` is bulk work (``perf.admission.heavy`` on its view)."""
    method = str(environ.get("REQUEST_METHOD", ""))
    return is_heavy(_view_class(get_path_info(environ)), method, environ)


def upstream_headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The request's end-to-end headers as received, plus ``X-Forwarded-For`` / ``-Proto`` from this hop."""
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").lower()
            if name not in HOP_BY_HOP and name not in _REPLACED:
                headers.append((name, value))
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers.append((name, environ[key]))
    # The worker's peer, always the last entry (even when '': a worker on a Unix socket), which BulkPoolPeer takes
    # back out.
    forwarded_for, peer = environ.get("HTTP_X_FORWARDED_FOR", ""), environ.get("REMOTE_ADDR", "")
    headers.append(("x-forwarded-for", f"{forwarded_for}, {peer}" if forwarded_for else peer))
    headers.append(("x-forwarded-proto", str(environ.get("wsgi.url_scheme", "http"))))
    headers.append(("connection", "close"))
    return headers


def downstream_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The bulk pool's response headers without the hop-by-hop ones (the worker's gunicorn frames the body) and
    those the worker's gunicorn sets itself."""
    return [(name, value) for name, value in headers if name.lower() not in _NOT_RELAYED]


def _target(environ: Mapping[str, Any]) -> str:
    """The request target as the client sent it (gunicorn's ``RAW_URI``), else rebuilt from the environ."""
    raw = environ.get("RAW_URI")
    if raw:
        return str(raw)
    path = quote(str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", "")), safe="/;=,:@!$&'()*+~")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _untimed(release: Callable[..., None]) -> Callable[..., None]:
    """``release`` that never times: whatever its caller says, the slot is only freed."""

    def free(measured: bool = True) -> None:
        release(measured=False)

    return free


class _Relay:
    """The bulk pool's response body, read as the server writes it on; ``close()`` frees the slot, once, timed only
    when the whole body was relayed (a client gone mid-export, or a pool failing mid-body, is no measure of it)."""

    def __init__(
        self, response: http.client.HTTPResponse, connection: UnixHTTPConnection, release: Callable[..., None]
    ) -> None:
        self.response, self.connection, self._release = response, connection, release
        self._closed = self._complete = False

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.response.read1(CHUNK):
            yield chunk
        self._complete = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.response.close()
            self.connection.close()
        finally:
            self._release(measured=self._complete)


class BulkPoolForwarder:
    """WSGI middleware: bulk requests go to the bulk pool over ``socket_path``; everything else to ``app``.

    ``socket_path`` defaults to the ``BULK_POOL_SOCKET`` setting; empty, every request goes to ``app`` (tests,
    ``runserver``, a server started without a bulk pool). Precondition: Django is set up (``app`` is Django's
    WSGI handler), since bulk requests are recognised by resolving their URL.
    """

    def __init__(self, app: WSGIApp, *, socket_path: str | None = None) -> None:
        self.app = app
        self.socket_path = settings.BULK_POOL_SOCKET if socket_path is None else socket_path
        self._warned = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not self.socket_path or not is_bulk(environ):
            return self.app(environ, start_response)
        slots = gate().heavy_slots
        admitted = slots.acquire(timeout=settings.ADMISSION_HEAVY_WAIT)
        if admitted is None:
            environ[REFUSE] = HEAVY_BUSY
            return self.app(environ, start_response)
        released = threading.Event()
        # Set once the request (its body included) is sent: a slow upload is the client's time, not the pool's.
        sent: list[float] = []

        def release(measured: bool = True) -> None:
            if not released.is_set():
                released.set()
                # The bulk pool's time, from the request sent to the relayed answer's end, adjusts the lane's limit;
                # an outcome that is no bulk work done (served here, failed, refused by the pool) frees the slot only.
                slots.release(sent[0] if measured and sent else None, admitted=admitted)

        try:
            return self._forward(environ, start_response, release, lambda: sent.append(slots.now()))
        except BaseException:
            release(measured=False)
            raise

    def _forward(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        release: Callable[..., None],
        on_sent: Callable[[], None],
    ) -> Iterable[bytes]:
        from perf.metrics import BULK_POOL_REQUESTS

        connection = UnixHTTPConnection(self.socket_path, timeout=settings.BULK_POOL_TIMEOUT)
        try:
            connection.connect()
        except OSError as exc:
            # Nothing was sent: the worker can serve the request itself, as it would without a bulk pool.
            connection.close()
            release(measured=False)
            BULK_POOL_REQUESTS.labels(outcome="local").inc()
            if not self._warned.is_set():
                self._warned.set()
                logger.warning(
                    "The bulk pool at %s is unreachable (%s); bulk requests are served here", self.socket_path, exc
                )
            return self.app(environ, start_response)
        self._warned.clear()
        try:
            response = self._exchange(connection, environ, on_sent)
        except (OSError, http.client.HTTPException):
            connection.close()
            release(measured=False)
            BULK_POOL_REQUESTS.labels(outcome="failed").inc()
            logger.exception(
                "The bulk pool failed while serving %s %s", environ.get("REQUEST_METHOD"), _target(environ)
            )
            body = _BAD_GATEWAY.encode()
            start_response(
                "502 Bad Gateway",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"),
                ],
            )
            return [body]
        BULK_POOL_REQUESTS.labels(outcome="forwarded").inc()
        try:
            if response.status == 503 and response.getheader("Retry-After") is not None:
                # The bulk pool refused it (its own lane or database pool full, the database unreachable): counted
                # there, in the metrics this worker shares; here it weighs in this worker's Retry-After as a refusal,
                # and no bulk work was timed.
                gate().backoff.refused()
                release(measured=False)
            else:
                # Served by this worker's hop, like a request its Django answers: the Retry-After of its refusals
                # weighs both.
                gate().backoff.served()
                if response.getheader(UNTIMED_HEADER) is not None:
                    # No bulk work done there (a kept export, a 304: perf.admission.untimed): freed untimed here too.
                    release = _untimed(release)
            start_response(f"{response.status} {response.reason}", downstream_headers(response.getheaders()))
        except BaseException:
            response.close()
            connection.close()
            raise
        return _Relay(response, connection, release)

    @staticmethod
    def _exchange(
        connection: UnixHTTPConnection, environ: Mapping[str, Any], on_sent: Callable[[], None] | None = None
    ) -> http.client.HTTPResponse:
        """Send the request (its body streamed from ``wsgi.input``), call ``on_sent``, and read the response's head.

        The bulk pool may answer before it has read the body, and close: its Django refuses a request before reading
        it (its lane still full after the wait: ``perf.admission``). The body's rest then cannot be sent (a broken
        pipe): the answer already written is read and relayed, as RFC 9112 (9.5) asks of a client; only without one
        does the error stand (the 502 of ``_forward``)."""
        connection.putrequest(
            str(environ["REQUEST_METHOD"]), _target(environ), skip_host=True, skip_accept_encoding=True
        )
        headers = upstream_headers(environ)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ.get("wsgi.input")
        chunked = not environ.get("CONTENT_LENGTH") and "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", ""))
        buffered = b""
        if chunked and body is not None:
            # A chunked upload: gunicorn has decoded it; send it with a length (the bulk pool sees one body).
            buffered = body.read()
            headers.append(("content-length", str(len(buffered))))
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        try:
            if buffered:
                connection.send(buffered)
            elif length and body is not None:
                remaining = length
                while remaining > 0:
                    block = body.read(min(CHUNK, remaining))
                    if not block:
                        break
                    connection.send(block)
                    remaining -= len(block)
        except (BrokenPipeError, ConnectionResetError) as unsent:
            try:
                return connection.getresponse()
            except (OSError, http.client.HTTPException):
                raise unsent from None
        if on_sent is not None:
            on_sent()
        return connection.getresponse()


class BulkPoolPeer:
    """WSGI middleware of the bulk pool (``VCCI_SERVER_ROLE=bulk``): the request's ``REMOTE_ADDR`` and
    ``X-Forwarded-For`` as the worker that forwarded it received them.

    The bulk pool's peer is a worker on its Unix socket (gunicorn sets ``REMOTE_ADDR`` to '' for one), which
    appended its own peer's address to ``X-Forwarded-For`` (``upstream_headers``). Taking that entry back into
    ``REMOTE_ADDR`` gives whatever reads the client address (the throttles, per address; the admin login
    lockout, ``perf.admin.login_client_address``; the access log) the client's, not '' for every client, and
    ``NUM_PROXIES`` counts the same proxies in either server. The entry is believed: the socket's directory is
    private (0700) and its only peers are the workers, which always append it.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        forwarded_for, _, peer = str(environ.get("HTTP_X_FORWARDED_FOR", "")).rpartition(",")
        environ["REMOTE_ADDR"] = peer.strip()
        if forwarded_for.strip():
            environ["HTTP_X_FORWARDED_FOR"] = forwarded_for.strip()
        else:
            environ.pop("HTTP_X_FORWARDED_FOR", None)
        return self.app(environ, start_response)


def serving_application(app: WSGIApp) -> WSGIApp:
    """``app`` (Django's WSGI handler) wrapped for this server's role (``VCCI_SERVER_ROLE``, set by
    ``vcci/gunicorn.conf.py``): ``BulkPoolPeer`` in the bulk pool, else ``BulkPoolForwarder``."""
    from perf.metrics import ROLE_ENV

    if os.environ.get(ROLE_ENV) == "bulk":
        return BulkPoolPeer(app)
    return BulkPoolForwarder(app)
