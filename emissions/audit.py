"""Who, which request and which job: the context the audit triggers write into every ``AuditEvent``.

The audit log itself is written by PostgreSQL: statement-level triggers (migration
``0009_audit_trail``) append one row per changed supplier, activity, emission or supplier factor
to ``emissions_auditevent`` for every INSERT, UPDATE, DELETE and COPY, with the rows' values read
from the statement's transition tables. What the database cannot know is who asked. The
application tells it per transaction, in three custom settings the trigger reads with
``current_setting(..., true)``:

    vcci.audit_actor    the user id (API token's user, admin user, a job's requester)
    vcci.audit_request  the request id (``X-Request-ID``, see ``AuditContextMiddleware``)
    vcci.audit_job      the job id (a background job runner wraps its work in ``audit_context``)

They are set with ``set_config(name, value, true)``: transaction-local, so a pooled connection (or a
PgBouncer server connection in transaction mode) never carries one request's user into another's
transaction.

**When the settings are sent.** ``audit_wrapper`` is an execute wrapper installed on every
connection (``install``). It looks at each statement's first words: only a write to an audited
table (``INSERT INTO``, ``UPDATE``, ``DELETE FROM`` one of ``AUDITED_TABLES``), made while an audit
context is active, and not yet preceded in the same transaction by the same context, gets one
``SELECT set_config(...)`` before it. So reads cost nothing, a write transaction costs one statement
however many rows and statements it writes, and every write path is covered (services, the admin,
ORM calls in a shell or a job, cascades) without each of them having to remember a call. The
alternative, an explicit call at the top of each service, would miss the admin's own saves and
anything written outside the services. COPY does not pass through Django's execute wrappers, so
``emissions.services.bulk`` calls ``apply`` itself before its COPY statements.

"Already sent in this transaction" is a marker callback registered with ``connection.on_commit``:
Django drops a transaction's callbacks at its commit or rollback, and those registered inside a
savepoint when that savepoint is rolled back, exactly when PostgreSQL forgets a ``set_config(...,
true)`` value. A write outside any transaction (autocommit) with a context active is run inside a
short transaction of its own, so that the settings and the write share one.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponseBase
from django.utils.functional import SimpleLazyObject, empty

from emissions.models import AuditEvent, Emission, EmissionFactor

# The tables whose rows the triggers record (the migration installs a trigger set on each).
AUDITED_TABLES = tuple(AuditEvent.Table.values)
SETTINGS = ("vcci.audit_actor", "vcci.audit_request", "vcci.audit_job")
SET_CONFIG_SQL = "SELECT set_config(%s, %s, true), set_config(%s, %s, true), set_config(%s, %s, true)"

# How Django (and emissions.services.bulk's raw DELETE) spell a write to an audited table: the keyword, then the
# quoted table name. Anything else (reads, SAVEPOINT, writes to other tables) passes through untouched.
_AUDITED_WRITE = re.compile(
    r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"(?:' + "|".join(AUDITED_TABLES) + r')"', re.IGNORECASE
)
# A client's X-Request-ID is kept when it is a plain token of sensible length (a UUID, a trace id); anything else
# (empty, too long, spaces or control characters that would garble a log line) is replaced by a generated one.
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_MAX_LENGTH = 128
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,%d}" % REQUEST_ID_MAX_LENGTH)  # noqa: UP031


@dataclass(frozen=True)
class AuditContext:
    """Who is writing. ``request``, when set, gives the actor lazily: DRF authenticates inside the view, after
    the middleware ran, and sets the authenticated user on the underlying ``HttpRequest``; it is read at the
    first audited write."""

    actor_id: int | None = None
    request_id: str = ""
    job_id: int | None = None
    request: HttpRequest | None = None

    def values(self) -> tuple[str, str, str]:
        """The three settings' values (``""`` for none), in ``SETTINGS`` order."""
        actor_id = self.actor_id if self.actor_id is not None else _request_user_id(self.request)
        return (
            "" if actor_id is None else str(actor_id),
            self.request_id,
            "" if self.job_id is None else str(self.job_id),
        )


def _request_user_id(request: HttpRequest | None) -> int | None:
    """The authenticated user's id, without a query: a user not loaded yet (a lazy one nobody has read, which
    no write path that needs a user leaves so) counts as none rather than costing a session lookup here."""
    if request is None:
        return None
    user = getattr(request, "user", None)
    if user is None or (isinstance(user, SimpleLazyObject) and user._wrapped is empty):
        return None
    return user.pk if user.is_authenticated else None


_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar("vcci_audit_context", default=None)


def current() -> AuditContext | None:
    """The audit context active in this thread or greenlet, if any."""
    return _current.get()


@contextmanager
def audit_context(
    *, actor_id: int | None = None, request_id: str = "", job_id: int | None = None
) -> Iterator[AuditContext]:
    """Record the writes made inside the block as done by ``actor_id``, for ``request_id``, by job ``job_id``.

    For code that runs outside a request: a background job (``job_id``, and the user who started it), a
    management command acting for someone. Blocks nest; the innermost wins. It sets what the next audited
    write sends; a transaction already open keeps what it sent until it writes under another context.
    """
    context = AuditContext(actor_id=actor_id, request_id=request_id, job_id=job_id)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


class _Sent:
    """The marker callback of one ``set_config`` (see the module docstring): what was sent; a no-op at commit."""

    __slots__ = ("values",)

    def __init__(self, values: tuple[str, str, str]) -> None:
        self.values = values

    def __call__(self) -> None:
        pass


_NOTHING_SENT = ("", "", "")


def _sent_in_transaction(connection: Any) -> tuple[str, str, str]:
    """What this transaction's settings hold: the last marker still registered, else nothing."""
    for _sids, func, _robust in reversed(connection.run_on_commit):
        if isinstance(func, _Sent):
            return func.values
    return _NOTHING_SENT


def apply(connection: Any, cursor: Any = None) -> None:
    """Send the active context's settings on ``connection`` unless its transaction already holds them.

    Precondition: inside a transaction (``connection.in_atomic_block``): outside one the settings would end
    with the statement. ``cursor`` (a Django cursor) is used when given, else a new one; either way the
    statement is counted as a query like any other.
    """
    context = _current.get()
    values = _NOTHING_SENT if context is None else context.values()
    if values == _sent_in_transaction(connection):
        return
    params = [part for pair in zip(SETTINGS, values, strict=True) for part in pair]
    if cursor is not None:
        cursor.execute(SET_CONFIG_SQL, params)
    else:
        with connection.cursor() as own:
            own.execute(SET_CONFIG_SQL, params)
    connection.on_commit(_Sent(values))


def audit_wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """``connection.execute_wrapper`` callable: the context's settings before a transaction's first audited write."""
    if _current.get() is None or not _AUDITED_WRITE.match(str(sql)):
        return execute(sql, params, many, context)
    connection = context["connection"]
    if connection.in_atomic_block:
        apply(connection, context["cursor"])
        return execute(sql, params, many, context)
    with transaction.atomic(using=connection.alias):
        apply(connection, context["cursor"])
        return execute(sql, params, many, context)


def install(sender: Any = None, connection: Any = None, **kwargs: Any) -> None:
    """``connection_created`` receiver: put ``audit_wrapper`` on ``connection`` once, at the front of its
    wrappers (``connection.execute_wrapper()`` blocks pop the list's last item; see ``perf.db``)."""
    if connection is None or connection.vendor != "postgresql":
        return  # no triggers elsewhere (the SQLite default), so no context to send
    if audit_wrapper not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, audit_wrapper)


def request_id_for(request: HttpRequest) -> str:
    """The client's ``X-Request-ID`` when it is valid (see ``_VALID_REQUEST_ID``), else a new UUID (hex)."""
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    return sent if _VALID_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex


class AuditContextMiddleware:
    """Gives every request an id and makes it, and the request's user, the audit context of its writes.

    The id is the client's ``X-Request-ID`` when valid, else generated; it is on the request as
    ``request.request_id`` and returned in the response's ``X-Request-ID``, so a client or a log line can be
    matched with the audit events its request wrote. The user is read at the first audited write (DRF
    authenticates in the view, after this middleware). Costs no query.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_for(request)
        request.request_id = request_id  # type: ignore[attr-defined]
        token = _current.set(AuditContext(request_id=request_id, request=request))
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


@dataclass(frozen=True)
class EmissionHistory:
    """An emission's audit events, oldest first, with the factors their values name (by id; a factor since
    deleted is absent) loaded with their datasets."""

    events: list[AuditEvent]
    factors: dict[int, EmissionFactor]


def emission_history(*, organization_id: int, emission_id: int) -> EmissionHistory | None:
    """The versions of emission ``emission_id`` of the organization, deleted emissions included; None when the
    organization has no such emission, live or logged. Three queries at most, whatever the number of versions:
    the events (actor names joined), the factors (datasets joined), and, only when there is no event, whether
    the emission exists (written before the audit trail was installed: no version then)."""
    events = list(AuditEvent.objects.for_org(organization_id).history(Emission, emission_id).with_actor())
    if not events:
        if not Emission.objects.for_org(organization_id).filter(pk=emission_id).exists():
            return None
        return EmissionHistory(events=[], factors={})
    factor_ids = {
        values["factor_id"]
        for event in events
        for values in (event.row, event.changed or {})
        if values.get("factor_id") is not None
    }
    factors = EmissionFactor.objects.filter(pk__in=factor_ids).with_related().in_bulk()
    return EmissionHistory(events=events, factors=factors)
