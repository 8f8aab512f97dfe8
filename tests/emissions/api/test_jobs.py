"""/api/v1/jobs/: the organization's jobs (list, detail) and cancelling one."""

from __future__ import annotations

import datetime as dt
import json
from base64 import urlsafe_b64encode

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from emissions.models import Job, Membership, Organization
from tests.emissions.job_rows import make_job, stand_in_kinds
from tests.factories import MembershipFactory
from tests.helpers import APIClient

pytestmark = pytest.mark.django_db

LIST = reverse("job-list")


def detail(pk: int) -> str:
    return reverse("job-detail", args=[pk])


def cancel(pk: int) -> str:
    return reverse("job-cancel", args=[pk])


@pytest.fixture
def discarded(settings):
    """Jobs of the built-in kinds run by the stand-in kind; the ids of those it discarded."""
    return stand_in_kinds(settings)


def member_api(organization: Organization, role: str) -> APIClient:
    membership = MembershipFactory.create(organization=organization, role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    return client


def test_list_is_the_orgs_jobs_newest_first(api, org, other_org):
    now = timezone.now()
    old = make_job(org, created_at=now - dt.timedelta(hours=2), requested_by=api.user)
    new = make_job(org, kind=Job.Kind.RECALCULATION, state=Job.State.QUEUED, created_at=now)
    make_job(other_org)
    data = api.get(LIST).json()
    assert [job["id"] for job in data["results"]] == [new.pk, old.pk]
    first = data["results"][1]
    assert first["requested_by"] == api.user.username
    assert first["url"].endswith(detail(old.pk))
    assert set(first) == {
        "id",
        "url",
        "kind",
        "state",
        "progress",
        "error_count",
        "requested_by",
        "created_at",
        "started_at",
        "finished_at",
        "duration",
    }
    assert data["results"][0]["duration"] is None  # queued: not started


def test_list_pages_with_a_cursor(api, org):
    now = timezone.now()
    jobs = [make_job(org, created_at=now - dt.timedelta(minutes=i)) for i in range(5)]
    page = api.get(LIST, {"limit": 2}).json()
    seen = [job["id"] for job in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [job["id"] for job in page["results"]]
    assert seen == [job.pk for job in jobs]


def test_filters_by_kind_and_state(api, org):
    running_import = make_job(org)
    make_job(org, kind=Job.Kind.RECALCULATION)
    make_job(org, state=Job.State.SUCCEEDED)
    ids = [job["id"] for job in api.get(LIST, {"kind": "import", "state": "running"}).json()["results"]]
    assert ids == [running_import.pk]


def test_a_bad_filter_is_a_400_naming_it(api):
    response = api.get(LIST, {"state": "asleep"})
    assert response.status_code == 400
    assert list(response.json()) == ["state"]
    assert "asleep" in response.json()["state"][0]


def test_query_count_is_constant(api, org, django_assert_num_queries):
    make_job(org, requested_by=api.user)
    with django_assert_num_queries(2):  # token (user, membership, org joined), page (requesting users joined)
        assert len(api.get(LIST).json()["results"]) == 1
    for _ in range(30):
        make_job(org, requested_by=MembershipFactory.create(organization=org).user)
    with django_assert_num_queries(2):
        assert len(api.get(LIST).json()["results"]) == 31


def test_detail_shows_progress_errors_and_result(api, org):
    errors = [{"line": 12, "field": "amount", "messages": ["Not a number."]}]
    job = make_job(
        org,
        params={"file": "march.csv"},
        chunks_total=4,
        chunks_done=1,
        rows_total=80_000,
        rows_done=20_000,
        error_count=1,
        errors=errors,
        requested_by=api.user,
    )
    data = api.get(detail(job.pk)).json()
    assert data["progress"] == {
        "chunks_done": 1,
        "chunks_total": 4,
        "rows_done": 20_000,
        "rows_total": 80_000,
        "percent": 25,
    }
    assert (data["params"], data["errors"], data["error_count"], data["result"]) == (
        {"file": "march.csv"},
        errors,
        1,
        {},
    )
    assert data["state"] == "running" and data["requested_by"] == api.user.username
    assert float(data["duration"]) >= 90  # started 90 s before it was made, still running


def test_detail_of_a_finished_job(api, org):
    start = timezone.now() - dt.timedelta(minutes=5)
    job = make_job(
        org,
        state=Job.State.SUCCEEDED,
        started_at=start,
        finished_at=start + dt.timedelta(seconds=61, milliseconds=250),
        chunks_total=2,
        chunks_done=2,
        rows_done=10,
        result={"activities": 10},
    )
    data = api.get(detail(job.pk)).json()
    assert data["duration"] == "61.250"
    assert data["progress"]["percent"] == 100 and data["progress"]["rows_total"] is None
    assert data["result"] == {"activities": 10}
    assert data["requested_by"] is None


def test_detail_follows_the_job_as_it_moves(api, org):
    """Not cached: each read is the job row as it is now."""
    job = make_job(org, chunks_total=2)
    assert api.get(detail(job.pk)).json()["progress"]["chunks_done"] == 0
    Job.objects.filter(pk=job.pk).update(chunks_done=1)
    assert api.get(detail(job.pk)).json()["progress"]["chunks_done"] == 1


def test_cancel_a_running_job(api, org, discarded):
    job = make_job(org)
    response = api.post(cancel(job.pk))
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled" and response.json()["finished_at"]
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED
    assert discarded == [job.pk]  # what it staged was discarded


def test_cancelling_a_finished_job_is_a_409_naming_its_state(api, org, discarded):
    job = make_job(org, state=Job.State.SUCCEEDED)
    response = api.post(cancel(job.pk))
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Job {job.pk} is succeeded; only a queued or running job can be cancelled.",
        "state": "succeeded",
    }
    assert discarded == []


def test_another_orgs_job_is_a_404_everywhere(api, other_org, discarded):
    job = make_job(other_org)
    assert api.get(detail(job.pk)).status_code == 404
    assert api.post(cancel(job.pk)).status_code == 404
    assert api.get(LIST).json()["results"] == []
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and discarded == []


@pytest.mark.parametrize("role", list(Membership.Role))
def test_every_role_reads_jobs(org, role):
    job = make_job(org)
    client = member_api(org, role)
    assert client.get(LIST).status_code == 200
    assert client.get(detail(job.pk)).status_code == 200


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Membership.Role.VIEWER, False), (Membership.Role.ANALYST, True), (Membership.Role.ADMIN, True)],
)
def test_cancelling_needs_the_write_of_the_jobs_kind(org, discarded, role, allowed):
    job = make_job(org)
    response = member_api(org, role).post(cancel(job.pk))
    if allowed:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert response.json() == {
            "detail": "Your role 'viewer' may not cancel import jobs: it lacks the 'add_activityrecord' permission."
        }
        job.refresh_from_db()
        assert job.state == Job.State.RUNNING


def test_a_kind_without_a_listed_permission_is_cancelled_by_superusers_only(org, settings):
    settings.JOB_KIND_MODULES = {**settings.JOB_KIND_MODULES, "stand-in": "tests.emissions.job_rows"}
    job = make_job(org, kind="stand-in")
    response = member_api(org, Membership.Role.ADMIN).post(cancel(job.pk))
    assert response.status_code == 403
    assert "lacks the 'change_job' permission" in response.json()["detail"]
    superuser = MembershipFactory.create(organization=org, user__is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=superuser.user).key}")
    assert client.post(cancel(job.pk)).status_code == 200


@pytest.mark.parametrize("created_at", ["2025-01-01 00:00:00", "2025-01-01", "yesterday"])
def test_a_cursor_without_a_time_zone_is_a_400(api, org, created_at):
    """The cursors the list writes carry the time's offset; one without is refused, not read in the server's zone."""
    make_job(org)
    cursor = urlsafe_b64encode(json.dumps([created_at, "1"]).encode()).decode()
    response = api.get(LIST, {"after": cursor})
    assert response.status_code == 400
    assert list(response.json()) == ["after"]
