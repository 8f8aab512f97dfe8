"""The import job (``emissions.jobs.imports``): step by step in this process, and on a real worker through the API."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import posixpath
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.db.models import Sum
from django.test.utils import override_settings
from django.urls import reverse

from emissions.cache import emission_list_namespaces
from emissions.jobs import imports, runner
from emissions.jobs.imports import imports_storage, job_run_here, parts_folder
from emissions.models import ActivityRecord, Emission, Job, JobChunk, Organization
from emissions.services.bulk import STAGING_TABLES
from emissions.services.imports import import_start
from emissions.services.jobs import job_cancel
from perf.cache import tiered
from tests.emissions.management.test_import_activities import HEADER, electricity_row
from tests.factories import SupplierFactory
from tests.helpers import call_command, unit_of_work
from tests.workers import Worker, wait_for_job

ELECTRICITY = "desnz:7_400_4000_5"  # 0.177 kg CO2e per kWh
DIESEL = "desnz:1_101_1011_8"  # 2.57082 kg CO2e per litre


@pytest.fixture
def factors(electricity_factor: Any, diesel_factor: Any) -> None:
    """The published DESNZ electricity and diesel factors."""


@pytest.fixture
def no_staged_rows(transactional_db: None) -> None:
    """The staging tables empty (the flush between transactional tests does not know them)."""
    with connection.cursor() as cursor:
        for table in STAGING_TABLES.values():
            cursor.execute(f"DELETE FROM {table}")  # a constant table name


def csv_bytes(rows: list[dict[str, str]], header: list[str] | None = None) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=header or HEADER)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def varied_rows(n: int) -> list[dict[str, str]]:
    """``n`` valid rows of electricity (kWh) and diesel (L), amounts 1..n."""
    return [
        electricity_row(
            amount=str(i + 1),
            activity=(ELECTRICITY, DIESEL)[i % 3 == 0],
            unit=("kWh", "L")[i % 3 == 0],
            period_start=f"202{4 + i % 2}-01-01",
            period_end=f"202{4 + i % 2}-01-31",
        )
        for i in range(n)
    ]


def kg(value: Decimal) -> str:
    """kg CO2e as results show them (six places)."""
    return f"{value.quantize(Decimal('0.000001')):f}"


def expected_co2e(n: int) -> Decimal:
    return sum(
        (Decimal(i + 1) * (Decimal("2.57082") if i % 3 == 0 else Decimal("0.177")) for i in range(n)), Decimal(0)
    )


def staged_counts() -> tuple[int, int]:
    with connection.cursor() as cursor:
        counts = []
        for model in (ActivityRecord, Emission):
            cursor.execute(f"SELECT count(*) FROM {STAGING_TABLES[model]}")  # a constant table name
            counts.append(cursor.fetchone()[0])
    return counts[0], counts[1]


def stored_job(organization: Organization, data: bytes, *, chunk_rows: int, dry_run: bool = False) -> Job:
    """An import job of ``data``, created but not submitted: the test drives its steps."""
    upload = imports_storage().save(f"uploads/{organization.pk}/test.csv", ContentFile(data))
    return import_start(organization=organization, upload=upload, dry_run=dry_run, chunk_rows=chunk_rows, submit=False)


def run_here(job: Job) -> Job:
    return job_run_here(job.pk)


def leftovers(upload: str) -> list[str]:
    """What the imports storage still holds of ``upload``: the file itself, its parts folder, the parts in it."""
    storage = imports_storage()
    folder, base = posixpath.split(upload)
    dirs, files = storage.listdir(folder)
    names = sorted(name for name in [*dirs, *files] if name.startswith(base))
    if storage.exists(parts_folder(upload)):
        names += [f"{parts_folder(upload)}/{name}" for name in storage.listdir(parts_folder(upload))[1]]
    return names


def columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        return {column.name for column in connection.introspection.get_table_description(cursor, table)}


@pytest.mark.django_db
def test_the_staging_tables_have_every_column_of_the_real_tables() -> None:
    for model, staged in STAGING_TABLES.items():
        real = columns(model._meta.db_table)
        assert real == {field.column for field in model._meta.concrete_fields}
        assert columns(staged) == real | {"job_id"}, f"migrate {staged} with {model._meta.db_table}"


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_nothing_is_visible_before_the_finish(org: Organization) -> None:
    job = stored_job(org, csv_bytes(varied_rows(7)), chunk_rows=3)
    with unit_of_work():
        planned = runner.job_plan(job.pk)
    assert planned.pending == [0, 1, 2]
    job.refresh_from_db()
    assert (job.rows_total, job.chunks_total) == (7, 3)
    parts = [chunk.payload for chunk in JobChunk.objects.filter(job=job).order_by("index")]
    assert [(part["first_line"], part["rows"]) for part in parts] == [(2, 3), (5, 3), (8, 1)]
    storage = imports_storage()
    assert all(storage.exists(part["file"]) for part in parts)
    for index, staged in zip(planned.pending, (3, 6, 7), strict=True):
        with unit_of_work():
            runner.chunk_run(job.pk, index)
        assert ActivityRecord.objects.count() == 0 and Emission.objects.count() == 0
        assert staged_counts() == (staged, staged)
    with unit_of_work():
        runner.job_finish(job.pk)
    job.refresh_from_db()
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert job.result == {"rows": 7, "co2e_kg": kg(expected_co2e(7)), "valid": True, "dry_run": False}
    assert ActivityRecord.objects.filter(organization=org).count() == 7
    assert Emission.objects.filter(organization=org).aggregate(total=Sum("co2e_kg"))["total"] == expected_co2e(7)
    assert staged_counts() == (0, 0)
    # The upload, its parts and their folder are gone once the finish committed.
    assert leftovers(job.params["file"]) == []
    # Ids were reserved in file order: the activities' ids follow their amounts.
    amounts = list(ActivityRecord.objects.order_by("pk").values_list("amount", flat=True))
    assert amounts == [Decimal(i + 1) for i in range(7)]
    assert set(Emission.objects.values_list("activity_id", flat=True)) == set(
        ActivityRecord.objects.values_list("pk", flat=True)
    )


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_the_finish_invalidates_the_months_and_years_its_rows_start_in(org: Organization) -> None:
    """Rows of January 2024 and January 2025: those months', those years' and the unbounded lists' additions are
    bumped; another month of 2025 and the details (no stored row changed) keep their versions."""
    months = {
        (year, month): emission_list_namespaces(org.pk, dt.date(year, month, 1), dt.date(year, month, 28))
        for year, month in ((2024, 1), (2025, 1), (2025, 2))
    }
    watched = sorted(
        {ns for namespaces in months.values() for ns in namespaces}
        | {
            *emission_list_namespaces(org.pk),
            *emission_list_namespaces(org.pk, dt.date(2024, 1, 1), dt.date(2024, 12, 31)),
            *emission_list_namespaces(org.pk, dt.date(2025, 1, 1), dt.date(2025, 12, 31)),
        },
        key=lambda ns: ns.key,
    )
    before = dict(zip(watched, tiered().versions(watched), strict=True))
    job = run_here(stored_job(org, csv_bytes(varied_rows(4)), chunk_rows=3))
    assert job.state == Job.State.SUCCEEDED, job.errors
    tiered().clear_local()
    after = dict(zip(watched, tiered().versions(watched), strict=True))
    assert {ns.key for ns in watched if before[ns] != after[ns]} == {
        f"org{org.pk}:emissions:{part}"
        for part in ("added", "added:2024", "added:2025", "added:2024-01", "added:2025-01")
    }


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_dry_run_names_each_bad_row_by_its_file_line_across_chunks_and_writes_nothing(org: Organization) -> None:
    rows = varied_rows(9)
    rows[1] = electricity_row(amount="-3")  # line 3, chunk 0
    rows[2] = {**electricity_row(), "external_ref": "two\nlines"}  # lines 4-5, chunk 1
    rows[3] = electricity_row(unit="parsecs")  # line 6 (pushed down by the cell above), chunk 1
    rows[4] = electricity_row(activity="x")  # line 7, chunk 2 (its first row)
    rows[8] = electricity_row(period_end="2024-12-31")  # line 11, chunk 4
    job = run_here(stored_job(org, csv_bytes(rows, header=[*HEADER, "external_ref"]), chunk_rows=2, dry_run=True))
    assert job.state == Job.State.FAILED
    row_errors = [error for error in job.errors if "line" in error]
    assert [(error["line"], error["field"]) for error in row_errors] == [
        (3, "amount"),
        (6, "unit"),
        (7, "activity"),
        (11, "period_end"),
    ]
    assert row_errors[2]["messages"] == ["Unknown activity 'x'."]
    assert job.errors[-1] == {"detail": "4 error(s) in 4 row(s); nothing was written."}
    assert not ActivityRecord.objects.exists()
    assert staged_counts() == (0, 0)


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_byte_order_mark_and_blank_lines_keep_the_line_numbers(org: Organization) -> None:
    lines = csv_bytes([*varied_rows(2), electricity_row(amount="-1"), electricity_row(unit="parsecs")]).split(b"\r\n")
    # Blank lines after the first chunk's rows (lines 4 and 5) begin the second chunk; its rows are on lines 6 and 7.
    data = b"\xef\xbb\xbf" + b"\r\n".join([*lines[:3], b"", b"", *lines[3:]])
    job = run_here(stored_job(org, data, chunk_rows=2, dry_run=True))
    assert [
        (part["first_line"], part["rows"])
        for part in JobChunk.objects.order_by("index").values_list("payload", flat=True)
    ] == [(2, 2), (4, 2)]
    assert [(e["line"], e["field"]) for e in job.errors if "line" in e] == [(6, "amount"), (7, "unit")]


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_valid_dry_run_answers_what_the_file_would_add(org: Organization) -> None:
    job = run_here(stored_job(org, csv_bytes(varied_rows(5)), chunk_rows=2, dry_run=True))
    assert job.state == Job.State.SUCCEEDED
    assert job.result == {"rows": 5, "co2e_kg": kg(expected_co2e(5)), "valid": True, "dry_run": True}
    assert not ActivityRecord.objects.exists()
    assert staged_counts() == (0, 0)


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_one_bad_row_writes_nothing_and_is_listed(org: Organization) -> None:
    rows = varied_rows(6)
    rows[5] = electricity_row(amount="abc")  # line 7, the last chunk: the earlier ones were staged
    job = run_here(stored_job(org, csv_bytes(rows), chunk_rows=2))
    assert job.state == Job.State.FAILED
    assert job.errors == [
        {"line": 7, "field": "amount", "messages": ["A valid number is required."]},
        {"detail": "1 error(s) in 1 row(s); nothing was written."},
    ]
    assert not ActivityRecord.objects.exists() and not Emission.objects.exists()
    assert staged_counts() == (0, 0)  # what the first chunks staged was discarded


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_file_that_is_not_csv_fails_at_the_plan_naming_the_line(org: Organization) -> None:
    lines = csv_bytes(varied_rows(4)).split(b"\r\n")
    lines[4] = b'"' + lines[4]  # the 4th row (line 5) opens a quote never closed
    data = b"\r\n".join(lines)
    job = run_here(stored_job(org, data, chunk_rows=2))
    assert job.state == Job.State.FAILED
    assert job.errors == [
        {"detail": "The file is not valid CSV: line 5: a quoted cell is not closed. Nothing was written."}
    ]
    assert not JobChunk.objects.filter(job=job).exists()
    assert not imports_storage().exists(job.params["file"])


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_planning_that_raises_after_writing_parts_leaves_no_file(org: Organization, monkeypatch: Any) -> None:
    real_parts = imports.file_parts

    def parts_then_a_crash(*args: Any, **kwargs: Any) -> Any:
        yield from itertools.islice(real_parts(*args, **kwargs), 2)
        raise OSError("No space left on device")

    monkeypatch.setattr(imports, "file_parts", parts_then_a_crash)
    job = stored_job(org, csv_bytes(varied_rows(7)), chunk_rows=2)
    with pytest.raises(OSError, match="No space left"):
        run_here(job)
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert not JobChunk.objects.filter(job=job).exists()  # the planning's transaction rolled back...
    assert leftovers(job.params["file"]) == []  # ...and its parts went with the upload when the failure committed


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_job_cancelled_after_its_planning_leaves_no_file(org: Organization) -> None:
    job = stored_job(org, csv_bytes(varied_rows(5)), chunk_rows=2)
    with unit_of_work():
        runner.job_plan(job.pk)
    upload = job.params["file"]
    assert len(leftovers(upload)) == 1 + 1 + 3  # the upload, the parts folder, three parts
    with unit_of_work():
        job_cancel(organization=org, job_id=job.pk)
    assert leftovers(upload) == []


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_supplier_external_ids_of_another_organization_are_refused(org: Organization, other_org: Organization) -> None:
    mine = SupplierFactory.create(organization=org, external_id="MINE")
    SupplierFactory.create(organization=other_org, external_id="THEIRS")
    rows = [electricity_row(supplier_external_id="MINE"), electricity_row(supplier_external_id="THEIRS")]
    job = run_here(stored_job(org, csv_bytes(rows), chunk_rows=1))
    assert job.errors[0] == {
        "line": 3,
        "field": "supplier_external_id",
        "messages": ["No supplier with external_id 'THEIRS' in organization 'acme'."],
    }
    assert not ActivityRecord.objects.exists()
    job = run_here(stored_job(org, csv_bytes(rows[:1]), chunk_rows=1))
    assert job.state == Job.State.SUCCEEDED
    assert ActivityRecord.objects.get().supplier == mine


# -- on a real worker ---------------------------------------------------------------------------------------------


def upload(api: Any, data: bytes, **params: str) -> Job:
    response = api.post(
        reverse("import-list") + ("?dry_run=true" if params.get("dry_run") else ""), data=data, content_type="text/csv"
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def activity_rows(organization: Organization) -> list[tuple[Any, ...]]:
    """What an import stored, without ids and times: per activity its fields and its emission's figures, sorted (chunks
    run in any order on the workers, so ids follow the file's order only within a chunk)."""
    return sorted(
        ActivityRecord.objects.filter(organization=organization).values_list(
            "category",
            "method",
            "activity",
            "amount",
            "unit",
            "period_start",
            "period_end",
            "factor_id",
            "emission__co2e_kg",
            "emission__factor_id",
        )
    )


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_an_upload_is_imported_by_the_worker_as_import_activities_imports_it(
    celery_worker: Worker, api: Any, org: Organization, other_org: Organization, tmp_path: Any
) -> None:
    data = csv_bytes(varied_rows(50))
    with override_settings(JOB_CHUNK_ROWS=7):
        job = upload(api, data)
    assert job.organization == org and job.params["chunk_rows"] == 7
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert (job.chunks_total, job.rows_done) == (8, 50)
    assert job.result == {"rows": 50, "co2e_kg": kg(expected_co2e(50)), "valid": True, "dry_run": False}
    path = tmp_path / "same.csv"
    path.write_bytes(data)
    call_command("import_activities", str(path), "--org", other_org.slug, "--no-progress", stdout=StringIO())
    assert activity_rows(org) == activity_rows(other_org)
    assert len(activity_rows(org)) == 50
    totals = [
        Emission.objects.filter(organization=o).aggregate(total=Sum("co2e_kg"))["total"] for o in (org, other_org)
    ]
    assert totals == [expected_co2e(50)] * 2


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_a_dry_run_upload_on_the_worker_lists_row_errors_and_writes_nothing(celery_worker: Worker, api: Any) -> None:
    rows = varied_rows(10)
    rows[6] = electricity_row(category="99")  # line 8
    with override_settings(JOB_CHUNK_ROWS=3):
        job = wait_for_job(upload(api, csv_bytes(rows), dry_run="true").pk)
    assert job.state == Job.State.FAILED
    assert [(e["line"], e["field"]) for e in job.errors if "line" in e] == [(8, "category")]
    assert not ActivityRecord.objects.exists()
    assert staged_counts() == (0, 0)


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_killed_mid_import_the_job_completes_as_an_undisturbed_run(
    celery_worker: Worker, org: Organization, other_org: Organization
) -> None:
    data = csv_bytes(varied_rows(4000))
    undisturbed = run_here(stored_job(other_org, data, chunk_rows=500))
    assert undisturbed.state == Job.State.SUCCEEDED
    upload_name = imports_storage().save(f"uploads/{org.pk}/killed.csv", ContentFile(data))
    job = import_start(organization=org, upload=upload_name, dry_run=False, chunk_rows=500)

    def a_chunk_is_running() -> bool:
        return JobChunk.objects.filter(job=job, state="pending", attempts__gte=1).exists()

    assert celery_worker.kill_child_running(a_chunk_is_running) == 2
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED, job.errors
    assert job.result == undisturbed.result
    assert (job.chunks_done, job.rows_done) == (8, 4000)
    assert max(JobChunk.objects.filter(job=job).values_list("attempts", flat=True)) >= 2, "".join(celery_worker.output)
    for organization in (org, other_org):
        emissions = Emission.objects.filter(organization=organization)
        assert ActivityRecord.objects.filter(organization=organization).count() == emissions.count() == 4000
        assert emissions.aggregate(total=Sum("co2e_kg"))["total"] == expected_co2e(4000)
    assert activity_rows(org) == activity_rows(other_org)
    # No id twice, every emission on its own activity, nothing left staged.
    ids = list(ActivityRecord.objects.values_list("pk", flat=True))
    assert len(ids) == len(set(ids)) == 8000
    assert Emission.objects.values("activity").distinct().count() == 8000
    assert staged_counts() == (0, 0)


@pytest.mark.usefixtures("no_staged_rows", "factors")
def test_import_activities_async_hands_the_job_to_the_workers(
    celery_worker: Worker, org: Organization, tmp_path: Any
) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(csv_bytes(varied_rows(20)))
    out = StringIO()
    call_command("import_activities", str(path), "--org", org.slug, "--batch-size", "6", "--async", stdout=out)
    job = Job.objects.get()
    assert out.getvalue() == f"Submitted import job {job.pk}.\n"
    job = wait_for_job(job.pk)
    assert job.state == Job.State.SUCCEEDED
    out = StringIO()
    call_command("import_activities", str(path), "--org", org.slug, "--async", "--wait", "--no-progress", stdout=out)
    waited = Job.objects.exclude(pk=job.pk).get()
    assert f"Submitted import job {waited.pk}; waiting for it." in out.getvalue()
    assert f"Imported 20 rows into 'acme': {kg(expected_co2e(20))} kg CO2e" in out.getvalue()
    assert (job.chunks_total, waited.chunks_total) == (4, 1)
    assert ActivityRecord.objects.filter(organization=org).count() == 40
