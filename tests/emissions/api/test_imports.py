"""``POST /api/v1/imports/``: the upload (streamed to storage, header checked), the job it starts, refusals.

The jobs themselves run in tests/emissions/jobs/test_imports.py (in process and on a real worker)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.test.utils import override_settings
from django.urls import reverse

from emissions.imports import FileProblem
from emissions.jobs.imports import imports_storage
from emissions.models import Job, Membership, Organization
from emissions.services.imports import UploadTooLargeError, import_upload_store
from tests.emissions.api.test_permissions import member_api
from tests.emissions.jobs.test_imports import csv_bytes, varied_rows
from tests.helpers import APIClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def imports_folder(settings: Any, tmp_path: Any) -> None:
    """A folder of import files of the test's own (no worker reads it here), so that what a test leaves shows."""
    settings.STORAGES = {
        **settings.STORAGES,
        "imports": {**settings.STORAGES["imports"], "OPTIONS": {"location": tmp_path / "imports"}},
    }


URL = "/api/v1/imports/"


def post(api: Any, data: bytes, content_type: str = "text/csv", query: str = "") -> Any:
    return api.post(URL + query, data=data, content_type=content_type)


def uploads(organization: Organization) -> list[str]:
    storage = imports_storage()
    folder = f"uploads/{organization.pk}"
    return storage.listdir(folder)[1] if storage.exists(folder) else []


def test_the_route_is_named() -> None:
    assert reverse("import-list") == URL


def test_an_upload_is_stored_and_its_job_queued_in_the_callers_organization(
    api: Any, org: Organization, other_org: Organization
) -> None:
    data = csv_bytes(varied_rows(3))
    response = post(api, data)
    assert response.status_code == 202, response.content
    job = Job.objects.get()
    body = response.json()
    # The job as the jobs API shows it, and where to follow it.
    assert body == api.get(f"/api/v1/jobs/{job.pk}/").json()
    assert (body["id"], body["kind"], body["state"]) == (job.pk, "import", "queued")
    assert body["progress"] == {"chunks_done": 0, "chunks_total": 0, "rows_done": 0, "rows_total": None, "percent": 0}
    assert response["Location"] == body["url"] == f"http://testserver/api/v1/jobs/{job.pk}/"
    assert (job.organization, job.requested_by) == (org, api.user)
    assert job.params["dry_run"] is False
    with imports_storage().open(job.params["file"], "rb") as stored:
        assert stored.read() == data
    assert job.params["file"].startswith(f"uploads/{org.pk}/")
    assert not Job.objects.filter(organization=other_org).exists()


@pytest.mark.parametrize(("query", "dry_run"), [("?dry_run=true", True), ("?dry_run=false", False), ("", False)])
def test_dry_run_is_a_parameter_of_the_job(api: Any, query: str, dry_run: bool) -> None:
    assert post(api, csv_bytes(varied_rows(1)), query=query).status_code == 202
    assert Job.objects.get().params["dry_run"] is dry_run


def test_a_dry_run_that_is_no_boolean_is_refused(api: Any) -> None:
    response = post(api, csv_bytes(varied_rows(1)), query="?dry_run=maybe")
    assert response.status_code == 400
    assert response.json() == {"dry_run": ["Must be true or false, not 'maybe'."]}
    assert not Job.objects.exists()


@override_settings(JOB_CHUNK_ROWS=123)
def test_the_chunk_size_is_fixed_in_the_job(api: Any) -> None:
    post(api, csv_bytes(varied_rows(1)))
    assert Job.objects.get().params["chunk_rows"] == 123


def test_the_body_is_streamed_not_read_whole(api: Any, org: Organization) -> None:
    # Reading request.body would refuse anything over DATA_UPLOAD_MAX_MEMORY_SIZE.
    data = csv_bytes(varied_rows(200))
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = post(api, data)
    assert response.status_code == 202, response.content
    with imports_storage().open(Job.objects.get().params["file"], "rb") as stored:
        assert stored.read() == data


@override_settings(IMPORT_MAX_BYTES=1000)
def test_a_file_over_the_limit_is_413_and_nothing_is_kept(api: Any, org: Organization) -> None:
    response = post(api, csv_bytes(varied_rows(50)))
    assert response.status_code == 413
    assert response.json() == {"detail": "The file is larger than the 1,000-byte limit; split it into smaller files."}
    assert not Job.objects.exists()
    assert uploads(org) == []


def test_a_stream_longer_than_it_said_is_cut_at_the_limit_and_nothing_is_kept(org: Organization) -> None:
    # What Content-Length cannot tell (a chunked body): the limit is counted while the file is stored.
    with pytest.raises(UploadTooLargeError):
        import_upload_store(organization=org, stream=io.BytesIO(csv_bytes(varied_rows(50))), max_bytes=1000)
    assert uploads(org) == []


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x", "text/plain"])
def test_another_content_type_is_415(api: Any, content_type: str) -> None:
    response = post(api, csv_bytes(varied_rows(1)), content_type=content_type)
    assert response.status_code == 415
    assert "text/csv" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"category,method,colour\r\n3,activity,red\r\n", "Unknown column(s): colour."),
        (b"category,method,period_start\r\n", "Missing required column(s): period_end."),
        (b"category,method,period_start,period_end,method\r\n", "Duplicated column(s): method."),
        (b"", "The file is empty; the first line must name the columns."),
        (b'category,"method\r\n', "The file is not valid CSV: line 1: a quoted cell is not closed."),
        (b"category,m\xe9thod\r\n", "The file is not UTF-8 text:"),
    ],
)
def test_a_bad_header_is_400_naming_the_problem(api: Any, org: Organization, data: bytes, message: str) -> None:
    response = post(api, data)
    assert response.status_code == 400
    (error,) = response.json()["file"]
    assert error.startswith(message)
    assert not Job.objects.exists()
    assert uploads(org) == []


def test_the_header_line_must_end_within_the_first_bytes(org: Organization) -> None:
    with pytest.raises(FileProblem, match="The first line"):
        import_upload_store(organization=org, stream=io.BytesIO(b"category," * 10000), max_bytes=10**6)


def test_a_viewer_may_not_upload(org: Organization) -> None:
    response = post(member_api(org, Membership.Role.VIEWER), csv_bytes(varied_rows(1)))
    assert response.status_code == 403
    assert "add_activityrecord" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.parametrize("role", [Membership.Role.ANALYST, Membership.Role.ADMIN])
def test_analysts_and_admins_may_upload(org: Organization, role: str) -> None:
    assert post(member_api(org, role), csv_bytes(varied_rows(1))).status_code == 202
    assert Job.objects.get().organization == org


def test_anonymous_is_401() -> None:
    assert post(APIClient(), csv_bytes(varied_rows(1))).status_code == 401


def test_the_stored_stream_rewinds_only_to_where_it_is(org: Organization) -> None:
    """Storages rewind a file before saving it (django-storages' S3 backend too); an upload is read once."""
    from emissions.services.imports import _Body

    body = _Body(b"head\n", io.BytesIO(b"rest"), 100)
    assert body.seek(0) == 0
    assert body.read(10) == b"head\n"
    assert body.seek(0, io.SEEK_CUR) == 5
    with pytest.raises(io.UnsupportedOperation):
        body.seek(0)
    assert (body.read(10), body.read(10), body.tell()) == (b"rest", b"", 9)
