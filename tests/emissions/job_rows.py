"""Job rows for the tests of how jobs are seen and controlled (API, admin, ``manage.py jobs``), and a stand-in kind.

``stand_in_kinds`` makes this module the implementation of every
built-in kind, so that cancelling an "import" runs ``StandInKind.discard`` (recorded in ``DISCARDED``) in this
process, without the kind's real staging.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from emissions.jobs.kinds import KIND_MODULES, ChunkOutcome, Plan
from emissions.models import Job, JobChunk, Organization

DISCARDED: list[int] = []


class StandInKind:
    def plan(self, job: Job) -> Plan:
        return Plan([{}])

    def run_chunk(self, job: Job, chunk: JobChunk) -> ChunkOutcome:
        return ChunkOutcome(rows=0)

    def finish(self, job: Job) -> dict[str, Any]:
        return {}

    def discard(self, job: Job) -> None:
        DISCARDED.append(job.pk)


KIND = StandInKind()


def stand_in_kinds(settings: Any) -> list[int]:
    """Make ``StandInKind`` run every built-in kind (``settings``: pytest-django's fixture, which restores them);
    return the ids of the jobs it will have discarded."""
    settings.JOB_KIND_MODULES = {**settings.JOB_KIND_MODULES, **dict.fromkeys(KIND_MODULES, __name__)}
    DISCARDED.clear()
    return DISCARDED


def make_job(
    organization: Organization,
    *,
    kind: str = Job.Kind.IMPORT,
    state: str = Job.State.RUNNING,
    requested_by: User | None = None,
    **fields: Any,
) -> Job:
    """A job row as the runner leaves it part-way: running jobs have started, finished ones have ended."""
    now = timezone.now()
    defaults: dict[str, Any] = {}
    if state != Job.State.QUEUED:
        defaults["started_at"] = now - dt.timedelta(seconds=90)
    if state not in Job.UNFINISHED:
        defaults["finished_at"] = now
    return Job.objects.create(
        organization=organization, kind=kind, state=state, requested_by=requested_by, **{**defaults, **fields}
    )
