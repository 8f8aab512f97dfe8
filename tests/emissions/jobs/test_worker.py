"""Jobs run by a real Celery worker on the real broker: submitted, run, killed mid-chunk, failed."""

from __future__ import annotations

import pytest
from django.db import connection

from emissions.models import Job, JobChunk
from emissions.services.jobs import job_submit
from tests.factories import OrganizationFactory
from tests.workers import Worker, wait_for_job

pytestmark = pytest.mark.usefixtures("sum_staging")


def staged_chunks(job: Job) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT chunk FROM test_sum_staged WHERE job_id = %s ORDER BY chunk", [job.pk])
        return [row[0] for row in cursor.fetchall()]


def test_a_submitted_job_is_run_by_the_worker(celery_worker: Worker) -> None:
    numbers = list(range(1, 21))
    job = job_submit(
        organization=OrganizationFactory.create(), kind="test-sum", params={"numbers": numbers, "per_chunk": 3}
    )
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert (job.chunks_done, job.chunks_total, job.rows_done) == (7, 7, sum(numbers))
    assert job.result == {"total": sum(numbers), "staged_chunks": 7}


def test_killed_mid_chunk_the_job_completes_with_every_chunk_done_once(celery_worker: Worker) -> None:
    numbers = list(range(1, 9))
    job = job_submit(
        organization=OrganizationFactory.create(),
        kind="test-sum",
        params={"numbers": numbers, "per_chunk": 2, "sleep": 0.5},
    )

    def a_chunk_is_running() -> bool:
        return JobChunk.objects.filter(job=job, state="pending", attempts__gte=1).exists()

    assert celery_worker.kill_child_running(a_chunk_is_running) == 2
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert (job.chunks_done, job.rows_done) == (4, sum(numbers))
    assert staged_chunks(job) == [0, 1, 2, 3]  # no chunk's work twice, none lost
    # The killed attempts show: some chunk ran more than once, and only its last run counted.
    assert max(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) >= 2, "".join(celery_worker.output)


def test_a_chunk_that_raises_fails_the_job_and_discards_its_work(celery_worker: Worker) -> None:
    job = job_submit(
        organization=OrganizationFactory.create(),
        kind="test-sum",
        params={"numbers": [1, 2, 3, 4], "per_chunk": 1, "fail_on": 3},
    )
    job = wait_for_job(job.pk)
    assert job.state == Job.State.FAILED
    assert job.errors[-1] == {"detail": "vcci.jobs.chunk failed: RuntimeError: cannot add 3"}
    assert staged_chunks(job) == []
