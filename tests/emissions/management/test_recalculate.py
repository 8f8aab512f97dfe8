"""manage.py recalculate: in this process by default (no worker), or queued with --async."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
from django.core.management.base import CommandError

from emissions.models import Emission, EmissionFactor, Job, Organization, Restatement, RestatementLine
from tests.emissions import recalculation_data as data
from tests.factories import OrganizationFactory
from tests.helpers import call_command

pytestmark = pytest.mark.usefixtures("transactional_db")


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def org(monkeypatch: Any) -> Organization:
    desnz = data.desnz_imported()
    data.epa_steel()
    organization = OrganizationFactory.create(slug="acme")
    data.inventory(organization, EmissionFactor.objects.get(dataset=desnz, activity=data.ELECTRICITY))
    data.modified_imported(monkeypatch)
    return organization


def test_runs_in_process_and_prints_the_restatement(org: Organization) -> None:
    s2 = org.suppliers.get(external_id="S2")
    args = [
        "--org",
        "acme",
        "--dataset",
        f"desnz:{data.MODIFIED_VERSION}",
        "--from",
        "2025-01-01",
        "--to",
        "2025-12-31",
    ]
    out = run("recalculate", *args, "--category", "4", "--supplier", "S2", "--chunk-rows", "5")
    restatement = Restatement.objects.get()
    assert f"Restatement {restatement.pk} against UK DESNZ GHG Conversion Factors {data.MODIFIED_VERSION}:" in out
    assert "24 emission(s) in scope, 24 recalculated, 0 of another source, 24 changed." in out
    assert f"Total {restatement.total_before_kg} -> {restatement.total_after_kg} kg CO2e" in out
    assert Job.objects.get().chunks_total == 5
    lines = set(RestatementLine.objects.values_list("emission_id", flat=True))
    scope = Emission.objects.filter(category=4, supplier=s2, period_start__gte=dt.date(2025, 1, 1))
    assert lines == set(scope.values_list("pk", flat=True))


def test_async_queues_the_job(org: Organization, monkeypatch: Any) -> None:
    # The task is recorded, not sent: the session's real worker (tests/workers.py), alive once a job test has run,
    # would otherwise take it and run the job while this test's database is being flushed (a deadlock). The jobs
    # tests cover what a worker does with it.
    queued: list[int] = []
    monkeypatch.setattr("emissions.services.jobs.plan_job.delay_on_commit", queued.append)
    out = run("recalculate", "--org", "acme", "--dataset", f"desnz:{data.MODIFIED_VERSION}", "--async")
    job = Job.objects.get()
    assert out.strip().startswith(f"Queued recalculation job {job.pk}")
    assert queued == [job.pk]
    assert job.state == Job.State.QUEUED and not Restatement.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nope", "--dataset", "desnz:2025"], "Unknown organization 'nope'"),
        (["--org", "acme", "--dataset", "desnz:1999"], "No dataset 'desnz:1999' for acme"),
        (["--org", "acme", "--dataset", "desnz:2025", "--supplier", "X9"], "Unknown supplier external id(s): X9"),
        (["--org", "acme", "--dataset", "desnz:2025", "--category", "16"], "categories: Each category"),
        (["--org", "acme", "--dataset", "desnz:2025", "--from", "2025-13-01"], "is not a date"),
    ],
)
def test_bad_arguments_are_errors_naming_them(org: Organization, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("recalculate", *args)
    assert not Job.objects.exists()
