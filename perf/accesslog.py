"""gunicorn's access log at the cost of what it prints (``logger_class`` in ``vcci/gunicorn.conf.py``).

gunicorn's ``Logger.atoms`` builds every atom its format language knows for every request before
the format picks the few it names: the date (``strftime``), one entry per request header, response
header and WSGI environ key (dozens on an API request), each then copied and escaped by
``SafeAtoms``. Our format names seven atoms. ``AccessLogger`` builds only the atoms the configured
``access_log_format`` names, with gunicorn's own definitions (a test compares every atom with
gunicorn's), so the log lines are the same. Its cost also no longer grows with the request's and
response's headers, of which an authenticated, content-negotiated API call has more than a bare one.

This module imports neither Django nor psycopg: the master imports it with the configuration.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any

from gunicorn.glogging import Logger

# The atoms of gunicorn's access-log format language (gunicorn.glogging.Logger.atoms), by name: each a function
# of (logger, response, request, environ, request time). Kept to its definitions exactly.
Atom = Callable[[Logger, Any, Any, Any, Any], Any]


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any) -> Any:
    return getattr(resp, "sent", None)


ATOMS: dict[str, Atom] = {
    "h": lambda log, resp, req, environ, rt: environ.get("REMOTE_ADDR", "-"),
    "l": lambda log, resp, req, environ, rt: "-",
    "u": lambda log, resp, req, environ, rt: log._get_user(environ) or "-",
    "t": lambda log, resp, req, environ, rt: log.now(),
    "r": lambda log, resp, req, environ, rt: (
        f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
    ),
    "s": lambda log, resp, req, environ, rt: _status(resp),
    "m": lambda log, resp, req, environ, rt: environ.get("REQUEST_METHOD"),
    "U": lambda log, resp, req, environ, rt: environ.get("PATH_INFO"),
    "q": lambda log, resp, req, environ, rt: environ.get("QUERY_STRING"),
    "H": lambda log, resp, req, environ, rt: environ.get("SERVER_PROTOCOL"),
    "b": lambda log, resp, req, environ, rt: (_sent(resp) is not None and str(resp.sent)) or "-",
    "B": lambda log, resp, req, environ, rt: _sent(resp),
    "f": lambda log, resp, req, environ, rt: environ.get("HTTP_REFERER", "-"),
    "a": lambda log, resp, req, environ, rt: environ.get("HTTP_USER_AGENT", "-"),
    "T": lambda log, resp, req, environ, rt: rt.seconds,
    "D": lambda log, resp, req, environ, rt: rt.seconds * 1_000_000 + rt.microseconds,
    "M": lambda log, resp, req, environ, rt: rt.seconds * 1000 + int(rt.microseconds / 1000),
    "L": lambda log, resp, req, environ, rt: "%d.%06d" % (rt.seconds, rt.microseconds),  # noqa: UP031
    "p": lambda log, resp, req, environ, rt: f"<{os.getpid()}>",
}
# %(name)s and the like, as logging's %-style formatting reads them from the atoms mapping.
_KEY = re.compile(r"%\(([^)]*)\)")
# {name}i: a request header, {name}o: a response header, {name}e: an environ variable.
_BRACED = re.compile(r"\{(.*)\}([ioe])", re.IGNORECASE)


@functools.lru_cache(maxsize=8)
def format_keys(access_log_format: str) -> tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """The atoms ``access_log_format`` names: plain ones, and ``(key, name, kind)`` for ``{name}i/o/e``.

    Keys are as ``SafeAtoms`` looks them up: braced ones lowercased (it matches them case-insensitively).
    A name that is no atom is left out; ``SafeAtoms`` prints "-" for it, as gunicorn does.
    """
    plain, braced = [], []
    for key in dict.fromkeys(_KEY.findall(access_log_format)):
        match = _BRACED.fullmatch(key)
        if match is not None:
            braced.append((key.lower(), match.group(1).lower(), match.group(2).lower()))
        elif key in ATOMS:
            plain.append(key)
    return tuple(plain), tuple(braced)


def _last(pairs: Any, name: str) -> Any:
    """The value of the last pair named ``name`` (case-insensitive), as gunicorn's dict of them keeps; else None."""
    found = None
    for key, value in pairs.items() if hasattr(pairs, "items") else pairs:
        if key.lower() == name:
            found = value
    return found


class AccessLogger(Logger):
    """gunicorn's ``Logger``, building only the access-log atoms its format names (see the module docstring)."""

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        plain, braced = format_keys(self.cfg.access_log_format)
        atoms = {key: ATOMS[key](self, resp, req, environ, request_time) for key in plain}
        for key, name, kind in braced:
            if kind == "i":
                value = _last(getattr(req, "headers", req), name)
            elif kind == "o":
                value = _last(resp.headers, name)
            else:
                value = _last(environ, name)
            if value is not None:
                atoms[key] = value
        return atoms
