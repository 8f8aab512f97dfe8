"""Health endpoints for load balancers and orchestrators. No authentication, never cached.

``/healthz`` (liveness): the process answers HTTP. It touches neither the database nor the cache,
so a slow PostgreSQL or Redis never gets a healthy worker restarted; it still passes through the
normal middleware, which makes it the floor of what any request costs (the performance report
uses it as the "bare Django view" ceiling). Neither endpoint waits for the API's admission control: an
overloaded worker is still alive and still able to serve. ``/healthz`` takes no place at all
(``perf.admission.admission_exempt``); ``/readyz``, which uses the database pool, takes a turn in the operations
lane (``perf.admission.operations_lane``), bounded apart from the API's.

``/readyz`` (readiness): PostgreSQL and Redis answer, each within a short timeout, so an
instance that cannot serve is taken out of rotation quickly; the body names what failed:
``{"status": "unready", "checks": {"database": "ok", "redis": "unreachable: ConnectionError: ..."}}``
with status 503. The error text is the exception's own message (shortened): it may name the
host and port of the failing service, never a password.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connections, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from perf.admission import admission_exempt, operations_lane

# What readiness asks the database; a test swaps in a slow statement to prove the timeout.
DATABASE_CHECK_SQL = "SELECT 1"
OK = "ok"
NOT_CONFIGURED = "not configured"
FAILED_PREFIX = "unreachable: "
MAX_ERROR_LENGTH = 200


@admission_exempt
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: 200 ``{"status": "ok"}``, with no database or cache access."""
    return JsonResponse({"status": "ok"})


def check_database(alias: str = "default", timeout: float | None = None) -> str:
    """``SELECT 1`` on ``alias`` within ``timeout`` seconds (``settings.READYZ_TIMEOUT``); raises on failure.

    With the connection pool the connection is taken straight from the pool with that short wait:
    Django's own checkout would wait ``DB_POOL_TIMEOUT`` (3 s) for a pool that cannot connect. The
    statement runs under a transaction-local ``statement_timeout`` of the same length.
    """
    timeout = settings.READYZ_TIMEOUT if timeout is None else timeout
    timeout_ms = f"{max(1, int(timeout * 1000))}ms"
    connection = connections[alias]
    pool = getattr(connection, "pool", None)
    if pool is not None:
        pool.open()  # no-op once open; Django opens it lazily on the first query otherwise
        with pool.connection(timeout=timeout) as conn, conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [timeout_ms])
            conn.execute(DATABASE_CHECK_SQL)
        return OK
    if connection.vendor == "postgresql":
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [timeout_ms])
            cursor.execute(DATABASE_CHECK_SQL)
        return OK
    with connection.cursor() as cursor:
        cursor.execute(DATABASE_CHECK_SQL)
    return OK


def check_redis(alias: str = "default") -> str:
    """``PING`` through django-redis, bounded by its socket timeouts (``REDIS_*_TIMEOUT``); raises on failure.

    ``"not configured"`` without Redis (the embedded local-memory cache), which is not a failure.
    """
    if not settings.CACHES.get(alias, {}).get("BACKEND", "").startswith("django_redis"):
        return NOT_CONFIGURED
    from django_redis import get_redis_connection

    get_redis_connection(alias).ping()
    return OK


def _run(check: Callable[[], str]) -> str:
    try:
        return check()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".strip()
        return FAILED_PREFIX + " ".join(message.split())[:MAX_ERROR_LENGTH]


@operations_lane
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when PostgreSQL and Redis answer, else 503; ``checks`` says which one failed."""
    checks = {"database": _run(check_database), "redis": _run(check_redis)}
    ready = not any(result.startswith(FAILED_PREFIX) for result in checks.values())
    return JsonResponse({"status": "ready" if ready else "unready", "checks": checks}, status=200 if ready else 503)
