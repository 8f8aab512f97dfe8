"""The Celery tasks that drive jobs through ``emissions.jobs.runner`` (docs/jobs.md).

Every task is safe to run twice (the runner's steps are idempotent), so messages are acknowledged late and put back
when the process running them dies. A lost database connection (the server restarting, a failover) is retried with
exponential backoff; any other error, or retries running out, fails the job with the error named on it
(``JobTask.on_failure``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError, close_old_connections

from emissions.jobs import runner

logger = logging.getLogger(__name__)

# Errors of the connection, not of the work: the same task later has every chance to succeed.
TRANSIENT = (OperationalError, InterfaceError)


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


@shared_task(base=JobTask, name="vcci.jobs.plan")
def plan_job(job_id: int) -> None:
    planned = runner.job_plan(job_id)
    for index in planned.pending:
        run_chunk.delay(job_id, index)
    if planned.finish:
        finish_job.delay(job_id)


@shared_task(base=JobTask, name="vcci.jobs.chunk")
def run_chunk(job_id: int, index: int) -> None:
    if runner.chunk_run(job_id, index):
        finish_job.delay(job_id)


@shared_task(base=JobTask, name="vcci.jobs.finish")
def finish_job(job_id: int) -> None:
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
