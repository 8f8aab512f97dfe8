"""The job state machine (``emissions.jobs.runner``), step by step in this process, with the test kind."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction

from emissions.jobs import runner
from emissions.models import AuditEvent, Job, JobChunk, Supplier
from emissions.services.jobs import JobFinishedError, job_cancel
from tests.emissions.jobs import sum_kind
from tests.factories import OrganizationFactory, UserFactory
from tests.helpers import unit_of_work

pytestmark = pytest.mark.usefixtures("sum_staging")


def staged(job: Job) -> list[tuple[int, int]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT chunk, total FROM test_sum_staged WHERE job_id = %s ORDER BY chunk", [job.pk])
        return [tuple(row) for row in cursor.fetchall()]


def plan(job_id: int) -> runner.Planned:
    # Each step is a task of its own in production, so each is its own unit of work for the N+1 check.
    with unit_of_work():
        return runner.job_plan(job_id)


def chunk(job_id: int, index: int) -> bool:
    with unit_of_work():
        return runner.chunk_run(job_id, index)


def finish(job_id: int) -> None:
    with unit_of_work():
        runner.job_finish(job_id)


def make_job(**params: object) -> Job:
    # Created directly: job_submit would also enqueue it, and these tests drive the steps themselves.
    return Job.objects.create(organization=OrganizationFactory.create(), kind="test-sum", params=params)


def run_all(job: Job) -> list[bool]:
    planned = plan(job.pk)
    return [chunk(job.pk, index) for index in planned.pending]


def test_plan_run_finish() -> None:
    job = make_job(numbers=[1, 2, 3, 4, 5], per_chunk=2)
    planned = plan(job.pk)
    assert planned.pending == [0, 1, 2] and not planned.finish
    job.refresh_from_db()
    assert (job.state, job.chunks_total, job.rows_total, job.started_at is not None) == ("running", 3, 15, True)
    # Only the last chunk asks for the finish.
    assert [chunk(job.pk, index) for index in planned.pending] == [False, False, True]
    finish(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED
    assert (job.chunks_done, job.rows_done, job.result) == (3, 15, {"total": 15, "staged_chunks": 3})
    assert job.finished_at is not None and job.finished


def test_a_chunk_runs_once_however_often_it_is_delivered() -> None:
    job = make_job(numbers=[10, 20, 30], per_chunk=1)
    plan(job.pk)
    assert chunk(job.pk, 0) is False
    assert chunk(job.pk, 0) is False  # delivered again
    job.refresh_from_db()
    assert (job.chunks_done, job.rows_done) == (1, 10)
    assert staged(job) == [(0, 10)]
    first = JobChunk.objects.get(job=job, index=0)
    assert (first.state, first.rows, first.attempts) == ("done", 10, 1)


def test_planning_twice_plans_once_and_returns_what_is_pending() -> None:
    job = make_job(numbers=[1, 2, 3], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 1)
    assert plan(job.pk).pending == [0, 2]
    assert JobChunk.objects.filter(job=job).count() == 3


def test_finish_before_the_last_chunk_does_nothing() -> None:
    job = make_job(numbers=[1, 2], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 0)
    finish(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING


def test_a_plan_that_fails_fails_the_job_with_its_errors() -> None:
    job = make_job(numbers=[])
    assert plan(job.pk).pending == []
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.errors == [{"field": "numbers", "messages": ["Empty."]}, {"detail": "No numbers to add."}]
    assert job.error_count == 2


def test_row_errors_are_collected_in_chunk_order() -> None:
    job = make_job(numbers=[1, 2000, 3, 4000, 5000], per_chunk=2)
    planned = plan(job.pk)
    for index in reversed(planned.pending):  # chunks finish in any order
        chunk(job.pk, index)
    finish(job.pk)
    job.refresh_from_db()
    assert [error["row"] for error in job.errors] == [2, 4, 5]
    assert job.error_count == 3


def test_a_finish_that_refuses_fails_the_job_and_discards_what_was_staged() -> None:
    job = make_job(numbers=[1, 2], per_chunk=1, reject=True)
    run_all(job)
    assert len(staged(job)) == 2
    finish(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.errors[-1] == {"detail": "Rejected at finish."}
    assert staged(job) == []


def test_cancel_discards_committed_chunks_and_later_chunks_do_nothing() -> None:
    job = make_job(numbers=[1, 2, 3], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 0)
    with unit_of_work():
        job_cancel(organization=job.organization, job_id=job.pk)
    assert staged(job) == []
    assert chunk(job.pk, 1) is False
    assert staged(job) == []
    job.refresh_from_db()
    assert (job.state, job.chunks_done) == ("cancelled", 1)
    with pytest.raises(JobFinishedError):
        job_cancel(organization=job.organization, job_id=job.pk)


def test_cancel_is_scoped_to_the_organization() -> None:
    job = make_job(numbers=[1])
    with pytest.raises(Job.DoesNotExist):
        job_cancel(organization=OrganizationFactory.create(), job_id=job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.QUEUED


def test_job_fail_discards_and_names_the_reason() -> None:
    job = make_job(numbers=[1, 2], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 0)
    with unit_of_work():
        runner.job_fail(job.pk, "vcci.jobs.chunk failed: RuntimeError: boom")
    job.refresh_from_db()
    assert job.state == Job.State.FAILED and job.errors == [{"detail": "vcci.jobs.chunk failed: RuntimeError: boom"}]
    assert staged(job) == []
    with unit_of_work():
        runner.job_fail(job.pk, "again")  # a finished job stays as it finished
    job.refresh_from_db()
    assert job.errors == [{"detail": "vcci.jobs.chunk failed: RuntimeError: boom"}]


def test_resumable_names_what_each_unfinished_job_waits_for() -> None:
    queued = make_job(numbers=[1])
    half = make_job(numbers=[1, 2, 3], per_chunk=1)
    plan(half.pk)
    chunk(half.pk, 1)
    ready = make_job(numbers=[1])
    run_all(ready)
    done = make_job(numbers=[1])
    run_all(done)
    finish(done.pk)
    resumable = {r.job_id: r for r in runner.jobs_resumable()}
    assert set(resumable) == {queued.pk, half.pk, ready.pk}
    assert resumable[queued.pk].plan
    assert (resumable[half.pk].pending, resumable[half.pk].finish) == ([0, 2], False)
    assert (resumable[ready.pk].pending, resumable[ready.pk].finish) == ([], True)


def test_the_jobs_writes_are_audited_as_the_jobs_on_behalf_of_its_requester() -> None:
    user = UserFactory.create()
    job = Job.objects.create(
        organization=OrganizationFactory.create(),
        kind="test-sum",
        params={"numbers": [1], "supplier": "S-1"},
        requested_by=user,
    )
    run_all(job)
    finish(job.pk)
    supplier = Supplier.objects.get(organization=job.organization, external_id="S-1")
    event = AuditEvent.objects.get(table_name="emissions_supplier", object_id=supplier.pk)
    assert (event.action, event.job_id, event.actor_id) == ("insert", job.pk, user.pk)


def _chunk_in_its_own_connection(job_id: int, index: int) -> bool:
    try:
        return runner.chunk_run(job_id, index)
    finally:
        connection.close()  # this thread's connection


def _wait_until_a_chunk_sleeps() -> None:
    """Until a chunk run by another thread is inside its transaction, in the test kind's ``pg_sleep``."""
    deadline = time.monotonic() + 30
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'SELECT pg_sleep%%' AND state = 'active'"
            )
            if cursor.fetchone()[0] or time.monotonic() > deadline:
                return
            time.sleep(0.02)


def test_a_running_chunk_leaves_its_job_row_unlocked_so_the_other_chunks_run_beside_it() -> None:
    job = make_job(numbers=[1, 2], per_chunk=1, sleep=2)
    plan(job.pk)
    running = threading.Thread(target=_chunk_in_its_own_connection, args=(job.pk, 0))
    running.start()
    try:
        _wait_until_a_chunk_sleeps()
        # What every other chunk's end takes (to count) and a cancel takes: free while chunk 0 runs.
        with transaction.atomic():
            assert Job.objects.select_for_update(nowait=True).get(pk=job.pk).state == Job.State.RUNNING
    finally:
        running.join()
    assert staged(job) == [(0, 1)]


def test_a_chunk_running_when_its_job_is_cancelled_rolls_its_work_back() -> None:
    job = make_job(numbers=[1, 2], per_chunk=1, sleep=1)
    plan(job.pk)
    returned: list[bool] = []
    running = threading.Thread(target=lambda: returned.append(_chunk_in_its_own_connection(job.pk, 0)))
    running.start()
    try:
        _wait_until_a_chunk_sleeps()
        with unit_of_work():
            job_cancel(organization=job.organization, job_id=job.pk)  # its discard cannot see the chunk's staging
    finally:
        running.join()
    assert returned == [False]
    # The chunk found the job cancelled at its end and rolled back: its staging and its "done" with it.
    assert staged(job) == []
    assert JobChunk.objects.get(job=job, index=0).state == JobChunk.State.PENDING
    job.refresh_from_db()
    assert (job.state, job.chunks_done, job.rows_done) == ("cancelled", 0, 0)


def test_the_last_chunk_delivered_again_asks_for_the_finish_its_first_run_could_not() -> None:
    # The process ran the last chunk, committed, and died before sending the finish: the message comes again.
    job = make_job(numbers=[1, 2, 3], per_chunk=1)
    assert run_all(job) == [False, False, True]
    assert chunk(job.pk, 2) is True
    assert chunk(job.pk, 0) is True  # any chunk of the job: the finish is idempotent
    assert JobChunk.objects.get(job=job, index=2).attempts == 1  # not run again
    finish(job.pk)
    job.refresh_from_db()
    assert (job.state, job.chunks_done, job.rows_done) == ("succeeded", 3, 6)
    assert chunk(job.pk, 2) is False  # finished: nothing more to ask for


def test_a_chunk_delivered_again_before_the_others_are_done_asks_for_nothing() -> None:
    job = make_job(numbers=[1, 2, 3], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 2)
    assert chunk(job.pk, 2) is False
    job_cancel(organization=job.organization, job_id=job.pk)
    assert chunk(job.pk, 2) is False


def test_a_chunk_whose_process_keeps_dying_fails_its_job_instead_of_running_again(
    settings: Any,
) -> None:
    settings.JOB_CHUNK_MAX_ATTEMPTS = 3
    job = make_job(numbers=[1, 2], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 0)
    # Three deliveries of chunk 1 started and were killed mid-chunk (out of memory): the fourth fails the job.
    JobChunk.objects.filter(job=job, index=1).update(attempts=3)
    assert chunk(job.pk, 1) is False
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.errors[-1]["detail"].startswith("chunk 1 was started 3 times without finishing")
    assert staged(job) == []  # chunk 0's work discarded, chunk 1's never run
    assert JobChunk.objects.get(job=job, index=1).state == JobChunk.State.PENDING


def test_a_chunk_runs_as_often_as_allowed(settings: Any) -> None:
    settings.JOB_CHUNK_MAX_ATTEMPTS = 3
    job = make_job(numbers=[1], per_chunk=1)
    plan(job.pk)
    JobChunk.objects.filter(job=job, index=0).update(attempts=2)  # this delivery is the third
    assert chunk(job.pk, 0) is True
    assert staged(job) == [(0, 1)]


def _statement_timeout_ms() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
        return int(cursor.fetchone()[0])


def test_every_step_s_statement_timeout_is_shorter_than_its_task_s_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, int] = {}
    kind = sum_kind.KIND
    for step in ("plan", "run_chunk", "finish"):
        original = getattr(kind, step)

        def recording(*args: object, _step: str = step, _original: Any = original) -> Any:
            seen[_step] = _statement_timeout_ms()
            return _original(*args)

        monkeypatch.setattr(kind, step, recording)
    job = make_job(numbers=[1])
    run_all(job)
    finish(job.pk)
    assert seen["run_chunk"] == django_settings.JOB_CHUNK_STATEMENT_TIMEOUT_MS
    # A statement running too long is cancelled by the database before the task is killed (and its backend with it
    # left running the statement, holding its locks).
    assert seen["run_chunk"] < django_settings.JOB_CHUNK_TIME_LIMIT * 1000
    assert seen["plan"] == seen["finish"] == django_settings.JOB_STATEMENT_TIMEOUT_MS
    assert seen["finish"] < django_settings.JOB_FINISH_TIME_LIMIT * 1000


def test_a_failure_waits_for_the_job_row_a_bounded_time_then_leaves_the_job_to_the_resume(
    settings: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Without a lock timeout the failure would wait for the lock until its statement timeout, and raise.
    settings.JOB_STATEMENT_TIMEOUT_MS = settings.JOB_CHUNK_STATEMENT_TIMEOUT_MS = 5000
    monkeypatch.setattr(runner, "FAIL_LOCK_TIMEOUT_MS", 50)
    job = make_job(numbers=[1, 2], per_chunk=1)
    plan(job.pk)
    chunk(job.pk, 0)
    raised: list[BaseException] = []

    def fail() -> None:
        try:
            runner.job_fail(job.pk, "vcci.jobs.chunk failed: RuntimeError: boom")
        except BaseException as exc:
            raised.append(exc)
        finally:
            connection.close()

    with transaction.atomic():  # the job row locked, as a killed process's backend may still hold it
        Job.objects.select_for_update().get(pk=job.pk)
        failing = threading.Thread(target=fail)
        failing.start()
        failing.join()
    assert raised == []
    job.refresh_from_db()
    assert job.state == Job.State.RUNNING and staged(job) == [(0, 1)]
    assert f"job {job.pk} not failed" in caplog.text
