"""The recalculation job, step by step in this process: DESNZ 2025 -> a modified 2025 that changes three factors."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from calculator.types import CalculationInput
from emissions.jobs import runner
from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    ExchangeRate,
    FactorDataset,
    Job,
    Organization,
    PriceIndex,
    Restatement,
    RestatementLine,
)
from emissions.services.activities import ActivityInput, activities_create, activity_update
from emissions.services.recalculations import recalculation_params
from tests.emissions import recalculation_data as data
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, MembershipFactory, OrganizationFactory
from tests.helpers import APIClient, unit_of_work
from tests.published import STEEL

pytestmark = pytest.mark.usefixtures("transactional_db")

SCOPE_2025 = {"period_from": dt.date(2025, 1, 1), "period_to": dt.date(2025, 12, 31)}


@pytest.fixture
def desnz_2025() -> FactorDataset:
    return data.desnz_imported()


@pytest.fixture
def org(desnz_2025: FactorDataset) -> Organization:
    organization = OrganizationFactory.create()
    electricity = EmissionFactor.objects.get(dataset=desnz_2025, activity=data.ELECTRICITY)
    data.epa_steel()
    data.inventory(organization, electricity)
    return organization


def member_api(organization: Organization) -> APIClient:
    membership = MembershipFactory.create(organization=organization)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=membership.user).key}")
    return client


def make_job(organization: Organization, target: FactorDataset, **scope: Any) -> Job:
    params = recalculation_params(organization=organization, target_dataset_id=target.pk, **scope)
    return Job.objects.create(organization=organization, kind="recalculation", params=params)


def plan(job: Job) -> list[int]:
    with unit_of_work():
        return runner.job_plan(job.pk).pending


def chunk(job: Job, index: int) -> None:
    with unit_of_work():
        runner.chunk_run(job.pk, index)


def finish(job: Job) -> Job:
    with unit_of_work():
        runner.job_finish(job.pk)
    job.refresh_from_db()
    return job


def run(job: Job) -> Job:
    for index in plan(job):
        chunk(job, index)
    return finish(job)


def in_scope_using(organization: Organization, activities: tuple[str, ...]) -> set[int]:
    return set(
        Emission.objects.for_org(organization)
        .filter(period_start__gte=dt.date(2025, 1, 1), period_end__lte=dt.date(2025, 12, 31))
        .filter(factor__activity__in=activities)
        .values_list("pk", flat=True)
    )


def test_importing_a_new_version_changes_no_stored_emission(org: Organization, monkeypatch: Any) -> None:
    before = data.emission_rows(org)
    modified = data.modified_imported(monkeypatch)
    assert (
        EmissionFactor.objects.filter(dataset=modified).count()
        == EmissionFactor.objects.filter(dataset__source="desnz", dataset__version="2025").count()
    )
    assert data.emission_rows(org) == before


def test_the_restatement_names_exactly_the_emissions_whose_factor_changed(org: Organization, monkeypatch: Any) -> None:
    modified = data.modified_imported(monkeypatch)
    stored = data.emission_rows(org)
    scope_sql = "AND period_start >= %s AND period_end <= %s"
    scope_params = (dt.date(2025, 1, 1), dt.date(2025, 12, 31))
    before_total = data.sql_sum(org, scope_sql, scope_params)
    outside_total = data.sql_sum(org, "AND period_start < %s", (dt.date(2025, 1, 1),))
    api = member_api(org)
    summary_url = "/api/v1/emissions/summary/?group_by=category&period_from=2025-01-01&period_to=2025-12-31"
    old_summary = api.get(summary_url).json()

    job = make_job(org, modified, chunk_rows=10, **SCOPE_2025)
    pending = plan(job)
    assert len(pending) == 8  # 73 emissions to recompute (85 in scope, 12 of them EPA), 10 a chunk
    for index in pending:
        chunk(job, index)
        # Staged, not applied: readers see the stored results until the job commits.
        assert data.emission_rows(org) == stored
        assert api.get(summary_url).json() == old_summary
    assert RestatementLine.objects.filter(restatement_id=job.pk).exists()
    assert not Restatement.objects.filter(pk=job.pk).exists()
    job = finish(job)
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert (job.rows_total, job.rows_done) == (73, 73)

    restatement = Restatement.objects.get(pk=job.pk)
    changed_ids = in_scope_using(org, data.CHANGED)
    assert len(changed_ids) == 12 * 4 + 1  # electricity x 2, diesel, freight a month, and the pinned line
    lines = RestatementLine.objects.filter(restatement=restatement)
    assert {line.emission_id for line in lines} == changed_ids
    assert restatement.emissions_changed == len(changed_ids)
    # Totals: before = a direct SQL sum taken before the job; after = the same sum now.
    after_total = data.sql_sum(org, scope_sql, scope_params)
    assert (restatement.total_before_kg, restatement.total_after_kg) == (before_total, after_total)
    assert after_total != before_total
    assert restatement.change_pct == ((after_total - before_total) * 100 / before_total).quantize(Decimal("0.0001"))
    assert restatement.significant is (abs(restatement.change_pct) >= 5)
    assert restatement.threshold_pct == Decimal(5)
    assert (restatement.emissions_in_scope, restatement.emissions_recalculated) == (85, 73)
    assert restatement.emissions_not_applicable == 12  # the EPA spend lines
    assert job.result["restatement"] == restatement.pk
    # Per category and per supplier: each group's after is its SQL sum now, and the groups add up to the totals.
    for category, totals in restatement.per_category.items():
        assert Decimal(totals["after"]) == data.sql_sum(
            org, f"{scope_sql} AND category = %s", (*scope_params, category)
        )
    for key, totals in restatement.per_supplier.items():
        where = "supplier_id IS NULL" if key == "none" else "supplier_id = %s"
        params = scope_params if key == "none" else (*scope_params, int(key))
        assert Decimal(totals["after"]) == data.sql_sum(org, f"{scope_sql} AND {where}", params)
    for groups in (restatement.per_category, restatement.per_supplier):
        assert sum(Decimal(g["before"]) for g in groups.values()) == before_total
        assert sum(Decimal(g["after"]) for g in groups.values()) == after_total
    assert restatement.per_category["1"]["change_pct"] == "0.0000"  # plastics and steel: unchanged

    # Each changed emission now has the modified factor and x 1.1 its figures; the line keeps what it had.
    emissions = Emission.objects.for_org(org).select_related("factor__dataset").in_bulk(changed_ids)
    for line in lines.select_related("before_factor__dataset", "after_factor__dataset"):
        emission = emissions[line.emission_id]
        assert emission.factor_id == line.after_factor_id and emission.co2e_kg == line.after_co2e_kg
        assert (emission.factor.dataset.version, line.before_factor.dataset.version) == (data.MODIFIED_VERSION, "2025")
        assert (line.before_factor_id, line.before_co2e_kg) == stored[line.emission_id][1:3]
        assert abs(line.after_co2e_kg - line.before_co2e_kg * data.SCALE) <= Decimal("0.000001")
        assert emission.fallbacks == stored[line.emission_id][6]  # same notes, e.g. year_from_period
    # Everything else is as it was: unchanged factors in scope (no new row, no new factor) and 2024.
    for pk, row in data.emission_rows(org).items():
        if pk not in changed_ids:
            assert row == stored[pk]
    assert data.sql_sum(org, "AND period_start < %s", (dt.date(2025, 1, 1),)) == outside_total
    # Caches: the summary shows the new totals once the job has committed.
    new_summary = api.get(summary_url).json()
    assert Decimal(new_summary["total_co2e_kg"]) == after_total != Decimal(old_summary["total_co2e_kg"])


def test_an_organization_threshold_decides_significance(org: Organization, monkeypatch: Any) -> None:
    modified = data.modified_imported(monkeypatch)
    Organization.objects.filter(pk=org.pk).update(restatement_threshold_pct=Decimal("99.5"))
    restatement = Restatement.objects.get(pk=run(make_job(org, modified, **SCOPE_2025)).pk)
    assert (restatement.threshold_pct, restatement.significant) == (Decimal("99.5"), False)
    assert restatement.change_pct is not None and restatement.change_pct > 0


def test_scope_filters_category_and_supplier(org: Organization, monkeypatch: Any) -> None:
    modified = data.modified_imported(monkeypatch)
    s2 = org.suppliers.get(external_id="S2")
    job = run(make_job(org, modified, categories=[4], supplier_ids=[s2.pk], **SCOPE_2025))
    restatement = Restatement.objects.get(pk=job.pk)
    lines = set(RestatementLine.objects.filter(restatement=restatement).values_list("emission_id", flat=True))
    expected = set(
        Emission.objects.for_org(org)
        .filter(period_start__year=2025, category=4, supplier=s2)
        .values_list("pk", flat=True)
    )
    assert lines == expected and len(expected) == 24  # diesel and freight, a month each
    assert list(restatement.per_category) == ["4"] and list(restatement.per_supplier) == [str(s2.pk)]


def test_a_recalculation_against_the_current_version_changes_nothing(org: Organization) -> None:
    stored = data.emission_rows(org)
    current = FactorDataset.objects.get(source="desnz", version="2025")
    api = member_api(org)
    report = api.get("/api/v1/reports/inventory/", {"year": 2025}).json()  # cached
    restatement = Restatement.objects.get(pk=run(make_job(org, current)).pk)
    assert (restatement.emissions_changed, restatement.significant, restatement.change_pct) == (0, False, 0)
    assert restatement.total_before_kg == restatement.total_after_kg == data.sql_sum(org)
    assert data.emission_rows(org) == stored
    # No figure changed, yet the inventory names the new restatement: the cached answer is not served.
    again = api.get("/api/v1/reports/inventory/", {"year": 2025}).json()
    assert [r["id"] for r in again["restatements"]] == [*(r["id"] for r in report["restatements"]), restatement.pk]
    assert again["total"] == report["total"]


def test_an_activity_the_target_cannot_calculate_fails_the_job_and_changes_nothing(
    org: Organization, desnz_2025: FactorDataset
) -> None:
    # A version holding only the electricity factor: diesel, freight, ... cannot be calculated against it.
    partial = FactorDataset.objects.create(source="desnz", version="partial", name="partial", basis_year=2025)
    electricity = EmissionFactor.objects.get(dataset=desnz_2025, activity=data.ELECTRICITY)
    electricity.pk, electricity.dataset, electricity.co2e_per_unit = None, partial, Decimal("0.2")
    electricity.save()
    stored = data.emission_rows(org)
    job = run(make_job(org, partial, **SCOPE_2025))
    assert job.state == Job.State.FAILED
    assert "cannot be recalculated against the target dataset" in job.errors[-1]["detail"]
    diesel = Emission.objects.for_org(org).filter(factor__activity=data.DIESEL, period_start__year=2025)
    named = {error["emission"] for error in job.errors if "emission" in error}
    assert set(diesel.values_list("pk", flat=True)) <= named
    assert next(e for e in job.errors if "emission" in e)["field"] == "dataset_version"
    assert data.emission_rows(org) == stored
    assert not RestatementLine.objects.filter(restatement_id=job.pk).exists()
    assert not Restatement.objects.filter(pk=job.pk).exists()


def test_an_emission_changed_while_the_job_ran_fails_the_finish(org: Organization, monkeypatch: Any) -> None:
    modified = data.modified_imported(monkeypatch)
    job = make_job(org, modified, **SCOPE_2025)
    for index in plan(job):
        chunk(job, index)
    line = RestatementLine.objects.filter(restatement_id=job.pk).first()
    assert line is not None
    Emission.objects.filter(pk=line.emission_id).update(co2e_kg=Decimal("1.5"))
    stored = data.emission_rows(org)
    job = finish(job)
    assert job.state == Job.State.FAILED and "changed while the job ran" in job.errors[-1]["detail"]
    assert data.emission_rows(org) == stored
    assert not RestatementLine.objects.filter(restatement_id=job.pk).exists()


def test_an_edit_keeping_the_figures_between_chunk_and_finish_fails_the_job_naming_it(
    org: Organization, monkeypatch: Any
) -> None:
    modified = data.modified_imported(monkeypatch)
    job = make_job(org, modified, **SCOPE_2025)
    for index in plan(job):
        chunk(job, index)
    # The line pinned to a factor by id: an edit of its category keeps that factor, so its kg and biogenic too.
    pinned = ActivityRecord.objects.get(organization=org, external_ref="pinned-electricity#0")
    emission = Emission.objects.get(activity=pinned)
    line = RestatementLine.objects.get(restatement_id=job.pk, emission_id=emission.pk)
    assert (line.category, line.before_calculated_at) == (3, emission.calculated_at)
    with unit_of_work():
        activity_update(organization=org, activity_id=pinned.pk, changes={"category": 4})
    edited = Emission.objects.get(pk=emission.pk)
    assert edited.category == 4
    assert (edited.factor_id, edited.co2e_kg, edited.biogenic_co2_kg) == (
        line.before_factor_id,
        line.before_co2e_kg,
        line.before_biogenic_co2_kg,
    )
    stored = data.emission_rows(org)
    job = finish(job)
    assert job.state == Job.State.FAILED, job.result
    assert "1 of the 49 emission(s) to restate changed while the job ran" in job.errors[-1]["detail"]
    assert [(error["emission"], error["activity"]) for error in job.errors if "emission" in error] == [
        (emission.pk, pinned.pk)
    ]
    assert data.emission_rows(org) == stored  # nothing applied, the edit's result kept
    assert not Restatement.objects.filter(pk=job.pk).exists()
    assert not RestatementLine.objects.filter(restatement_id=job.pk).exists()


def test_rows_appearing_below_the_planned_bound_are_in_scope_but_not_counted_recalculated(
    org: Organization, monkeypatch: Any
) -> None:
    modified = data.modified_imported(monkeypatch)
    # An import reserves ids before it publishes its rows: a row with an id below the plan's bound appears after
    # the plan (and after the chunk covering its id). Simulated with a row taken away and put back with its id.
    emission = (
        Emission.objects.for_org(org)
        .filter(factor__activity=data.TRANSMISSION, period_start__year=2025)
        .select_related("activity")
        .earliest("pk")
    )
    record = emission.activity
    ids = (emission.pk, record.pk)
    emission.delete()
    record.delete()
    emission.pk, record.pk = ids  # delete() cleared them
    job = make_job(org, modified, chunk_rows=10, **SCOPE_2025)
    for index in plan(job):
        chunk(job, index)
    record.save(force_insert=True)
    emission.save(force_insert=True)
    job = finish(job)
    assert job.state == Job.State.SUCCEEDED, job.errors
    restatement = Restatement.objects.get(pk=job.pk)
    assert job.rows_done == 72
    assert (restatement.emissions_in_scope, restatement.emissions_recalculated) == (85, 72)
    assert job.result["emissions_recalculated"] == 72


def test_cancelling_discards_the_staged_lines(org: Organization, monkeypatch: Any) -> None:
    from emissions.services.jobs import job_cancel

    modified = data.modified_imported(monkeypatch)
    job = make_job(org, modified, chunk_rows=50, **SCOPE_2025)
    chunk(job, plan(job)[0])
    assert RestatementLine.objects.filter(restatement_id=job.pk).exists()
    with unit_of_work():
        job_cancel(organization=org, job_id=job.pk)
    assert not RestatementLine.objects.filter(restatement_id=job.pk).exists()


def test_params_are_validated_naming_each_field(org: Organization) -> None:
    other = OrganizationFactory.create()
    other_dataset = FactorDataset.objects.create(
        source="supplier", version="current", name="theirs", basis_year=2025, organization=other
    )
    foreign_supplier = other.suppliers.create(external_id="X", name="Theirs")
    with pytest.raises(ValidationError) as caught:
        recalculation_params(
            organization=org,
            target_dataset_id=other_dataset.pk,
            period_from=dt.date(2025, 2, 1),
            period_to=dt.date(2025, 1, 1),
            categories=[0, 3],
            supplier_ids=[foreign_supplier.pk],
            source="ecoinvent",
            chunk_rows=0,
        )
    assert set(caught.value.message_dict) == {"dataset", "period_to", "categories", "suppliers", "source", "chunk_rows"}
    desnz = FactorDataset.objects.get(source="desnz", version="2025")
    with pytest.raises(ValidationError) as caught:
        recalculation_params(organization=org, target_dataset_id=desnz.pk, source="epa_supply_chain")
    assert "cannot be recalculated against a dataset of source 'desnz'" in caught.value.message_dict["source"][0]


def test_a_spend_line_is_recalculated_with_the_sets_it_named_and_keeps_their_rows(org: Organization) -> None:
    ExchangeRate.objects.create(set_name="budget", currency="EUR", quote_currency="USD", year=2025, rate="1.2")
    PriceIndex.objects.create(set_name="sector", currency="USD", year=2022, value="100", source="sector index")
    PriceIndex.objects.create(set_name="sector", currency="USD", year=2025, value="120", source="sector index")
    calculation = CalculationInput(
        category=1,
        method="spend",
        amount=Decimal(1000),
        unit="",
        activity="naics:331110",
        currency="EUR",
        spend_year=2025,
        exchange_rate_set="budget",
        price_index_set="sector",
    )
    (record,) = activities_create(
        organization=org, items=[ActivityInput(calculation, dt.date(2025, 5, 1), dt.date(2025, 5, 31), "budget-1")]
    )
    assert (record.exchange_rate_set, record.price_index_set) == ("budget", "sector")
    assert record.emission.co2e_kg == Decimal("787")  # 1000 x 1.2 x 100 / 120 x 0.787
    steel_2023 = FactorDatasetFactory.create(source="epa_supply_chain", version="v1.3.1", basis_year=2022)
    EmissionFactorFactory.create(dataset=steel_2023, **{**STEEL, "co2e_per_unit": Decimal("0.8")})
    job = run(make_job(org, steel_2023, **SCOPE_2025))
    assert job.state == Job.State.SUCCEEDED, job.errors
    emission = Emission.objects.get(activity=record)
    assert emission.co2e_kg == Decimal("800")  # the same sets: 1000 x 1.2 x 100 / 120 x 0.8
    conversion = emission.conversion
    assert conversion is not None
    assert conversion["exchange_rate"]["set"] == "budget"
    assert conversion["price_index"]["set"] == "sector"
    assert conversion["price_index"]["from"]["source"] == "sector index"
    line = RestatementLine.objects.get(emission_id=emission.pk)
    assert line.after_conversion == conversion
