"""Job writes: submit a job (run by the workers once the submitting transaction commits) and cancel one or several."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, User
from django.db import transaction

from emissions.jobs.runner import job_cancel_locked
from emissions.models import Job, Organization
from emissions.tasks import plan_job


class JobFinishedError(Exception):
    """The job already finished (succeeded, failed or was cancelled): there is nothing to cancel."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"Job {job.pk} is {job.state}; only a queued or running job can be cancelled.")
        self.job = job


@transaction.atomic
def job_submit(
    *, organization: Organization, kind: str, params: dict[str, Any], requested_by: AbstractBaseUser | None = None
) -> Job:
    """Create a queued job and have the workers plan it when this transaction commits (never before: a worker must
    find the job, and a rolled-back submission must run nothing).

    Precondition: ``params`` were validated for ``kind`` by the caller (the kind reads them as they are).
    """
    job = Job.objects.create(
        organization=organization,
        kind=kind,
        params=params,
        requested_by=requested_by if isinstance(requested_by, User) else None,
    )
    plan_job.delay_on_commit(job.pk)
    return job


@transaction.atomic
def job_cancel(*, organization: Organization, job_id: int) -> Job:
    """Cancel the organization's job ``job_id``: what it staged is discarded and nothing of it becomes visible.

    ``Job.DoesNotExist`` for another organization's job (the same as an unknown id); ``JobFinishedError`` when it
    already finished (a finished import or recalculation is undone by another job, not by cancelling).
    """
    job = Job.objects.for_org(organization).select_for_update().get(pk=job_id)
    if job.finished:
        raise JobFinishedError(job)
    job_cancel_locked(job)
    return job


@dataclass(frozen=True)
class JobsCancelled:
    """What ``jobs_cancel`` did: the jobs it cancelled and those it left because they had finished (ids, in order)."""

    cancelled: list[int]
    finished: list[Job]


@transaction.atomic
def jobs_cancel(*, organization: Organization | None, job_ids: Collection[int]) -> JobsCancelled:
    """Cancel several jobs at once, as ``job_cancel`` cancels one: the unfinished ones are cancelled (their staged
    work discarded), the finished ones left and returned. Ids of no job (or of another organization's, when
    ``organization`` is given; ``None``: any organization's, for superusers and operators) are ignored.
    """
    jobs = Job.objects.filter(pk__in=list(job_ids))
    if organization is not None:
        jobs = jobs.for_org(organization)
    cancelled, finished = [], []
    # Locked in id order, as every other locker of several jobs would: two bulk cancels cannot deadlock.
    for job in jobs.select_for_update().order_by("pk"):
        if job.finished:
            finished.append(job)
        else:
            job_cancel_locked(job)
            cancelled.append(job.pk)
    return JobsCancelled(cancelled, finished)
