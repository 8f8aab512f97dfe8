"""Recalculations run by a real worker: submitted through the service, and with the pool killed mid-chunk."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    FactorDataset,
    Job,
    JobChunk,
    Organization,
    Restatement,
    RestatementLine,
)
from emissions.services.recalculations import recalculation_submit
from tests.emissions import recalculation_data as data
from tests.factories import OrganizationFactory
from tests.helpers import unit_of_work
from tests.workers import Worker, wait_for_job

pytestmark = pytest.mark.usefixtures("transactional_db")

REPEAT = 20  # 20 x 101 activities per organization
CHUNK_ROWS = 400


@pytest.fixture
def twins(monkeypatch: Any) -> tuple[Organization, Organization, FactorDataset]:
    """Two organizations with the same inventory on DESNZ 2025, and the modified 2025 imported afterwards."""
    desnz = data.desnz_imported()
    data.epa_steel()
    electricity = EmissionFactor.objects.get(dataset=desnz, activity=data.ELECTRICITY)
    first, second = OrganizationFactory.create(), OrganizationFactory.create()
    for organization in (first, second):
        data.inventory(organization, electricity, repeat=REPEAT)
    return first, second, data.modified_imported(monkeypatch)


def submit(organization: Organization, target: FactorDataset) -> Job:
    return recalculation_submit(
        organization=organization,
        requested_by=None,
        target_dataset_id=target.pk,
        period_from=dt.date(2025, 1, 1),
        period_to=dt.date(2025, 12, 31),
        chunk_rows=CHUNK_ROWS,
    )


def outcome(organization: Organization, job: Job) -> dict[str, Any]:
    """What a run left, in terms that do not depend on the organization's ids: the restatement, its lines and the
    emissions by activity external ref, the row counts."""
    restatement = Restatement.objects.get(pk=job.pk)
    suppliers = dict(organization.suppliers.values_list("pk", "external_id"))
    refs = dict(ActivityRecord.objects.for_org(organization).values_list("pk", "external_ref"))
    lines = RestatementLine.objects.filter(restatement=restatement)
    return {
        "totals": (restatement.total_before_kg, restatement.total_after_kg, restatement.change_pct),
        "significant": restatement.significant,
        "counts": (
            restatement.emissions_in_scope,
            restatement.emissions_recalculated,
            restatement.emissions_not_applicable,
            restatement.emissions_changed,
        ),
        "per_category": restatement.per_category,
        "per_supplier": {
            suppliers.get(int(k), k) if k != "none" else k: v for k, v in restatement.per_supplier.items()
        },
        "lines": sorted(
            (refs[activity], before, after, version)
            for activity, before, after, version in lines.values_list(
                "activity_id", "before_co2e_kg", "after_co2e_kg", "after_factor__dataset__version"
            )
        ),
        "emissions": sorted(
            (refs[activity], co2e, version)
            for activity, co2e, version in Emission.objects.for_org(organization).values_list(
                "activity_id", "co2e_kg", "factor__dataset__version"
            )
        ),
        "rows": (
            Emission.objects.for_org(organization).count(),
            ActivityRecord.objects.for_org(organization).count(),
            lines.count(),
        ),
    }


def test_killed_mid_chunk_the_recalculation_ends_as_an_undisturbed_one(
    celery_worker: Worker, twins: tuple[Organization, Organization, FactorDataset]
) -> None:
    calm, killed, modified = twins
    undisturbed = wait_for_job(submit(calm, modified).pk)
    assert undisturbed.state == Job.State.SUCCEEDED, undisturbed.errors

    job = submit(killed, modified)

    def a_chunk_is_running() -> bool:
        return JobChunk.objects.filter(job=job, state="pending", attempts__gte=1).exists()

    assert celery_worker.kill_child_running(a_chunk_is_running) == 2
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED, job.errors
    # A chunk was interrupted and ran again; only its last run counted.
    assert max(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) >= 2, "".join(celery_worker.output)
    assert (job.chunks_done, job.rows_done) == (undisturbed.chunks_done, undisturbed.rows_done)
    with unit_of_work():  # one reading of each organization's outcome
        expected = outcome(calm, undisturbed)
    assert expected["counts"][3] == REPEAT * 49  # the changed factors' emissions in 2025
    with unit_of_work():
        assert outcome(killed, job) == expected
