"""The rollup tables (migration 0015, emissions.rollups): what a group holds, that every write path keeps them equal
to the emissions (the suite-wide check of tests/conftest.py ``_rollups_exact`` runs after every test too), concurrent
writers, the backfill, and which table answers a summary."""

from __future__ import annotations

import datetime as dt
import importlib
import random
import threading
from collections.abc import Callable
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from calculator.types import CalculationInput
from emissions.models import Emission, EmissionRollup, Organization, Supplier, SupplierRollup, SupplierYearRollup
from emissions.rollups import ROLLUP_MODELS, rollup_differences, rollups_flush, summary_rollups, window_grain
from emissions.services.activities import (
    ActivityInput,
    WriteMethod,
    activities_create,
    activity_delete,
    activity_update,
)
from emissions.services.bulk import activities_delete_for_org
from tests.emissions import recalculation_data
from tests.emissions.jobs import test_imports, test_recalculation
from tests.emissions.jobs.test_imports import no_staged_rows  # noqa: F401 (a fixture)
from tests.emissions.management import test_seed_demo
from tests.factories import EmissionFactory, OrganizationFactory, SupplierFactory
from tests.helpers import call_command, unit_of_work

pytestmark = pytest.mark.django_db

migration = importlib.import_module("emissions.migrations.0015_rollups")
ELECTRICITY = "desnz:7_400_4000_5"  # 0.177 kg CO2e per kWh
WRITE_METHODS: tuple[WriteMethod, ...] = ("copy", "bulk_create")
SUMS = ("count", "co2e_kg", "co2e_kg_squares", "biogenic_co2_kg", "biogenic_count")


def groups(model: type[Any], organization: Organization) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """A rollup table's rows of ``organization`` (this transaction's writes applied): key (supplier?, period, end
    period, category, method, quality) -> the sums."""
    rollups_flush()
    keys = ["period", "end_period", "category", "method", "quality_code"]
    if model.HAS_SUPPLIER:
        keys.insert(0, "supplier_id")
    return {
        tuple(row[: len(keys)]): tuple(row[len(keys) :])
        for row in model.objects.for_org(organization).values_list(*keys, *SUMS)
    }


def exact() -> bool:
    count, differences = rollup_differences()
    assert count == 0, differences
    return True


def month(year: int, number: int) -> tuple[dt.date, dt.date]:
    start = dt.date(year, number, 1)
    end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return start, end


# -- what a group holds ----------------------------------------------------------------------------


def test_each_emission_counts_in_its_group_at_every_grain(org: Organization) -> None:
    steel, glass = SupplierFactory.create(organization=org), SupplierFactory.create(organization=org)
    jan, dec = month(2025, 1), month(2024, 12)
    kw = {"organization": org, "category": 1, "method": "activity"}
    EmissionFactory.create(
        **kw, activity__supplier=steel, activity__period_start=jan[0], activity__period_end=jan[1],
        co2e_kg=Decimal("10.5"), biogenic_co2_kg=Decimal("1.25"),
    )  # fmt: skip
    EmissionFactory.create(
        **kw, activity__supplier=steel, activity__period_start=jan[0], activity__period_end=jan[1],
        co2e_kg=Decimal("2.5"), biogenic_co2_kg=None,
    )  # fmt: skip
    # No supplier, a period over two months: its group is (start month, end month).
    EmissionFactory.create(
        **kw, activity__supplier=None, activity__period_start=dt.date(2025, 3, 1),
        activity__period_end=dt.date(2025, 4, 30), co2e_kg=Decimal("4"),
    )  # fmt: skip
    EmissionFactory.create(
        organization=org, activity__supplier=glass, activity__category=4, activity__method="distance",
        activity__period_start=dec[0], activity__period_end=dec[1], co2e_kg=Decimal("7.000001"),
        data_quality={"technology": 3, "time": 2, "geography": 4, "completeness": 2, "reliability": 2, "score": "2.6"},
    )  # fmt: skip
    q = 21122  # EmissionFactory's data quality: technology 2, time 1, geography 1, completeness 2, reliability 2
    a = ("activity", q)
    assert groups(EmissionRollup, org) == {
        (jan[0], jan[0], 1, *a): (2, Decimal("13"), Decimal("116.5"), Decimal("1.25"), 1),
        (dt.date(2025, 3, 1), dt.date(2025, 4, 1), 1, *a): (1, Decimal("4"), Decimal("16"), Decimal("0"), 0),
        (dec[0], dec[0], 4, "distance", 32422): (
            1, Decimal("7.000001"), Decimal("49.000014000001"), Decimal("0"), 0,
        ),
    }  # fmt: skip
    assert groups(SupplierYearRollup, org) == {
        (steel.pk, dt.date(2025, 1, 1), dt.date(2025, 1, 1), 1, *a): (
            2, Decimal("13"), Decimal("116.5"), Decimal("1.25"), 1,
        ),
        (None, dt.date(2025, 1, 1), dt.date(2025, 1, 1), 1, *a): (1, Decimal("4"), Decimal("16"), Decimal("0"), 0),
        (glass.pk, dt.date(2024, 1, 1), dt.date(2024, 1, 1), 4, "distance", 32422): (
            1, Decimal("7.000001"), Decimal("49.000014000001"), Decimal("0"), 0,
        ),
    }  # fmt: skip
    assert len(groups(SupplierRollup, org)) == 3
    assert exact()


def test_a_change_moves_the_emission_between_groups_and_an_emptied_group_goes(org: Organization) -> None:
    first = EmissionFactory.create(organization=org, co2e_kg=Decimal("5"))
    second = EmissionFactory.create(organization=org, activity__supplier=first.supplier, co2e_kg=Decimal("3"))
    [(key, sums)] = groups(EmissionRollup, org).items()
    assert sums[:2] == (2, Decimal("8"))

    Emission.objects.filter(pk=second.pk).update(category=6, co2e_kg=Decimal("3.5"))
    assert {k[2]: v[:2] for k, v in groups(EmissionRollup, org).items()} == {
        1: (1, Decimal("5")),
        6: (1, Decimal("3.5")),
    }
    Emission.objects.filter(pk=first.pk).update(biogenic_co2_kg=Decimal("0.5"))  # same group, new sums
    assert groups(EmissionRollup, org)[key] == (1, Decimal("5"), Decimal("25"), Decimal("0.5"), 1)
    Emission.objects.filter(pk=first.pk).delete()
    assert [k[2] for k in groups(EmissionRollup, org)] == [6]
    assert [k[3] for k in groups(SupplierRollup, org)] == [6]
    assert exact()


def test_an_update_that_changes_no_sum_writes_no_rollup(org: Organization) -> None:
    emission = EmissionFactory.create(organization=org)
    rollups_flush()
    before = list(EmissionRollup.objects.for_org(org).values_list("pk", "count"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'emissions_emissionrollup'")
        (updates_before,) = cursor.fetchone()
        Emission.objects.filter(pk=emission.pk).update(warnings=[{"code": "x", "detail": "y"}])
        rollups_flush()
        cursor.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'emissions_emissionrollup'")
        (updates_after,) = cursor.fetchone()
    assert updates_after == updates_before
    assert list(EmissionRollup.objects.for_org(org).values_list("pk", "count")) == before


def test_truncate_empties_every_rollup_and_drops_the_pending_changes(org: Organization) -> None:
    EmissionFactory.create_batch(3, organization=org)
    rollups_flush()
    EmissionFactory.create(organization=org)  # pending when the table is truncated
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses a table with deferred checks pending
        cursor.execute("TRUNCATE emissions_emission")
    rollups_flush()
    assert not any(model.objects.exists() for model in ROLLUP_MODELS)


def test_the_backfill_sums_what_was_stored_before_the_triggers(org: Organization, other_org: Organization) -> None:
    EmissionFactory.create_batch(3, organization=org, co2e_kg=Decimal("1.5"))
    EmissionFactory.create(organization=other_org, co2e_kg=Decimal("2"))
    expected = {model: (groups(model, org), groups(model, other_org)) for model in ROLLUP_MODELS}
    with connection.cursor() as cursor:
        for model in ROLLUP_MODELS:
            cursor.execute(f"DELETE FROM {model._meta.db_table}")  # a constant table name
        cursor.execute(migration.BACKFILL)
    assert {model: (groups(model, org), groups(model, other_org)) for model in ROLLUP_MODELS} == expected
    assert exact()


@pytest.mark.django_db(transaction=True)
def test_a_transaction_changes_the_rollups_when_it_commits_and_never_when_it_rolls_back() -> None:
    organization = OrganizationFactory.create()
    with transaction.atomic():
        EmissionFactory.create(organization=organization, co2e_kg=Decimal("2"))
        with transaction.atomic():
            EmissionFactory.create(organization=organization, co2e_kg=Decimal("3"))
        try:
            with transaction.atomic():
                EmissionFactory.create(organization=organization, co2e_kg=Decimal("100"))
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert not EmissionRollup.objects.for_org(organization).exists()  # pending until the commit
    assert rollup_total(EmissionRollup, organization) == (2, Decimal("5"))
    with pytest.raises(RuntimeError), transaction.atomic():
        EmissionFactory.create(organization=organization, co2e_kg=Decimal("7"))
        raise RuntimeError("rolled back")
    assert rollup_total(EmissionRollup, organization) == (2, Decimal("5"))
    assert exact()


def test_a_read_inside_the_writing_transaction_sees_its_writes(org: Organization) -> None:
    EmissionFactory.create(organization=org, co2e_kg=Decimal("4"))
    queryset = summary_rollups(org.pk, group_by="category", filters={})
    assert queryset is not None
    assert [(row["total_kg"], row["count"]) for row in queryset.summary("category")] == [(Decimal("4"), 1)]


# -- every write path --------------------------------------------------------------------------


def electricity(kwh: str, start: dt.date, end: dt.date, **calc: Any) -> ActivityInput:
    calculation = CalculationInput(
        category=calc.pop("category", 3), method="activity", activity=ELECTRICITY, amount=Decimal(kwh), unit="kWh",
        **calc,
    )  # fmt: skip
    return ActivityInput(calculation=calculation, period_start=start, period_end=end)


def total(organization: Organization) -> tuple[int, Decimal]:
    """(count, kg CO2e) of the organization's emissions, summed in SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(co2e_kg), 0) FROM emissions_emission WHERE organization_id = %s",
            [organization.pk],
        )
        count, kg = cursor.fetchone()
    return count, kg


def rollup_total(model: type[Any], organization: Organization) -> tuple[int, Decimal]:
    rows = groups(model, organization).values()
    return sum(r[0] for r in rows), sum((r[1] for r in rows), Decimal(0))


@pytest.mark.parametrize("method", ["copy", "bulk_create"])
@pytest.mark.usefixtures("electricity_factor")
def test_the_services_keep_every_rollup_exact(org: Organization, other_org: Organization, method: WriteMethod) -> None:
    supplier = SupplierFactory.create(organization=org)
    jan, feb = month(2025, 1), month(2025, 2)
    with unit_of_work():
        records = activities_create(
            organization=org, items=[electricity(str(n), *(jan if n % 2 else feb)) for n in range(1, 7)], method=method
        )
    with unit_of_work():
        activities_create(organization=other_org, items=[electricity("9", *jan)], method=method)
    assert exact()
    assert rollup_total(EmissionRollup, org) == total(org) == (6, Decimal("3.717"))

    with unit_of_work():
        activity_update(organization=org, activity_id=records[0].pk, changes={"supplier": supplier.pk, "amount": "100"})
    with unit_of_work():
        activity_update(
            organization=org, activity_id=records[1].pk, changes={"category": 1, "period_end": "2025-03-31"}
        )
    with unit_of_work():
        activity_delete(organization=org, activity_id=records[2].pk)
    assert exact()
    assert rollup_total(SupplierRollup, org) == total(org)
    assert {key[0] for key in groups(SupplierYearRollup, org)} == {None, supplier.pk}

    with unit_of_work():
        activities_delete_for_org(organization=org)
    assert exact()
    assert not EmissionRollup.objects.for_org(org).exists()
    assert rollup_total(EmissionRollup, other_org) == total(other_org) == (1, Decimal("1.593"))


@pytest.mark.usefixtures("electricity_factor")
def test_deleting_an_organization_deletes_its_rollups(org: Organization, other_org: Organization) -> None:
    for organization in (org, other_org):
        with unit_of_work():
            activities_create(organization=organization, items=[electricity("10", *month(2025, 5))])
    org.delete()
    rollups_flush()
    assert not EmissionRollup.objects.filter(organization_id=org.pk).exists()
    assert EmissionRollup.objects.for_org(other_org).count() == 1
    assert exact()


def test_api_writes_keep_the_rollups_exact(api: Any, org: Organization, electricity_factor: Any) -> None:
    body = [
        {**electricity_payload(), "period_start": f"2025-{m:02d}-01", "period_end": f"2025-{m:02d}-28"}
        for m in range(1, 4)
    ]
    created = api.post("/api/v1/activities/", body, format="json")
    assert created.status_code == 201, created.content
    activity_id = created.json()[0]["id"]
    assert api.patch(f"/api/v1/activities/{activity_id}/", {"amount": "2"}, format="json").status_code == 200
    assert api.delete(f"/api/v1/activities/{created.json()[1]['id']}/").status_code == 204
    assert exact()
    assert rollup_total(EmissionRollup, org) == total(org) == (2, Decimal("0.531"))


def electricity_payload() -> dict[str, Any]:
    return {"category": 3, "method": "activity", "activity": ELECTRICITY, "amount": "1", "unit": "kWh"}


# -- concurrent writers ----------------------------------------------------------------------------


def in_threads(work: Callable[[int], None], threads: int) -> list[BaseException]:
    """Run ``work(i)`` in ``threads`` threads at once, each with its own connection; the exceptions raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in pool), "a writer hung"
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("electricity_factor")
def test_concurrent_writers_of_the_same_groups_keep_the_rollups_exact() -> None:
    """Writers of one organization's same groups, each transaction writing in two statements in its own random
    order of months, with updates and deletes of each other's committed rows: no deadlock, no lost update."""
    organization = OrganizationFactory.create()
    months = [month(2025, m) for m in (1, 2, 3)]
    removed: list[int] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        for _ in range(8):
            with transaction.atomic():
                for start, end in rng.sample(months, 2):  # two statements, in an order of this thread's
                    activities_create(
                        organization=organization,
                        items=[electricity(str(rng.randint(1, 99)), start, end) for _ in range(3)],
                        method=rng.choice(WRITE_METHODS),
                    )
            mine = list(Emission.objects.for_org(organization).order_by("?").values_list("pk", flat=True)[:2])
            with transaction.atomic():
                # Both rows locked first, in one order (by id), as any writer of several rows must: two threads that
                # picked the same two rows in opposite roles otherwise deadlock on each other's row, rollups or not
                # (seen once in CI). The rollups' own locks are what this test is about.
                list(Emission.objects.filter(pk__in=mine).order_by("pk").select_for_update().values_list("pk"))
                Emission.objects.filter(pk__in=mine[:1]).update(co2e_kg=Decimal(rng.randint(1, 9)), category=6)
                _, deleted = Emission.objects.filter(pk__in=mine[1:]).delete()
            removed.append(deleted.get("emissions.Emission", 0))  # two threads may pick the same row

    errors = in_threads(work, threads=4)
    assert not errors, errors
    assert exact()
    for model in ROLLUP_MODELS:
        assert rollup_total(model, organization) == total(organization)
    assert total(organization)[0] == 4 * 8 * 2 * 3 - sum(removed)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_staged_rows")
def test_check_rollups_exits_zero_after_an_import_job_and_a_recalculation_job(monkeypatch: Any) -> None:
    """The two job finishes: the import's INSERT ... SELECT of its staged rows, the recalculation's UPDATE."""
    organization = OrganizationFactory.create()
    desnz = recalculation_data.desnz_imported()
    electricity = desnz.factors.get(activity=recalculation_data.ELECTRICITY)
    recalculation_data.epa_steel()
    recalculation_data.inventory(organization, electricity)

    imported = test_imports.run_here(
        test_imports.stored_job(organization, test_imports.csv_bytes(test_imports.varied_rows(30)), chunk_rows=7)
    )
    assert imported.state == "succeeded", imported.errors
    assert check_rollups_output() == "Rollups of every organization equal the emissions: 0 differences.\n"

    modified = recalculation_data.modified_imported(monkeypatch)
    before = rollup_total(EmissionRollup, organization)
    job = test_recalculation.run(test_recalculation.make_job(organization, modified, chunk_rows=10))
    assert job.state == "succeeded", job.errors
    assert job.rows_done > 0
    after = rollup_total(EmissionRollup, organization)
    assert after[0] == before[0] and after[1] != before[1]  # the same emissions, other figures
    assert check_rollups_output() == "Rollups of every organization equal the emissions: 0 differences.\n"
    assert after == total(organization)


def check_rollups_output() -> str:
    out = StringIO()
    call_command("check_rollups", stdout=out)  # exit status 1 (a CommandError) on any difference
    return out.getvalue()


# -- which table answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period_from", "period_to", "grain"),
    [
        (None, None, "year"),
        (dt.date(2025, 1, 1), dt.date(2025, 12, 31), "year"),
        (dt.date(2025, 1, 1), None, "year"),
        (dt.date(2025, 4, 1), dt.date(2025, 6, 30), "month"),
        (None, dt.date(2024, 2, 29), "month"),
        (dt.date(2025, 1, 2), None, None),
        (None, dt.date(2025, 6, 29), None),
    ],
)
def test_window_grain(period_from: dt.date | None, period_to: dt.date | None, grain: str | None) -> None:
    assert window_grain(period_from, period_to) == grain


@pytest.mark.parametrize(
    ("group_by", "filters", "model"),
    [
        ("category", {}, EmissionRollup),
        ("month", {"period_from": dt.date(2025, 4, 1), "period_to": dt.date(2025, 6, 30)}, EmissionRollup),
        ("supplier", {}, SupplierYearRollup),
        ("supplier", {"period_from": dt.date(2025, 1, 1), "period_to": dt.date(2025, 12, 31)}, SupplierYearRollup),
        ("supplier", {"period_from": dt.date(2025, 4, 1), "period_to": dt.date(2025, 6, 30)}, SupplierRollup),
        ("month", {"supplier": 7}, SupplierRollup),
        ("category", {"supplier": 7}, SupplierYearRollup),
        ("category", {"period_from": dt.date(2025, 4, 2)}, None),
    ],
)
def test_the_smallest_table_that_can_answer_does(
    org: Organization, group_by: str, filters: dict[str, Any], model: type[Any] | None
) -> None:
    queryset = summary_rollups(org.pk, group_by=group_by, filters=filters)
    assert (None if queryset is None else queryset.model) is model


def test_rollup_reads_off_sum_the_emissions(org: Organization, settings: Any) -> None:
    settings.ROLLUP_READS = False
    assert summary_rollups(org.pk, group_by="category", filters={}) is None


# -- the summaries from the rollups --------------------------------------------------------------------------

factors = test_seed_demo.factors

SUMMARY = "/api/v1/emissions/summary/"
FILTERS = [
    {},
    {"category": "1"},
    {"method": "spend"},
    {"period_from": "{year}-01-01", "period_to": "{year}-12-31"},
    {"period_from": "{year}-04-01", "period_to": "{year}-06-30"},
    {"period_from": "{year}-07-01"},
    {"period_to": "{year}-02-28"},
    {"supplier": "{supplier}"},
    {"supplier": "{supplier}", "period_from": "{year}-01-01", "period_to": "{year}-12-31"},
    {"supplier": "{supplier}", "period_from": "{year}-03-01", "period_to": "{year}-05-31"},
    {"category": "1", "method": "spend", "period_from": "{year}-01-01"},
    {"period_from": "{year}-01-15", "period_to": "{year}-12-31"},  # a bound inside a month: the emissions answer
]


@pytest.fixture
def demo(org: Organization, other_org: Organization, factors: None) -> dict[str, str]:
    """A seeded demo organization (and a neighbour in the same groups); the values the filters name."""
    for organization, seed in ((org, "1"), (other_org, "2")):
        call_command(
            "seed_demo", "--org", organization.slug, "--activities", "400", "--suppliers", "6", "--seed", seed,
            "--end-month", "2025-12", stdout=StringIO(),
        )  # fmt: skip
    supplier = Supplier.objects.for_org(org).order_by("pk")[0]
    # Periods that straddle a window's end: a quarter's, and the year's (in no 2025 window).
    for start, end in ((dt.date(2025, 3, 1), dt.date(2025, 4, 30)), (dt.date(2024, 12, 1), dt.date(2025, 1, 31))):
        EmissionFactory.create(
            organization=org, activity__supplier=supplier, activity__period_start=start, activity__period_end=end
        )
    return {"year": "2025", "supplier": str(supplier.pk)}


def summary(api: Any, params: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = api.get(SUMMARY, params)
    assert response.status_code == 200, response.content
    return response.json(), [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("group_by", ["category", "supplier", "month", "method"])
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "&".join(f"{k}={v}" for k, v in f.items()) or "none")
def test_the_rollups_answer_what_summing_the_emissions_answers(
    api: Any, demo: dict[str, str], settings: Any, group_by: str, filters: dict[str, str]
) -> None:
    settings.CACHE_ENABLED = False  # each answer computed, not one served for the other
    params = {"group_by": group_by, **{key: value.format(**demo) for key, value in filters.items()}}
    settings.ROLLUP_READS = False
    expected, raw_sql = summary(api, params)
    settings.ROLLUP_READS = True
    answer, sql = summary(api, params)
    assert answer == expected
    assert expected["count"] > 0
    aligned = not params.get("period_from", "").endswith("-15")
    assert any("rollup" in statement for statement in sql) is aligned
    assert not any("rollup" in statement for statement in raw_sql)


def test_a_summary_counts_only_the_callers_organization(api: Any, org: Organization, demo: dict[str, str]) -> None:
    answer, _ = summary(api, {"group_by": "category"})
    count, kg = total(org)
    assert answer["count"] == count
    assert answer["total_co2e_kg"] == format(kg.quantize(Decimal("0.000001")), "f")
