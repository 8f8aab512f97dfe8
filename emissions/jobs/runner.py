"""The state machine every job goes through, in plain Django: plan, run each chunk once, finish (or fail, or cancel).

Exactly-once comes from the database, not from the broker. A chunk's work and the row that says it is done commit in
one transaction (``chunk_run``): a worker killed mid-chunk rolls the work back with the chunk still pending, and the
broker delivers the message again (``acks_late`` with ``reject_on_worker_lost``); a message delivered twice finds the
chunk done and does nothing. The chunk row is locked while it runs, so two deliveries never run it at once.

The job row is where chunks meet: each chunk's last statement adds its counts to the job *if the job is still
running*. Cancelling (or failing) a job takes the job row's lock and changes its state, so a chunk still running then
finds no running job at its end and rolls back its own work; the cancel's discard sees every chunk committed before
it. The chunk that brings ``chunks_done`` to ``chunks_total`` asks for the finish; ``job_finish`` is idempotent too,
and a worker starting up re-drives every unfinished job (``jobs_resume``), so a message lost between a commit and its
publication delays a job but never strands it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from emissions.audit import apply as audit_apply
from emissions.audit import audit_context
from emissions.jobs.kinds import JobFailed, kind_for
from emissions.models import Job, JobChunk

logger = logging.getLogger(__name__)


@contextmanager
def job_transaction() -> Iterator[None]:
    """A transaction with the jobs' statement timeout (``JOB_STATEMENT_TIMEOUT_MS``) instead of the requests'."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)", [str(settings.JOB_STATEMENT_TIMEOUT_MS)]
                )
        yield


@contextmanager
def _audited(job: Job) -> Iterator[None]:
    """The job's writes in the audit trail as the job's, on behalf of whoever submitted it (``emissions.audit``).

    Precondition: inside the job's transaction. The context is sent at once rather than left to the audit's execute
    wrapper, which recognises the ORM's statements: a kind may write with SQL of its own (INSERT ... SELECT, COPY).
    """
    with audit_context(actor_id=job.requested_by_id, job_id=job.pk):
        if connection.vendor == "postgresql":
            audit_apply(connection)
        yield


def _capped(errors: list[dict[str, Any]], room: int) -> list[dict[str, Any]]:
    return errors[: max(0, room)]


@dataclass(frozen=True)
class Planned:
    """What planning left to do: the chunks still pending, and whether the job is ready to finish."""

    pending: list[int]
    finish: bool


def job_plan(job_id: int) -> Planned:
    """Split a queued job into chunks (once), mark it running, and return the chunks still to run.

    Idempotent: a job already planned is not planned again; its pending chunks are returned (a redelivered planning
    message re-enqueues them, and chunks already done ignore a second message). A finished job returns nothing.
    """
    with job_transaction():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.finished:
            return Planned([], finish=False)
        if job.state == Job.State.QUEUED:
            kind = kind_for(job.kind)
            try:
                plan = kind.plan(job)
            except JobFailed as exc:
                _fail_locked(job, exc.detail, exc.errors)
                return Planned([], finish=False)
            JobChunk.objects.bulk_create(
                [JobChunk(job=job, index=index, payload=payload) for index, payload in enumerate(plan.chunks)]
            )
            job.chunks_total, job.rows_total = len(plan.chunks), plan.rows_total
            job.state, job.started_at = Job.State.RUNNING, timezone.now()
            job.save(update_fields=["chunks_total", "rows_total", "state", "started_at"])
        pending = list(
            job.chunks.filter(state=JobChunk.State.PENDING).order_by("index").values_list("index", flat=True)
        )
        return Planned(pending, finish=not pending)


def chunk_run(job_id: int, index: int) -> bool:
    """Run chunk ``index`` of a running job once; return True when it was the job's last chunk (finish it next).

    A chunk already done, or of a job no longer running, is left alone (False).
    """
    # Counted outside the chunk's transaction, so that attempts killed mid-chunk still show.
    JobChunk.objects.filter(job_id=job_id, index=index, state=JobChunk.State.PENDING).update(attempts=F("attempts") + 1)
    with job_transaction():
        # The chunk's row only (``of``): FOR UPDATE over the join would lock the job's row too, and so run the chunks of
        # a job one at a time however many workers there are. The job row is locked briefly, at the end, to count.
        chunk = JobChunk.objects.select_for_update(of=("self",)).select_related("job").get(job_id=job_id, index=index)
        job = chunk.job
        if chunk.state == JobChunk.State.DONE or job.state != Job.State.RUNNING:
            return False
        with _audited(job):
            outcome = kind_for(job.kind).run_chunk(job, chunk)
        chunk.state, chunk.rows, chunk.finished_at = JobChunk.State.DONE, outcome.rows, timezone.now()
        chunk.error_count = outcome.total_errors
        chunk.errors = _capped(outcome.errors, Job.MAX_ERRORS)
        chunk.save(update_fields=["state", "rows", "finished_at", "error_count", "errors"])
        counted = Job.objects.filter(pk=job_id, state=Job.State.RUNNING).update(
            chunks_done=F("chunks_done") + 1,
            rows_done=F("rows_done") + outcome.rows,
            error_count=F("error_count") + outcome.total_errors,
        )
        if not counted:
            # Cancelled or failed while this chunk ran: its work must not outlive the discard that already ran.
            transaction.set_rollback(True)
            return False
        done, total = Job.objects.filter(pk=job_id).values_list("chunks_done", "chunks_total").get()
        return bool(done == total)


def job_finish(job_id: int) -> None:
    """Finish a running job whose chunks are all done, in one transaction: the kind makes the work visible, or the
    job fails (the kind's ``JobFailed``) and its staged work is discarded. Idempotent; early calls do nothing."""
    with job_transaction():
        job = Job.objects.select_for_update().get(pk=job_id)
        if job.state != Job.State.RUNNING or job.chunks_done != job.chunks_total:
            return
        job.errors = _collected_errors(job)
        kind = kind_for(job.kind)
        try:
            # A savepoint: what a failed finish wrote goes, the job's failure stays.
            with transaction.atomic(), _audited(job):
                job.result = kind.finish(job)
        except JobFailed as exc:
            _fail_locked(job, exc.detail, exc.errors)
            return
        job.state, job.finished_at = Job.State.SUCCEEDED, timezone.now()
        job.save(update_fields=["errors", "result", "state", "finished_at"])


def _collected_errors(job: Job) -> list[dict[str, Any]]:
    """The first ``Job.MAX_ERRORS`` problems of the job's chunks, in chunk order (so in file order for an import)."""
    errors: list[dict[str, Any]] = []
    for chunk_errors in job.chunks.exclude(error_count=0).order_by("index").values_list("errors", flat=True):
        errors.extend(_capped(chunk_errors, Job.MAX_ERRORS - len(errors)))
        if len(errors) >= Job.MAX_ERRORS:
            break
    return errors


def job_fail(job_id: int, detail: str) -> None:
    """Fail an unfinished job for a reason outside its kind's control (a task that kept failing); discards its work."""
    with job_transaction():
        job = Job.objects.select_for_update().get(pk=job_id)
        if not job.finished:
            _fail_locked(job, detail, [])


def _fail_locked(job: Job, detail: str, errors: list[dict[str, Any]]) -> None:
    """Precondition: ``job``'s row is locked in the current transaction."""
    kind_for(job.kind).discard(job)
    job.errors = _capped([*job.errors, *errors, {"detail": detail}], Job.MAX_ERRORS + 1)
    job.error_count += len(errors) + 1
    job.state, job.finished_at = Job.State.FAILED, timezone.now()
    job.save(update_fields=["errors", "error_count", "state", "finished_at"])
    logger.warning("job %s (%s) failed: %s", job.pk, job.kind, detail)


def job_cancel_locked(job: Job) -> None:
    """Cancel ``job`` and discard what its chunks staged. Precondition: the job's row is locked and it is unfinished.

    Chunks that committed before the lock are discarded here; chunks still running roll themselves back
    (``chunk_run``); a queued job's planning finds it finished.
    """
    kind_for(job.kind).discard(job)
    job.state, job.finished_at = Job.State.CANCELLED, timezone.now()
    job.save(update_fields=["state", "finished_at"])


@dataclass(frozen=True)
class Resumable:
    """An unfinished job and what re-drives it: planning (queued), its pending chunks, or its finish."""

    job_id: int
    plan: bool
    pending: list[int]
    finish: bool


def jobs_resumable() -> list[Resumable]:
    """Every unfinished job with what would move it on; sending all of it again is safe (each step is idempotent)."""
    jobs = list(Job.objects.unfinished().order_by("pk").values_list("pk", "state"))
    pending: dict[int, list[int]] = {}
    chunks = JobChunk.objects.filter(job__state=Job.State.RUNNING, state=JobChunk.State.PENDING).order_by(
        "job", "index"
    )
    for job_id, index in chunks.values_list("job_id", "index"):
        pending.setdefault(job_id, []).append(index)
    return [
        Resumable(job_id, plan=True, pending=[], finish=False)
        if state == Job.State.QUEUED
        else Resumable(job_id, plan=False, pending=pending.get(job_id, []), finish=job_id not in pending)
        for job_id, state in jobs
    ]
