"""A job kind for the runner's tests: adds up ``params["numbers"]``, ``params["per_chunk"]`` at a time.

Each chunk counts the sum of its numbers as its rows, so ``rows_done`` is the total exactly when every chunk ran
once: a chunk run twice would show. ``params["sleep"]`` seconds of ``pg_sleep`` per chunk give a test time to kill the
worker mid-chunk; a chunk whose numbers include ``params["fail_on"]`` raises, as a bug would; a number over 1000 is an
error of its chunk's row; ``params["reject"]`` makes the finish refuse the job; ``params["supplier"]`` makes it
create a supplier of that external id. Each chunk also inserts a row in
``test_sum_staged`` (created by the tests), which ``discard`` deletes: what a cancelled job staged must go.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from emissions.jobs.kinds import ChunkOutcome, JobFailed, Plan
from emissions.models import Job, JobChunk, Supplier


class SumKind:
    def plan(self, job: Job) -> Plan:
        numbers: list[int] = job.params["numbers"]
        if not numbers:
            raise JobFailed("No numbers to add.", [{"field": "numbers", "messages": ["Empty."]}])
        size = job.params.get("per_chunk", 2)
        chunks = [{"numbers": numbers[i : i + size], "first": i} for i in range(0, len(numbers), size)]
        return Plan(chunks, rows_total=sum(numbers))

    def run_chunk(self, job: Job, chunk: JobChunk) -> ChunkOutcome:
        numbers: list[int] = chunk.payload["numbers"]
        with connection.cursor() as cursor:
            if job.params.get("sleep"):
                cursor.execute("SELECT pg_sleep(%s)", [job.params["sleep"]])
            cursor.execute(
                "INSERT INTO test_sum_staged (job_id, chunk, total) VALUES (%s, %s, %s)",
                [job.pk, chunk.index, sum(numbers)],
            )
        if job.params.get("fail_on") in numbers:
            raise RuntimeError(f"cannot add {job.params['fail_on']}")
        errors: list[dict[str, Any]] = [
            {"row": chunk.payload["first"] + i + 1, "field": "numbers", "messages": ["Over 1000."]}
            for i, n in enumerate(numbers)
            if n > 1000
        ]
        return ChunkOutcome(rows=sum(numbers), errors=errors)

    def finish(self, job: Job) -> dict[str, Any]:
        if job.params.get("reject"):
            raise JobFailed("Rejected at finish.")
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*), coalesce(sum(total), 0) FROM test_sum_staged WHERE job_id = %s", [job.pk])
            staged_chunks, total = cursor.fetchone()
        if job.params.get("supplier"):
            # A write to an audited table, for the test that the runner records the job's writes as the job's.
            Supplier.objects.create(organization=job.organization, external_id=job.params["supplier"], name="Sum Ltd")
        return {"total": int(total), "staged_chunks": staged_chunks}

    def discard(self, job: Job) -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM test_sum_staged WHERE job_id = %s", [job.pk])


KIND = SumKind()
