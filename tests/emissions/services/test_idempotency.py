"""emissions.services.idempotency: one answer per (organization, key), stored with the write it answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from emissions.models import IdempotencyRecord, Supplier
from emissions.services.idempotency import (
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    StoredAnswer,
    idempotency_records_purge,
    idempotent_write,
    request_fingerprint,
)
from tests.factories import SupplierFactory

pytestmark = pytest.mark.django_db

ANSWER = StoredAnswer(status_code=201, content_type="application/json", body=b'{"id":1}')


def test_the_answer_is_stored_with_the_write_and_replayed(org):
    def write() -> StoredAnswer:
        SupplierFactory.create(organization=org)
        return ANSWER

    assert idempotent_write(organization_id=org.pk, key="a", fingerprint="f", write=write) == (ANSWER, False)
    assert idempotent_write(organization_id=org.pk, key="a", fingerprint="f", write=write) == (ANSWER, True)
    assert Supplier.objects.count() == 1


def test_a_write_that_fails_keeps_neither_its_rows_nor_a_record(org):
    def write() -> None:
        SupplierFactory.create(organization=org)
        return None

    assert idempotent_write(organization_id=org.pk, key="b", fingerprint="f", write=write) == (None, False)
    assert not Supplier.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_an_exception_rolls_back_the_write_and_propagates(org):
    def write() -> StoredAnswer:
        SupplierFactory.create(organization=org)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        idempotent_write(organization_id=org.pk, key="c", fingerprint="f", write=write)
    assert not Supplier.objects.exists()
    assert not IdempotencyRecord.objects.exists()


def test_another_fingerprint_is_refused_without_writing(org):
    idempotent_write(organization_id=org.pk, key="d", fingerprint="f1", write=lambda: ANSWER)
    with pytest.raises(IdempotencyKeyReused):
        idempotent_write(organization_id=org.pk, key="d", fingerprint="f2", write=pytest.fail)


def test_a_record_committed_by_another_request_meanwhile_undoes_this_write(org):
    # The other request committed between this one's read and its insert (possible where there is no advisory lock).
    def write() -> StoredAnswer:
        SupplierFactory.create(organization=org)
        IdempotencyRecord.objects.create(
            organization=org, key="e", fingerprint="f", status_code=201, content_type="application/json", body=b"{}"
        )
        return ANSWER

    with pytest.raises(IdempotencyKeyInProgress):
        idempotent_write(organization_id=org.pk, key="e", fingerprint="f", write=write)
    assert not Supplier.objects.exists()


def test_the_fingerprint_covers_method_path_and_data_but_not_key_order():
    base = request_fingerprint(method="POST", path="/a/", data={"x": 1, "y": [1, 2]})
    assert base == request_fingerprint(method="POST", path="/a/", data={"y": [1, 2], "x": 1})
    assert base != request_fingerprint(method="POST", path="/b/", data={"x": 1, "y": [1, 2]})
    assert base != request_fingerprint(method="PUT", path="/a/", data={"x": 1, "y": [1, 2]})
    assert base != request_fingerprint(method="POST", path="/a/", data={"x": 1, "y": [2, 1]})


def test_purge_deletes_only_expired_records(org, settings):
    idempotent_write(organization_id=org.pk, key="old", fingerprint="f", write=lambda: ANSWER)
    idempotent_write(organization_id=org.pk, key="new", fingerprint="f", write=lambda: ANSWER)
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL + 60)
    )
    assert idempotency_records_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert idempotency_records_purge(older_than=timedelta(0)) == 1
