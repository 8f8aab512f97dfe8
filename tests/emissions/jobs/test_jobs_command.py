"""``manage.py jobs wait`` and ``jobs resume`` against a real worker (tests/emissions/management/test_jobs.py has the
rest of the command)."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError

from emissions.models import Job
from emissions.services.jobs import job_submit
from tests.factories import OrganizationFactory
from tests.helpers import call_command
from tests.workers import Worker, wait_for_job

pytestmark = pytest.mark.usefixtures("sum_staging")

# Generous: only a hang reaches it.
TIMEOUT = "120"


def wait(job: Job) -> str:
    out = io.StringIO()
    call_command("jobs", "wait", str(job.pk), "--interval", "0.05", "--timeout", TIMEOUT, stdout=out)
    return out.getvalue()


def test_wait_follows_a_job_to_success(celery_worker: Worker) -> None:
    job = job_submit(
        organization=OrganizationFactory.create(),
        kind="test-sum",
        params={"numbers": [1, 2, 3, 4, 5, 6], "per_chunk": 2, "sleep": 0.2},
    )
    lines = wait(job).splitlines()
    assert lines[-1].startswith(f"job {job.pk} succeeded: 100%, chunks 3/3, rows 21 / 21, 0 error(s)")
    assert len(lines) >= 2  # it printed the job before it finished too
    assert Job.objects.get(pk=job.pk).state == Job.State.SUCCEEDED


def test_wait_exits_1_for_a_failed_job(celery_worker: Worker) -> None:
    job = job_submit(
        organization=OrganizationFactory.create(), kind="test-sum", params={"numbers": [1, 2], "fail_on": 2}
    )
    with pytest.raises(CommandError, match=f"Job {job.pk} failed: vcci.jobs.chunk failed: RuntimeError") as raised:
        wait(job)
    assert raised.value.returncode == 1


def test_resume_drives_a_job_whose_message_was_lost(celery_worker: Worker) -> None:
    # Created without job_submit: no message was ever sent, as if the broker had lost it.
    job = Job.objects.create(organization=OrganizationFactory.create(), kind="test-sum", params={"numbers": [4, 5]})
    out = io.StringIO()
    call_command("jobs", "resume", stdout=out)
    assert "Re-sent the next step of 1 unfinished job(s)." in out.getvalue()
    job = wait_for_job(job.pk)
    assert (job.state, job.result) == (Job.State.SUCCEEDED, {"total": 9, "staged_chunks": 1})
