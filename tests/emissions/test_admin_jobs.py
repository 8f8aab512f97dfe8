"""The jobs' admin (emissions.admin.JobAdmin): read-only, org-scoped, with progress, and cancelling."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from emissions.models import Job, Membership, Organization
from emissions.services.organizations import org_user_create
from tests.emissions.job_rows import make_job, stand_in_kinds
from tests.helpers import Client

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:emissions_job_changelist")


def change(job: Job) -> str:
    return reverse("admin:emissions_job_change", args=[job.pk])


def staff(org: Organization, role: str = Membership.Role.ADMIN, username: str = "orgadmin") -> Client:
    user, _ = org_user_create(organization=org, username=username, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def discarded(settings: Any) -> list[int]:
    return stand_in_kinds(settings)


def listed(response: Any) -> list[int]:
    return [job.pk for job in response.context["cl"].result_list]


def cancel(client: Client, *jobs: Job) -> Any:
    body = {"action": "cancel_selected", "_selected_action": [job.pk for job in jobs]}
    return client.post(CHANGELIST, body, follow=True)


def test_staff_see_their_organizations_jobs_only(org, other_org):
    own = make_job(org)
    make_job(other_org)
    response = staff(org).get(CHANGELIST)
    assert response.status_code == 200
    assert listed(response) == [own.pk]


@pytest.mark.parametrize("role", list(Membership.Role))
def test_every_role_sees_jobs(org, role):
    own = make_job(org)
    assert listed(staff(org, role).get(CHANGELIST)) == [own.pk]


def test_the_list_shows_progress_rows_and_errors(org):
    user = get_user_model().objects.create_user("requester")
    make_job(org, chunks_total=4, chunks_done=1, rows_total=8000, rows_done=2000, error_count=7, requested_by=user)
    html = staff(org).get(CHANGELIST).content.decode()
    assert '<progress value="25" max="100" title="25%">25%</progress>' in html
    assert "2,000 / 8,000" in html
    assert "requester" in html
    assert ">7<" in html  # error count


def test_filters_by_state(org):
    running = make_job(org)
    make_job(org, state=Job.State.FAILED)
    assert listed(staff(org).get(CHANGELIST, {"state__exact": "running"})) == [running.pk]


def test_the_detail_shows_errors_and_result_escaped(org):
    errors = [{"line": 3, "field": "amount", "messages": ["<b>Not a number</b>"]}]
    job = make_job(org, state=Job.State.SUCCEEDED, errors=errors, error_count=1, result={"activities": 41})
    response = staff(org).get(change(job))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;field&quot;: &quot;amount&quot;" in html
    assert "&lt;b&gt;Not a number&lt;/b&gt;" in html and "<b>Not a number</b>" not in html
    assert "&quot;activities&quot;: 41" in html
    assert 'name="_save"' not in html  # read-only: nothing to submit


def test_another_organizations_job_is_not_reachable(org, other_org, discarded):
    other = make_job(other_org)
    client = staff(org)
    response = client.get(change(other))
    assert response.status_code == 302 and response.url == reverse("admin:index")  # Django's "does not exist"
    cancel(client, other)
    other.refresh_from_db()
    assert other.state == Job.State.RUNNING and discarded == []


def test_nobody_adds_or_edits_jobs(org):
    job = make_job(org)
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    assert client.get(reverse("admin:emissions_job_add")).status_code == 403
    client.post(change(job), {"state": "succeeded"})
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING


def test_cancel_action(org, discarded):
    running, queued = make_job(org), make_job(org, state=Job.State.QUEUED)
    done = make_job(org, state=Job.State.SUCCEEDED)
    response = cancel(staff(org), running, queued, done)
    notes = [str(message) for message in get_messages(response.wsgi_request)]
    assert notes == [
        "Cancelled 2 job(s): nothing of them became visible.",
        f"Not cancelled, already finished: #{done.pk} (succeeded).",
    ]
    assert sorted(discarded) == sorted([running.pk, queued.pk])
    states = dict(Job.objects.values_list("pk", "state"))
    assert states == {running.pk: "cancelled", queued.pk: "cancelled", done.pk: "succeeded"}


def test_a_viewer_cannot_cancel(org, discarded):
    job = make_job(org)
    client = staff(org, Membership.Role.VIEWER)
    assert "cancel_selected" not in client.get(CHANGELIST).content.decode()
    cancel(client, job)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and discarded == []


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_changelist_query_count_is_constant(org, who):
    if who == "staff":
        client = staff(org)
    else:
        client = Client()
        client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    counts = []
    for n in (1, 40):
        for i in range(n - Job.objects.count()):
            make_job(org, requested_by=get_user_model().objects.create_user(f"requester-{n}-{i}"))
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(CHANGELIST)
        assert len(response.context["cl"].result_list) == n
        counts.append(len(ctx))
    assert counts[0] == counts[1], [q["sql"] for q in ctx.captured_queries]
