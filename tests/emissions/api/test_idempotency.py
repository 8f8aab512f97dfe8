"""The Idempotency-Key header on POST /activities/ and /calculate/batch/: a retried write is answered, not repeated."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from emissions.models import ActivityRecord, Emission, IdempotencyRecord
from emissions.services.idempotency import _lock_id
from tests.emissions.api.payloads import activity_input, electricity_input

pytestmark = pytest.mark.django_db

ACTIVITIES = reverse("activity-list")
BATCH = reverse("calculate-batch")


def post(client: Any, url: str, body: Any, key: str | None = None, **headers: Any) -> Any:
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def test_a_retry_with_the_same_key_returns_the_first_answer_and_writes_nothing(api, electricity_factor):
    body = [activity_input(external_ref="INV-1"), activity_input(external_ref="INV-2", amount="2")]
    first = post(api, ACTIVITIES, body, key="erp-batch-0001")
    assert first.status_code == 201, first.content
    assert "Idempotent-Replayed" not in first
    # The client timed out and never read the first answer; it retries.
    retry = post(api, ACTIVITIES, body, key="erp-batch-0001")
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert retry["Content-Type"] == first["Content-Type"] == "application/json"
    assert ActivityRecord.objects.count() == 2
    assert Emission.objects.count() == 2
    assert [item["external_ref"] for item in retry.json()] == ["INV-1", "INV-2"]


def test_without_a_key_every_post_writes(api, electricity_factor):
    assert post(api, ACTIVITIES, activity_input()).status_code == 201
    assert post(api, ACTIVITIES, activity_input()).status_code == 201
    assert ActivityRecord.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


def test_the_same_data_in_another_key_order_or_spacing_is_the_same_request(api, electricity_factor):
    body = activity_input(external_ref="INV-3")
    first = api.post(ACTIVITIES, json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    retry = api.post(ACTIVITIES, reordered, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert ActivityRecord.objects.count() == 1


@pytest.mark.parametrize(
    ("second_url", "second_body"),
    [
        pytest.param(ACTIVITIES, activity_input(amount="5"), id="another-body"),
        pytest.param(BATCH, {"items": [electricity_input()]}, id="another-endpoint"),
    ],
)
def test_a_key_reused_for_another_request_is_a_422_and_writes_nothing(api, electricity_factor, second_url, second_body):
    assert post(api, ACTIVITIES, activity_input(), key="k-2").status_code == 201
    reused = post(api, second_url, second_body, key="k-2")
    assert reused.status_code == 422
    assert "another request" in reused.json()["Idempotency-Key"][0]
    assert ActivityRecord.objects.count() == 1


def test_a_failed_request_keeps_nothing_so_its_key_can_be_used_again(api, electricity_factor):
    bad = post(api, ACTIVITIES, activity_input(unit="parsec"), key="k-3")
    assert bad.status_code == 400
    assert not IdempotencyRecord.objects.exists()
    fixed = post(api, ACTIVITIES, activity_input(), key="k-3")
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed
    assert ActivityRecord.objects.count() == 1


def test_keys_belong_to_the_organization(api, other_api, electricity_factor):
    mine = post(api, ACTIVITIES, activity_input(external_ref="MINE"), key="shared-key")
    theirs = post(other_api, ACTIVITIES, activity_input(external_ref="THEIRS"), key="shared-key")
    assert mine.status_code == theirs.status_code == 201
    assert "Idempotent-Replayed" not in theirs
    assert theirs.json()["external_ref"] == "THEIRS"
    assert ActivityRecord.objects.count() == 2
    assert IdempotencyRecord.objects.filter(key="shared-key").count() == 2


def test_a_key_whose_request_is_running_is_a_409_with_retry_after(api, electricity_factor, org):
    # Another server process runs the key's first request: it holds the key's lock.
    settings_dict = connection.settings_dict
    with psycopg.connect(
        dbname=settings_dict["NAME"], user=settings_dict["USER"], host=settings_dict["HOST"], port=settings_dict["PORT"]
    ) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [_lock_id(org.pk, "k-4")])
        running = post(api, ACTIVITIES, activity_input(), key="k-4")
        assert running.status_code == 409
        assert running["Retry-After"] == "1"
        assert "still running" in running.json()["detail"]
        assert not ActivityRecord.objects.exists()
        other.execute("SELECT pg_advisory_unlock_all()")
    assert post(api, ACTIVITIES, activity_input(), key="k-4").status_code == 201


@pytest.mark.parametrize(
    ("key", "problem"),
    [("", "must not be empty"), ("x" * 256, "at most 255"), ("clé", "printable ASCII")],
)
def test_an_invalid_key_is_a_400_naming_the_header(api, electricity_factor, key, problem):
    response = post(api, ACTIVITIES, activity_input(), key=key)
    assert response.status_code == 400
    assert problem in response.json()["Idempotency-Key"][0]
    assert not ActivityRecord.objects.exists()


def test_an_expired_key_starts_afresh(api, electricity_factor, settings):
    assert post(api, ACTIVITIES, activity_input(), key="k-5").status_code == 201
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_KEY_TTL + 1))
    again = post(api, ACTIVITIES, activity_input(), key="k-5")
    assert again.status_code == 201
    assert "Idempotent-Replayed" not in again
    assert ActivityRecord.objects.count() == 2
    assert IdempotencyRecord.objects.count() == 1


def test_batch_calculation_replays_its_answer(api, electricity_factor):
    body = {"items": [electricity_input(), electricity_input(unit="parsec")]}
    first = post(api, BATCH, body, key="calc-1")
    assert first.status_code == 200
    retry = post(api, BATCH, body, key="calc-1")
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert "error" in retry.json()["results"][1]


def test_the_schema_documents_the_header_and_its_answers(api):
    schema = api.get(reverse("schema"), {"format": "json"}).json()
    for path in ("/api/v1/activities/", "/api/v1/calculate/batch/"):
        operation = schema["paths"][path]["post"]
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert {"409", "422"} <= set(operation["responses"])


def test_the_answer_is_kept_and_sent_in_json_whatever_the_request_accepts(api, electricity_factor):
    # The browsable API's HTML needs the live response: the kept answer is JSON, for this request and its retries.
    first = post(api, ACTIVITIES, activity_input(), key="k-html", HTTP_ACCEPT="text/html")
    assert first.status_code == 201
    assert first["Content-Type"] == "application/json"
    retry = post(api, ACTIVITIES, activity_input(), key="k-html")
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert retry.json()["amount"] == "1.000000"
