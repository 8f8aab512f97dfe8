"""``manage.py jobs``: list, show, cancel and wait, in this process (tests/emissions/jobs/test_jobs_command.py runs
``wait`` and ``resume`` against a real worker)."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.utils import timezone

from emissions.management.commands import jobs as command
from emissions.models import Job
from tests.emissions.job_rows import make_job, stand_in_kinds
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    """``manage.py jobs ARGS``' output."""
    out = io.StringIO()
    call_command("jobs", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def discarded(settings: Any) -> list[int]:
    return stand_in_kinds(settings)


def test_list_is_newest_first_with_progress(org, other_org):
    now = timezone.now()
    user = get_user_model().objects.create_user("requester")
    old = make_job(org, created_at=now - dt.timedelta(hours=1), rows_total=400, rows_done=100, requested_by=user)
    new = make_job(other_org, kind=Job.Kind.RECALCULATION, state=Job.State.SUCCEEDED, created_at=now)
    lines = run("list").splitlines()
    assert lines[0].split()[:4] == ["id", "organization", "kind", "state"]
    assert [line.split()[0] for line in lines[1:]] == [str(new.pk), str(old.pk)]
    assert lines[2].split()[1:9] == ["acme", "import", "running", "25%", "100", "/", "400", "0"]
    assert "requester" in lines[2]


def test_list_filters_by_org_state_and_kind(org, other_org):
    running = make_job(org)
    make_job(org, state=Job.State.FAILED)
    make_job(other_org)
    make_job(org, kind=Job.Kind.RECALCULATION)
    output = run("list", "--org", "acme", "--state", "running", "queued", "--kind", "import")
    assert [line.split()[0] for line in output.splitlines()[1:]] == [str(running.pk)]
    assert run("list", "--state", "cancelled").strip() == "No jobs."


def test_list_of_an_unknown_org_names_the_option(org):
    with pytest.raises(CommandError, match="--org: no organization 'nope'"):
        run("list", "--org", "nope")


def test_show_prints_progress_errors_and_result(org):
    errors = [{"line": i, "field": "amount", "messages": ["Not a number."]} for i in range(1, 31)]
    job = make_job(
        org,
        state=Job.State.SUCCEEDED,
        params={"file": "march.csv"},
        chunks_total=2,
        chunks_done=2,
        rows_total=30,
        rows_done=30,
        error_count=30,
        errors=errors,
        result={"activities": 0},
    )
    output = run("show", str(job.pk), "--errors", "2")
    assert f"Job {job.pk}: Activity import (import) of acme, succeeded" in output
    assert "progress 100%: chunks 2/2, rows 30 / 30" in output
    assert 'parameters {"file": "march.csv"}' in output
    assert "errors 30 (the first 2):" in output
    assert '"line": 2' in output and '"line": 3' not in output
    assert 'result {"activities": 0}' in output


def test_show_of_an_unknown_job(db):
    with pytest.raises(CommandError, match=r"No job 999999\."):
        run("show", "999999")


def test_cancel(org, discarded):
    job = make_job(org)
    assert "Cancelled job" in run("cancel", str(job.pk))
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED and discarded == [job.pk]
    with pytest.raises(CommandError, match="is cancelled; only a queued or running job can be cancelled"):
        run("cancel", str(job.pk))


def moving(job: Job, steps: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make each of ``wait``'s sleeps apply the next of ``steps`` to the job row, as a worker would."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        Job.objects.filter(pk=job.pk).update(**steps[len(slept) - 1])

    monkeypatch.setattr(command.time, "sleep", sleep)
    return slept


def test_wait_prints_progress_until_success(org, monkeypatch):
    job = make_job(org, chunks_total=2, rows_total=10)
    slept = moving(
        job,
        [
            {"chunks_done": 1, "rows_done": 5},
            {},  # no news: no line
            {"chunks_done": 2, "rows_done": 10},
            {"state": Job.State.SUCCEEDED, "finished_at": timezone.now()},
        ],
        monkeypatch,
    )
    lines = run("wait", str(job.pk), "--interval", "0.5").splitlines()
    assert slept == [0.5] * 4
    assert [line.split(",")[0] for line in lines] == [
        f"job {job.pk} running: 0%",
        f"job {job.pk} running: 50%",
        f"job {job.pk} running: 99%",
        f"job {job.pk} succeeded: 100%",
    ]


@pytest.mark.parametrize(
    ("state", "errors", "message"),
    [
        (Job.State.FAILED, [{"detail": "No rows."}], "failed: No rows."),
        (Job.State.CANCELLED, [], "cancelled."),
    ],
)
def test_wait_fails_for_a_job_that_did_not_succeed(org, monkeypatch, state, errors, message):
    job = make_job(org)
    moving(job, [{"state": state, "errors": errors, "finished_at": timezone.now()}], monkeypatch)
    with pytest.raises(CommandError, match=f"Job {job.pk} {message}") as raised:
        run("wait", str(job.pk))
    assert raised.value.returncode == 1
