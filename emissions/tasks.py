"""The Celery tasks that drive jobs through ``emissions.jobs.runner`` (docs/jobs.md).

Every task is safe to run twice (the runner's steps are idempotent), so messages are acknowledged late and put back
when the process running them dies. A lost database connection (the server restarting, a failover) is retried with
exponential backoff; a statement the server cancelled (its statement timeout), any other error, or retries running
out, fails the job with the error named on it (``JobTask.on_failure``). A broker that is down when a task sends the
job's next message does not fail the job, whose work is committed: the job waits for the next resume
(``jobs_resume``: a worker starting, or ``manage.py jobs resume``).

Chunks run under ``CELERY_TASK_TIME_LIMIT`` (``JOB_CHUNK_TIME_LIMIT``); planning and finishing, which may move a
whole import in one statement, under ``JOB_FINISH_TIME_LIMIT``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kombu.exceptions
from celery import shared_task
from celery.contrib.django.task import DjangoTask
from celery.signals import worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from psycopg.errors import QueryCanceled

from emissions.jobs import runner

logger = logging.getLogger(__name__)

# Errors of the connection, not of the work: the same task later has every chance to succeed.
TRANSIENT = (OperationalError, InterfaceError)


class StatementCancelled(Exception):
    """The database cancelled a statement of the task (its statement timeout): running it again would only wait as
    long again, so the job fails instead of retrying (Django reports it as an ``OperationalError``, as a lost
    connection)."""


@contextmanager
def _cancelled_statements_fail() -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        if isinstance(exc.__cause__, QueryCanceled):
            raise StatementCancelled(str(exc).strip()) from exc
        raise


@contextmanager
def _next_messages(job_id: int) -> Iterator[None]:
    """Sending a job's next messages after its work committed: a broker that is down leaves the job to the resume."""
    try:
        yield
    except kombu.exceptions.OperationalError as exc:
        logger.warning(
            "job %s: its next message could not be sent (%s); the next resume (a worker starting, or "
            "manage.py jobs resume) sends it",
            job_id,
            exc,
        )


class JobTask(DjangoTask):
    """A task whose first argument is a job id; a final failure fails that job instead of leaving it running."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True
    max_retries = 8

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        try:
            runner.job_fail(job_id, f"{self.name} failed: {type(exc).__name__}: {exc}")
        except Exception:  # the database may be what failed; the next worker start re-drives the job
            logger.exception("could not record the failure of job %s", job_id)


@shared_task(base=JobTask, name="vcci.jobs.plan", time_limit=settings.JOB_FINISH_TIME_LIMIT)
def plan_job(job_id: int) -> None:
    with _cancelled_statements_fail():
        planned = runner.job_plan(job_id)
    with _next_messages(job_id):
        for index in planned.pending:
            run_chunk.delay(job_id, index)
        if planned.finish:
            finish_job.delay(job_id)


@shared_task(base=JobTask, name="vcci.jobs.chunk")
def run_chunk(job_id: int, index: int) -> None:
    with _cancelled_statements_fail():
        ready = runner.chunk_run(job_id, index)
    if ready:
        with _next_messages(job_id):
            finish_job.delay(job_id)


@shared_task(base=JobTask, name="vcci.jobs.finish", time_limit=settings.JOB_FINISH_TIME_LIMIT)
def finish_job(job_id: int) -> None:
    with _cancelled_statements_fail():
        runner.job_finish(job_id)


def jobs_resume() -> int:
    """Send again what every unfinished job waits for; return how many jobs that was."""
    resumable = runner.jobs_resumable()
    for job in resumable:
        if job.plan:
            plan_job.delay(job.job_id)
        for index in job.pending:
            run_chunk.delay(job.job_id, index)
        if job.finish:
            finish_job.delay(job.job_id)
    return len(resumable)


@worker_ready.connect
def resume_on_start(**kwargs: Any) -> None:
    """A worker starting re-drives unfinished jobs, whose messages a crash may have lost (duplicates are harmless)."""
    try:
        count = jobs_resume()
    finally:
        # This runs in the worker's main process: its connection must not outlive the call.
        close_old_connections()
    if count:
        logger.info("resumed %d unfinished job(s)", count)
