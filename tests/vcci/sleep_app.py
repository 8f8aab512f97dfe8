"""Test-only WSGI application: VCCI plus ``/_sleep``, a request that holds a PostgreSQL query for ``?s=`` seconds.

Served by real gunicorn in tests/vcci/test_gunicorn_serving.py to prove that two slow queries on ONE gevent
worker run concurrently. The query reports the server's own clock before and after the sleep, so the test
compares intervals measured by PostgreSQL rather than client-side wall time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from vcci.wsgi import application as vcci_application

SLEEP_PATH = "/_sleep"
SLEEP_SQL = "SELECT clock_timestamp(), pg_sleep(%s), clock_timestamp()"


def sleep_response(seconds: float) -> bytes:
    """Run ``SLEEP_SQL`` through Django's connection (this greenlet's, from the pool) and describe it as JSON."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute(SLEEP_SQL, [seconds])
            started, _, ended = cursor.fetchone()
    finally:
        connection.close()  # back to the pool, as Django does when a request ends
    return json.dumps({"start": started.timestamp(), "end": ended.timestamp(), "pid": os.getpid()}).encode()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != SLEEP_PATH:
        return vcci_application(environ, start_response)
    seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.5"])[0])
    body = sleep_response(seconds)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
