"""The state machine every job goes through, in plain Django: plan, run each chunk once, finish (or fail, or cancel).

Exactly-once comes from the database, not from the broker. A chunk's work and the row that says it is done commit in
one transaction (``chunk_run``): a worker killed mid-chunk rolls the work back with the chunk still pending, and the
broker delivers the message again (``acks_late`` with ``reject_on_worker_lost``); a message delivered twice finds the
chunk done and does nothing. The chunk row is locked while it runs, so two deliveries never run it at once. A chunk
whose process dies every time (out of memory) is not delivered forever: after ``JOB_CHUNK_MAX_ATTEMPTS`` starts the
next delivery fails its job.

The job row is where chunks meet: each chunk's last statement adds its counts to the job *if the job is still
running*. Cancelling (or failing) a job takes the job row's lock and changes its state, so a chunk still running then
finds no running job at its end and rolls back its own work; the cancel's discard sees every chunk committed before
it. The chunk that brings ``chunks_done`` to ``chunks_total`` asks for the finish, and so does any chunk delivered
again once every chunk is done while the job still runs: a process killed between the last chunk's commit and its
request for the finish leaves that message unacknowledged, and its redelivery asks instead. ``job_finish`` is
idempotent, and a worker starting up re-drives every unfinished job (``jobs_resume``), so a message lost between a
commit and its publication delays a job but never strands it.

Every transaction's statement timeout is shorter than the hard time limit of the task running it
(``JOB_CHUNK_STATEMENT_TIMEOUT_MS`` under ``JOB_CHUNK_TIME_LIMIT`` for chunks and failures, ``JOB_STATEMENT_TIMEOUT_MS``
under ``JOB_FINISH_TIME_LIMIT`` for plans and finishes; the settings check both): a statement that runs too long is
cancelled by the server, with its transaction, rather than left running on behind a killed process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.errors import LockNotAvailable

from emissions.audit import apply as audit_apply
from emissions.audit import audit_context
from emissions.jobs.kinds import JobFailed, kind_for
from emissions.models import Job, JobChunk

logger = logging.getLogger(__name__)


# How long recording a job's failure waits for the job row's lock: a backend whose process was killed mid-statement
# may hold it until its statement ends. The job stays unfinished, for the next resume to re-drive.
FAIL_LOCK_TIMEOUT_MS = 10_000


@contextmanager
def job_transaction(*, statement_timeout_ms: int | None = None, lock_timeout_ms: int | None = None) -> Iterator[None]:
    """A transaction with a job's statement timeout (``JOB_STATEMENT_TIMEOUT_MS`` unless given) instead of the
    requests', and a lock timeout when given."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            timeout = settings.JOB_STATEMENT_TIMEOUT_MS if statement_timeout_ms is None else statement_timeout_ms
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout)])
                if lock_timeout_ms is not None:
                    cursor.execute("SELECT set_config('lock_timeout', %s, true)", [str(lock_timeout_ms)])
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
    """Run chunk ``index`` of a running job once; return True when the job is ready to finish (finish it next).

    A chunk already done is not run again; it returns True if every chunk is done and the job still runs (the first
    run may have committed and died before asking for the finish). A chunk of a job no longer running is left alone,
    and a chunk started more than ``JOB_CHUNK_MAX_ATTEMPTS`` times fails its job instead of running (False).
    """
    # Counted outside the chunk's transaction, so that attempts killed mid-chunk still show.
    JobChunk.objects.filter(job_id=job_id, index=index, state=JobChunk.State.PENDING).update(attempts=F("attempts") + 1)
    with job_transaction(statement_timeout_ms=settings.JOB_CHUNK_STATEMENT_TIMEOUT_MS):
        # The chunk's row only (``of``): FOR UPDATE over the join would lock the job's row too, and so run the chunks of
        # a job one at a time however many workers there are. The job row is locked briefly, at the end, to count.
        chunk = JobChunk.objects.select_for_update(of=("self",)).select_related("job").get(job_id=job_id, index=index)
        job = chunk.job
        if chunk.state == JobChunk.State.DONE:
            # Read again: the job joined above may predate the lock this statement waited for.
            return Job.objects.filter(pk=job_id, state=Job.State.RUNNING, chunks_done=F("chunks_total")).exists()
        if job.state != Job.State.RUNNING:
            return False
        exhausted = chunk.attempts > settings.JOB_CHUNK_MAX_ATTEMPTS
        if not exhausted:
            return _chunk_run_locked(job, chunk)
    # Outside the chunk's transaction: the failure takes the job row's lock, with a lock timeout (``job_fail``).
    job_fail(
        job_id,
        f"chunk {index} was started {chunk.attempts - 1} times without finishing (its process died each time: out "
        "of memory, or killed); it is not run again.",
    )
    return False


def _chunk_run_locked(job: Job, chunk: JobChunk) -> bool:
    """Precondition: ``chunk``'s row is locked in the current transaction, pending, and ``job`` was running."""
    with _audited(job):
        outcome = kind_for(job.kind).run_chunk(job, chunk)
    chunk.state, chunk.rows, chunk.finished_at = JobChunk.State.DONE, outcome.rows, timezone.now()
    chunk.error_count = outcome.total_errors
    chunk.errors = _capped(outcome.errors, Job.MAX_ERRORS)
    chunk.save(update_fields=["state", "rows", "finished_at", "error_count", "errors"])
    counted = Job.objects.filter(pk=job.pk, state=Job.State.RUNNING).update(
        chunks_done=F("chunks_done") + 1,
        rows_done=F("rows_done") + outcome.rows,
        error_count=F("error_count") + outcome.total_errors,
    )
    if not counted:
        # Cancelled or failed while this chunk ran: its work must not outlive the discard that already ran.
        transaction.set_rollback(True)
        return False
    done, total = Job.objects.filter(pk=job.pk).values_list("chunks_done", "chunks_total").get()
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
    """Fail an unfinished job for a reason outside its kind's control (a task that kept failing); discards its work.

    Waits at most ``FAIL_LOCK_TIMEOUT_MS`` for the job row: when it is still locked then (by a backend whose process
    died mid-statement), the failure is logged, not recorded, and the job is left to the next resume.
    """
    try:
        with job_transaction(
            statement_timeout_ms=settings.JOB_CHUNK_STATEMENT_TIMEOUT_MS, lock_timeout_ms=FAIL_LOCK_TIMEOUT_MS
        ):
            job = Job.objects.select_for_update().get(pk=job_id)
            if not job.finished:
                _fail_locked(job, detail, [])
    except OperationalError as exc:
        if not isinstance(exc.__cause__, LockNotAvailable):
            raise
        logger.warning("job %s not failed (%s): its row stayed locked; the next resume re-drives it", job_id, detail)


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
