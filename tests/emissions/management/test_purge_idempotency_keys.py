"""manage.py purge_idempotency_keys."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.utils import timezone

from emissions.models import IdempotencyRecord
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


def record(org, key: str, age: timedelta) -> IdempotencyRecord:
    return IdempotencyRecord.objects.create(
        organization=org,
        key=key,
        fingerprint="f",
        status_code=201,
        content_type="application/json",
        body=b"{}",
        created_at=timezone.now() - age,
    )


def test_deletes_what_the_ttl_has_expired(org, settings):
    record(org, "expired", timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL + 60))
    record(org, "live", timedelta(seconds=60))
    out = StringIO()
    call_command("purge_idempotency_keys", stdout=out)
    assert "Deleted 1 expired idempotency record(s)." in out.getvalue()
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["live"]


def test_older_than_overrides_the_ttl(org):
    record(org, "a-minute-old", timedelta(seconds=60))
    call_command("purge_idempotency_keys", "--older-than", "30", stdout=StringIO())
    assert not IdempotencyRecord.objects.exists()
