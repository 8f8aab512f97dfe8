"""Writes a client can retry: one answer per ``Idempotency-Key`` and organization.

A client that timed out does not know whether its write committed. Retrying with the same key is safe:

- the first request to commit under a key stores its answer in the same transaction as its write
  (``IdempotencyRecord``), so the answer exists exactly when the write does;
- a later request with the key and the same fingerprint gets that answer back and writes nothing;
- a later request with the key and another fingerprint (another body, method or path) is refused
  (``IdempotencyKeyReused``, a 422), since answering it with the first request's result would be a lie;
- a request arriving while the first one is still running is refused at once (``IdempotencyKeyInProgress``,
  a 409 with ``Retry-After``) rather than queued behind it holding a database connection; its retry gets the
  first one's answer.

Only answers of writes that committed are kept: a request that failed (a 400, a 503) rolled back its record
with its write, so its retry runs again, as the client expects.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from emissions.models import IdempotencyRecord

# The header's value: what the IETF draft (httpapi-idempotency-key-header) and the common APIs accept, bounded by
# the column. Printable ASCII only, so the key is logged and compared as the client sent it.
KEY_MAX_LENGTH = 255


class IdempotencyKeyInvalid(ValueError):
    """The header is empty, too long, or not printable ASCII."""


class IdempotencyKeyReused(Exception):
    """The key answered another request (another body, method or path)."""


class IdempotencyKeyInProgress(Exception):
    """A request with this key is running now; its answer is not known yet."""


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer given under a key, to be sent again as it was."""

    status_code: int
    content_type: str
    body: bytes


def idempotency_key_check(key: str) -> str:
    """The key, or ``IdempotencyKeyInvalid`` saying what is wrong with it."""
    if not key:
        raise IdempotencyKeyInvalid("must not be empty")
    if len(key) > KEY_MAX_LENGTH:
        raise IdempotencyKeyInvalid(f"must be at most {KEY_MAX_LENGTH} characters; got {len(key)}")
    if not all(" " <= char <= "~" for char in key):
        raise IdempotencyKeyInvalid("must be printable ASCII characters only")
    return key


def request_fingerprint(*, method: str, path: str, data: Any) -> str:
    """SHA-256 of the method, the path and the parsed body, keys sorted: two bodies that parse to the same data
    (key order, spacing) are the same request; any other difference is another one."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method}\n{path}\n{body}".encode()).hexdigest()


def _lock_id(organization_id: int, key: str) -> int:
    """A signed 64-bit advisory lock id for the key (a collision only makes a request wait for a retry)."""
    digest = hashlib.sha256(f"idempotency\n{organization_id}\n{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _claim(organization_id: int, key: str) -> bool:
    """Whether this transaction may run the key's request: on PostgreSQL, a transaction-scoped advisory lock, taken
    without waiting, so concurrent requests with one key do not both run. Other databases serialize writers."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_lock_id(organization_id, key)])
        (acquired,) = cursor.fetchone()
    return bool(acquired)


def _stored(organization_id: int, key: str, fingerprint: str) -> StoredAnswer | None:
    """The answer stored under the key, if one is and has not expired; ``IdempotencyKeyReused`` on a mismatch."""
    record = IdempotencyRecord.objects.filter(organization_id=organization_id, key=key).first()
    if record is None:
        return None
    if record.created_at < timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL):
        record.delete()  # forgotten: the key starts afresh, as documented
        return None
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused
    return StoredAnswer(status_code=record.status_code, content_type=record.content_type, body=bytes(record.body))


def idempotent_write(
    *,
    organization_id: int,
    key: str,
    fingerprint: str,
    write: Callable[[], StoredAnswer | None],
) -> tuple[StoredAnswer | None, bool]:
    """Run ``write`` at most once per (organization, key): ``(answer, replayed)``.

    ``write`` runs inside this function's transaction and returns the answer to keep, or None when its outcome
    must not be kept (it failed: its transaction is then rolled back, record and all). An exception from it rolls
    everything back and propagates. A stored answer for the key with the same ``fingerprint`` is returned with
    ``replayed`` True, without calling ``write``.

    Raises ``IdempotencyKeyReused`` (another fingerprint) and ``IdempotencyKeyInProgress`` (running now).
    """
    with transaction.atomic():
        if not _claim(organization_id, key):
            raise IdempotencyKeyInProgress
        stored = _stored(organization_id, key, fingerprint)
        if stored is not None:
            return stored, True
        answer = write()
        if answer is None:
            transaction.set_rollback(True)
            return None, False
        try:
            # A savepoint: on a unique violation (another database, or a record committed between our read and
            # this insert) only the insert is undone before the whole transaction is.
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    organization_id=organization_id,
                    key=key,
                    fingerprint=fingerprint,
                    status_code=answer.status_code,
                    content_type=answer.content_type,
                    body=answer.body,
                )
        except IntegrityError:
            # Another request with the key committed first: leaving the block with this exception undoes this
            # one's write; the client's retry gets the committed answer.
            raise IdempotencyKeyInProgress from None
    return answer, False


def idempotency_records_purge(*, older_than: timedelta | None = None) -> int:
    """Delete records older than ``older_than`` (default ``IDEMPOTENCY_KEY_TTL``); the number deleted."""
    age = older_than if older_than is not None else timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - age).delete()
    return deleted
