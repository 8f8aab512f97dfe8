"""The import job: a CSV file of activities (``emissions.imports``) loaded all or nothing, in chunks, by any worker.

``params``: ``file`` (the upload's name in the ``imports`` storage), ``dry_run`` and ``chunk_rows`` (rows per chunk,
fixed when the job is submitted, so that every worker splits alike whatever its own settings).

- **plan** reads the upload once (strictly: a file that is not CSV fails the job naming the line) and writes its
  parts, ``chunk_rows`` rows each with the header and the line their first row starts on, through the same storage,
  so a worker on another machine reads them. The row count is then known.
- **run_chunk** validates and calculates a part's rows (the activity API's serializer and calculator); errors name
  their file line and column. A part without errors, of a job without errors so far, is COPYed into the staging tables
  (``emissions.services.bulk.activity_pairs_stage``) with ids reserved from the real tables' sequences; a part with
  errors stages nothing (the job will fail). The part's kg CO2e and rows in error are kept on its chunk (its payload),
  in the chunk's own transaction.
- **finish** fails the job when any row had an error (nothing was written); a dry run answers the rows and kg CO2e
  the file would add; otherwise the staged rows move into the real tables in one transaction, ids kept.
- **discard** deletes the staged rows; the files go once the job's outcome is committed: the upload and whatever is
  under its parts folder then (listed, not taken from the chunk rows: a planning that failed or was rolled back
  wrote parts no chunk row names).

``job_run_here`` runs a job through the same runner steps in the calling process (``import_activities`` without
``--async``). Every write is an ordinary COPY, INSERT or DELETE, and the real tables are written only by the finish's
``INSERT ... SELECT`` (the staging tables have no triggers): row-level triggers on the real tables see each imported
row once, however often a chunk was run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.utils.module_loading import import_string

from calculator.types import present_kg
from emissions.calculation import FactorResolver
from emissions.imports import ENCODING, BatchValidator, FileProblem, RowError, file_parts, part_rows, text_reader
from emissions.jobs import runner
from emissions.jobs.kinds import ChunkOutcome, JobFailed, Plan
from emissions.models import Job, JobChunk, Organization
from emissions.services.activities import ActivitiesInvalidError, activities_prepare
from emissions.services.bulk import activity_pairs_stage, staged_pairs_discard, staged_pairs_publish

STORAGE = "imports"


def imports_storage() -> Storage:
    """Where uploads and their parts live (``STORAGES["imports"]``): readable by every worker."""
    return storages[STORAGE]


def parts_folder(upload: str) -> str:
    """The storage folder (name prefix) of ``upload``'s parts: only its parts are under it."""
    return f"{upload}.parts"


def part_name(upload: str, index: int) -> str:
    """The storage name of part ``index`` of ``upload``: fixed, so a plan run again overwrites its own parts."""
    return f"{parts_folder(upload)}/{index:06d}.csv"


def upload_delete(upload: str) -> None:
    """Delete ``upload`` and every file under its parts folder, and the folder on a storage that has folders.

    The parts are listed from the storage, not from the job's chunk rows: a planning that raised (or whose
    transaction did not commit) wrote parts that no chunk row names. A file or folder already gone is no error.
    """
    storage = imports_storage()
    folder = parts_folder(upload)
    try:
        _, files = storage.listdir(folder)
    except FileNotFoundError:  # a local folder never created (no part written)
        files = []
    for name in files:
        storage.delete(f"{folder}/{name}")
    storage.delete(folder)  # FileSystemStorage removes the (now empty) folder; object stores have none to remove
    storage.delete(upload)


def _upload_delete_on_commit(upload: str) -> None:
    """``upload_delete`` once the current transaction commits (a rolled-back outcome still needs the files)."""
    transaction.on_commit(lambda: upload_delete(upload))


def error_counts(job: Job) -> tuple[int, int]:
    """(row errors, rows in error) of an import job, from its chunks' counts (the job keeps only the first errors)."""
    errors, rows = 0, 0
    for count, payload in job.chunks.exclude(error_count=0).values_list("error_count", "payload"):
        errors += count
        rows += payload.get("error_rows", 0)
    return errors, rows


class ImportKind:
    """The ``import`` job kind (module docstring); stateless, one instance (``KIND``) serves every job."""

    def plan(self, job: Job) -> Plan:
        storage = imports_storage()
        upload: str = job.params["file"]
        chunks: list[dict[str, Any]] = []
        try:
            with storage.open(upload, "rb") as binary:
                for index, part in enumerate(file_parts(text_reader(binary), job.params["chunk_rows"])):
                    name = part_name(upload, index)
                    if storage.exists(name):  # written by a planning that did not commit
                        storage.delete(name)
                    saved = storage.save(name, ContentFile(part.text.encode(ENCODING)))
                    chunks.append({"file": saved, "first_line": part.first_line, "rows": part.rows})
        except FileProblem as exc:
            # The runner's failure discards the job (``discard``): the upload and its parts go at its commit.
            raise JobFailed(f"{exc} Nothing was written.") from None
        rows = sum(chunk["rows"] for chunk in chunks)
        if not rows:
            raise JobFailed("The file has no data rows.")
        return Plan(chunks, rows_total=rows)

    def run_chunk(self, job: Job, chunk: JobChunk) -> ChunkOutcome:
        payload = chunk.payload
        with imports_storage().open(payload["file"], "rb") as part:
            rows = part_rows(part.read().decode(ENCODING), payload["first_line"])
        # Loaded, not followed from the job: one query per chunk either way, but explicit (no lazy load per chunk).
        organization = Organization.objects.get(pk=job.organization_id)
        validator = BatchValidator(organization, FactorResolver(organization))
        inputs, errors = validator.inputs(rows)
        co2e_kg = Decimal(0)
        try:
            pairs = activities_prepare(
                organization=organization, items=[item for _, item in inputs], resolver=validator.resolver
            )
        except ActivitiesInvalidError as exc:
            for item_error in exc.errors:
                errors.extend(validator.row_errors(inputs[item_error.index][0], item_error.errors))
        else:
            co2e_kg = sum((emission.co2e_kg for _, emission in pairs), Decimal(0))
            # A job with errors fails at its finish: staging more of it would be wasted work.
            if not job.params["dry_run"] and not job.error_count:
                activity_pairs_stage(pairs, job_id=job.pk)
        errors.sort(key=lambda error: error.line)
        # Committed with the chunk's "done" (the runner's transaction), so a chunk run again counts once.
        chunk.payload = {**payload, "co2e_kg": str(co2e_kg), "error_rows": _rows_in_error(errors)}
        JobChunk.objects.filter(pk=chunk.pk).update(payload=chunk.payload)
        return ChunkOutcome(
            rows=len(rows), errors=[error.as_dict() for error in errors[: Job.MAX_ERRORS]], error_count=len(errors)
        )

    def finish(self, job: Job) -> dict[str, Any]:
        errors, error_rows = error_counts(job)
        if errors:
            raise JobFailed(f"{errors} error(s) in {error_rows} row(s); nothing was written.")
        _upload_delete_on_commit(job.params["file"])
        if job.params["dry_run"]:
            payloads = job.chunks.values_list("payload", flat=True)
            co2e_kg = sum((Decimal(payload["co2e_kg"]) for payload in payloads), Decimal(0))
            return {"rows": job.rows_done, "co2e_kg": present_kg(co2e_kg), "valid": True, "dry_run": True}
        rows, co2e_kg = staged_pairs_publish(organization_id=job.organization_id, job_id=job.pk)
        return {"rows": rows, "co2e_kg": present_kg(co2e_kg), "valid": True, "dry_run": False}

    def discard(self, job: Job) -> None:
        staged_pairs_discard(job_id=job.pk)
        _upload_delete_on_commit(job.params["file"])


def _rows_in_error(errors: list[RowError]) -> int:
    return len({error.line for error in errors})


KIND = ImportKind()


def job_run_here(job_id: int, on_step: Callable[[Job], None] = lambda job: None) -> Job:
    """Run a job created but not submitted, in this process, through the runner's steps (the workers' code); return
    it finished. ``on_step(job)`` after the planning and after each chunk (progress). An exception (a bug, the
    database gone) fails the job, its staged work discarded, and is raised again. Each step runs in
    ``JOB_STEP_CONTEXT``, as each would be a task of its own on a worker.
    """
    step: Callable[[], AbstractContextManager[None]] = import_string(settings.JOB_STEP_CONTEXT)
    try:
        with step():
            planned = runner.job_plan(job_id)
            on_step(Job.objects.get(pk=job_id))
        for index in planned.pending:
            with step():
                runner.chunk_run(job_id, index)
                on_step(Job.objects.get(pk=job_id))
        with step():
            runner.job_finish(job_id)
            return Job.objects.get(pk=job_id)
    except Exception as exc:
        runner.job_fail(job_id, f"{type(exc).__name__}: {exc}")
        raise
