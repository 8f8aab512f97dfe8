"""Recalculation writes: submit a recalculation job (``emissions.jobs.recalculation``), or run one in this process.

Importing a new version of a factor dataset changes no stored result: results keep the factor they were
calculated with. A recalculation is how results move to another version, and the ``Restatement`` it writes is
the record of what that changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, TypedDict, Unpack

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from calculator.rules import CATEGORY_MAX, CATEGORY_MIN, SOURCES
from emissions.jobs.imports import job_run_here
from emissions.models import FactorDataset, Job, Organization, Supplier
from emissions.services.jobs import job_submit

KIND = Job.Kind.RECALCULATION


class ScopeArgs(TypedDict, total=False):
    """The optional arguments of a recalculation (``recalculation_params``): its scope and chunk size."""

    period_from: dt.date | None
    period_to: dt.date | None
    categories: Iterable[int]
    supplier_ids: Iterable[int]
    source: str | None
    chunk_rows: int | None


def target_datasets(organization: Organization) -> Any:
    """The datasets ``organization`` may recalculate against: the public ones and its own."""
    return FactorDataset.objects.filter(Q(organization__isnull=True) | Q(organization=organization))


def recalculation_params(
    *,
    organization: Organization,
    target_dataset_id: int,
    period_from: dt.date | None = None,
    period_to: dt.date | None = None,
    categories: Iterable[int] = (),
    supplier_ids: Iterable[int] = (),
    source: str | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """The job's params, checked: ``ValidationError`` naming each bad field (``dataset``, ``period_to``,
    ``categories``, ``suppliers``, ``source``, ``chunk_rows``)."""
    errors: dict[str, list[str]] = {}
    dataset = target_datasets(organization).filter(pk=target_dataset_id).first()
    if dataset is None:
        errors["dataset"] = [f"Unknown factor dataset {target_dataset_id}."]
    if period_from is not None and period_to is not None and period_to < period_from:
        errors["period_to"] = ["period_to must be on or after period_from."]
    category_list = sorted(set(categories))
    if any(not CATEGORY_MIN <= category <= CATEGORY_MAX for category in category_list):
        errors["categories"] = [f"Each category must be from {CATEGORY_MIN} to {CATEGORY_MAX}."]
    supplier_list = sorted(set(supplier_ids))
    if supplier_list:
        known = set(Supplier.objects.for_org(organization).filter(pk__in=supplier_list).values_list("pk", flat=True))
        if unknown := [pk for pk in supplier_list if pk not in known]:
            # The same message for "does not exist" and "another organization's": no leak.
            errors["suppliers"] = [f"Unknown supplier id(s): {', '.join(map(str, unknown))}."]
    if source:
        if source not in SOURCES:
            errors["source"] = [f"Unknown source '{source}'; expected one of {', '.join(SOURCES)}."]
        elif dataset is not None and source != dataset.source:
            errors["source"] = [
                f"Emissions with a factor of source '{source}' cannot be recalculated against a dataset of source "
                f"'{dataset.source}'; leave source out or give '{dataset.source}'."
            ]
    if chunk_rows is not None and chunk_rows < 1:
        errors["chunk_rows"] = ["chunk_rows must be at least 1."]
    if errors:
        raise ValidationError(errors)
    return {
        "dataset": target_dataset_id,
        "period_from": None if period_from is None else period_from.isoformat(),
        "period_to": None if period_to is None else period_to.isoformat(),
        "categories": category_list,
        "suppliers": supplier_list,
        "source": source or None,
        "chunk_rows": chunk_rows or settings.JOB_CHUNK_ROWS,
    }


@transaction.atomic
def recalculation_submit(
    *,
    organization: Organization,
    requested_by: AbstractBaseUser | None,
    target_dataset_id: int,
    **scope: Unpack[ScopeArgs],
) -> Job:
    """Queue a recalculation of ``organization``'s emissions in the ``scope`` (``ScopeArgs``) against dataset
    ``target_dataset_id`` (public or the organization's own); the workers run it once this transaction commits.

    ``ValidationError`` naming each bad field (``recalculation_params``); nothing is queued then.
    """
    params = recalculation_params(organization=organization, target_dataset_id=target_dataset_id, **scope)
    return job_submit(organization=organization, kind=KIND, params=params, requested_by=requested_by)


def recalculation_run(*, organization: Organization, params: dict[str, Any], requested_by: User | None = None) -> Job:
    """Create a recalculation job and run it to its end in this process, step by step through the runner (what the
    workers would do), without queueing it (``emissions.jobs.imports.job_run_here``). Precondition: ``params`` come
    from ``recalculation_params``.

    Each step commits on its own, as on a worker; the job is returned finished (succeeded or failed).
    """
    job = Job.objects.create(organization=organization, kind=KIND, params=params, requested_by=requested_by)
    return job_run_here(job.pk)
