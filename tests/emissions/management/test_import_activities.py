"""Tests for ``manage.py import_activities``: streamed CSV import, all or nothing."""

from __future__ import annotations

import csv
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from emissions.models import ActivityRecord, Emission, ExchangeRate, Job, Method, Organization
from tests.factories import SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

HEADER = ["category", "method", "activity", "amount", "unit", "supplier_external_id", "period_start", "period_end"]


def electricity_row(**overrides: Any) -> dict[str, str]:
    """1 MWh of UK electricity in January 2025 (177 kg CO2e with the published DESNZ factor)."""
    row = {
        "category": "3",
        "method": "activity",
        "activity": "desnz:7_400_4000_5",
        "amount": "1",
        "unit": "MWh",
        "supplier_external_id": "",
        "period_start": "2025-01-01",
        "period_end": "2025-01-31",
    }
    row.update(overrides)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run(path: Path, *args: str, org: str = "acme") -> str:
    out = StringIO()
    call_command("import_activities", str(path), "--org", org, "--no-progress", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def factors(electricity_factor, steel_factor, diesel_factor) -> None:
    """The published DESNZ electricity and diesel factors and the EPA steel spend factor."""


def test_happy_path_writes_activities_and_emissions(tmp_path, org, factors):
    supplier = SupplierFactory.create(organization=org, external_id="ERP-9")
    rows = [
        electricity_row(),
        electricity_row(supplier_external_id="ERP-9", amount="2"),
        electricity_row(activity="desnz:1_101_1011_8", amount="1", unit="m**3"),
        electricity_row(
            category="1",
            method="spend",
            activity="naics:331110",
            amount="1000",
            unit="",
            period_start="2022-03-01",
            period_end="2022-03-31",
        ),
    ]
    out = run(write_csv(tmp_path / "a.csv", rows))
    assert "Imported 4 rows into 'acme': 3,888.820000 kg CO2e (3.888820000 t)" in out
    assert "rows/s" in out
    assert ActivityRecord.objects.filter(organization=org).count() == 4
    emissions = Emission.objects.filter(organization=org)
    assert emissions.aggregate(total=Sum("co2e_kg"))["total"] == Decimal("177") * 3 + Decimal("2570.82") + Decimal(
        "787"
    )
    assert emissions.get(supplier=supplier).co2e_kg == Decimal("354")
    spend = ActivityRecord.objects.get(method=Method.SPEND)
    assert (spend.currency, spend.unit, spend.spend_year) == ("USD", "USD", 2022)


def test_bad_row_names_its_line_and_field_and_writes_nothing(tmp_path, org, factors):
    rows = [electricity_row() for _ in range(5)]
    rows[2] = electricity_row(amount="-3")  # file line 4 (header is line 1)
    rows[4] = electricity_row(unit="parsecs")  # line 6: only the calculator sees this one
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "bad.csv", rows))
    message = str(exc.value)
    assert message.startswith("2 error(s) in 2 row(s) of ")
    assert "nothing was written" in message
    assert "line 4: amount: Ensure this value is greater than or equal to 0." in message
    assert "line 6: unit: " in message
    assert "parsecs" in message
    assert not ActivityRecord.objects.exists()
    assert not Emission.objects.exists()


def test_line_numbers_count_physical_lines(tmp_path, org, factors):
    path = tmp_path / "multiline.csv"
    rows = [electricity_row(), electricity_row(activity="x"), electricity_row(amount="abc")]
    write_csv(path, rows, header=[*HEADER, "external_ref"])
    # A quoted cell spanning two lines pushes the later rows down one physical line.
    data = path.read_bytes().replace(b"2025-01-31,\r\n", b'2025-01-31,"two\nlines"\r\n', 1)
    path.write_bytes(data)
    with pytest.raises(CommandError) as exc:
        run(path)
    assert "line 4: activity: Unknown activity 'x'." in str(exc.value)
    assert "line 5: amount: A valid number is required." in str(exc.value)


def test_printed_errors_are_capped_with_the_total(tmp_path, org, factors):
    rows = [electricity_row(category="99") for _ in range(60)]
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "many.csv", rows))
    message = str(exc.value)
    assert message.startswith("60 error(s) in 60 row(s)")
    assert message.count(": category: ") == 50
    assert "... and 10 more." in message


def test_dry_run_writes_nothing(tmp_path, org, factors):
    out = run(write_csv(tmp_path / "a.csv", [electricity_row(), electricity_row(amount="3")]), "--dry-run")
    dry_run = "Dry run: 2 rows valid for 'acme'; they would add 708.000000 kg CO2e (0.708000000 t). Nothing was "
    assert dry_run + "written." in out
    assert not ActivityRecord.objects.exists()


def test_dry_run_reports_errors_too(tmp_path, org, factors):
    with pytest.raises(CommandError, match="line 2: period_end"):
        run(write_csv(tmp_path / "a.csv", [electricity_row(period_end="2024-12-31")]), "--dry-run")


def test_unknown_column_is_named(tmp_path, org, factors):
    path = write_csv(tmp_path / "a.csv", [{**electricity_row(), "colour": "red"}], header=[*HEADER, "colour"])
    with pytest.raises(CommandError, match="Unknown column\\(s\\): colour"):
        run(path)
    assert not ActivityRecord.objects.exists()


def test_missing_required_column_is_named(tmp_path, org, factors):
    header = [name for name in HEADER if name != "period_end"]
    row = {key: value for key, value in electricity_row().items() if key != "period_end"}
    with pytest.raises(CommandError, match="Missing required column\\(s\\): period_end"):
        run(write_csv(tmp_path / "a.csv", [row], header=header))


def test_extra_cells_are_a_row_error(tmp_path, org, factors):
    path = write_csv(tmp_path / "a.csv", [electricity_row()])
    path.write_text(path.read_text() + "3,activity,desnz:7_400_4000_5,1,MWh,,2025-01-01,2025-01-31,surplus\r\n")
    with pytest.raises(CommandError, match="line 3: \\(row\\): 1 more cell"):
        run(path)


@pytest.mark.parametrize("supplier_cell", ["", ","])
def test_a_row_shorter_than_the_header_is_a_row_error(tmp_path, org, factors, supplier_cell):
    # Without the supplier_external_id cell, or with it but without the period's two.
    path = write_csv(tmp_path / "a.csv", [electricity_row()])
    path.write_text(path.read_text() + f"3,activity,desnz:7_400_4000_5,1,MWh{supplier_cell}\r\n")
    missing = 3 if not supplier_cell else 2
    with pytest.raises(CommandError) as exc:
        run(path)
    message = str(exc.value)
    assert f"line 3: (row): {missing} fewer cell(s) than the header has columns." in message
    assert "nothing was written" in message
    assert not ActivityRecord.objects.exists()


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        # Line 3 opens a quote that never closes: the rest of the file would be one cell.
        (b"2025-01-31\r\n3,", b'2025-01-31\r\n"3,', 3),
        # The last cell of line 2 opens one: lines 3 and 4 would be its text.
        (b",2025-01-31\r\n", b',"2025-01-31\r\n', 2),
    ],
)
def test_an_unterminated_quote_names_its_line_and_writes_nothing(tmp_path, org, factors, old, new, line):
    path = write_csv(tmp_path / "a.csv", [electricity_row(), electricity_row(), electricity_row()])
    path.write_bytes(path.read_bytes().replace(old, new, 1))
    with pytest.raises(CommandError) as exc:
        run(path, "--batch-size", "1")
    message = str(exc.value)
    assert f"line {line}: a quoted cell is not closed" in message
    assert "Nothing was written." in message
    assert not ActivityRecord.objects.exists()


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+1", "@SUM(A1)", "-"])
def test_external_ref_a_spreadsheet_would_run_is_a_row_error(tmp_path, org, factors, text):
    header = [*HEADER, "external_ref"]
    rows = [{**electricity_row(), "external_ref": "INV-1"}, {**electricity_row(), "external_ref": text}]
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "a.csv", rows, header=header))
    assert "line 3: external_ref: Must not start with" in str(exc.value)
    assert not ActivityRecord.objects.exists()


def test_an_amount_with_underscores_is_a_row_error(tmp_path, org, factors):
    with pytest.raises(CommandError, match=r"line 2: amount: A valid number is required\."):
        run(write_csv(tmp_path / "a.csv", [electricity_row(amount="1_000")]))
    assert not ActivityRecord.objects.exists()


def test_unknown_org_and_missing_file(tmp_path, org):
    path = write_csv(tmp_path / "a.csv", [electricity_row()])
    with pytest.raises(CommandError, match="No organization with slug 'nope'"):
        run(path, org="nope")
    with pytest.raises(CommandError, match="No such file"):
        run(tmp_path / "missing.csv")


def test_supplier_mapping_by_external_id(tmp_path, org, other_org, factors):
    mine = SupplierFactory.create(organization=org, external_id="MINE")
    SupplierFactory.create(organization=other_org, external_id="THEIRS")
    rows = [electricity_row(supplier_external_id="MINE"), electricity_row(supplier_external_id="THEIRS")]
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "a.csv", rows))
    assert "line 3: supplier_external_id: No supplier with external_id 'THEIRS' in organization 'acme'." in str(
        exc.value
    )
    assert not ActivityRecord.objects.exists()
    run(write_csv(tmp_path / "b.csv", rows[:1]))
    assert ActivityRecord.objects.get().supplier == mine


def test_supplier_specific_errors_name_the_external_id_column(tmp_path, org, factors):
    SupplierFactory.create(organization=org, external_id="S")
    row = electricity_row(method="supplier_specific", activity="", supplier_external_id="S")
    with pytest.raises(CommandError, match=r"line 2: (supplier_external_id|activity)"):
        run(write_csv(tmp_path / "a.csv", [row]))


def import_queries(path: Path, batch_size: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        run(path, "--batch-size", str(batch_size))
    return len(queries)


def test_large_file_in_batches_costs_queries_per_batch_not_per_row(tmp_path, org, factors, cold_cache):
    SupplierFactory.create(organization=org, external_id="A")
    SupplierFactory.create(organization=org, external_id="B")

    def rows(n: int) -> list[dict[str, str]]:
        return [
            electricity_row(
                supplier_external_id="AB"[i % 2],
                amount=str(i + 1),
                activity=("desnz:7_400_4000_5", "desnz:1_101_1011_8")[i % 3 == 0],
                unit=("kWh", "L")[i % 3 == 0],
            )
            for i in range(n)
        ]

    # Three batches either way: 30 rows of 10, then 3,000 rows of 1,000.
    small = import_queries(write_csv(tmp_path / "small.csv", rows(30)), 10)
    assert ActivityRecord.objects.count() == 30
    cold_cache()  # the second import would otherwise find the first one's factor lookups cached
    large = import_queries(write_csv(tmp_path / "large.csv", rows(3000)), 1000)
    assert ActivityRecord.objects.count() == 3030
    # Same batch count, 100x the rows, the same queries: a handful per batch (one pass), none per row. Each batch is a
    # chunk of the import job now: its own transaction, locking and counting the chunk, besides the batch's work.
    assert large == small
    assert large <= 30 * 3
    total = Emission.objects.filter(organization=org).aggregate(total=Sum("co2e_kg"))["total"]
    expected = sum(
        Decimal(i + 1) * (Decimal("2.57082") if i % 3 == 0 else Decimal("0.177")) for r in (30, 3000) for i in range(r)
    )
    assert total == expected


def staged_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM emissions_activityrecord_staged) + "
            "(SELECT count(*) FROM emissions_emission_staged)"
        )
        return int(cursor.fetchone()[0])


def test_a_failure_in_a_later_batch_leaves_nothing(tmp_path, org, factors, monkeypatch):
    """A failure while staging a later batch fails the job: nothing is visible, and what was staged is discarded."""
    from emissions.jobs import imports

    calls = {"n": 0}
    original = imports.activity_pairs_stage

    def failing_on_third(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        original(*args, **kwargs)

    monkeypatch.setattr(imports, "activity_pairs_stage", failing_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        run(write_csv(tmp_path / "a.csv", [electricity_row() for _ in range(25)]), "--batch-size", "10")
    assert calls["n"] == 3
    assert not ActivityRecord.objects.exists()
    assert staged_count() == 0
    job = Job.objects.get()
    assert job.state == Job.State.FAILED
    assert job.errors == [{"detail": "RuntimeError: disk full"}]


def test_organization_scope(tmp_path, org, other_org, factors):
    run(write_csv(tmp_path / "a.csv", [electricity_row()]), org=other_org.slug)
    assert ActivityRecord.objects.get().organization == other_org
    assert not Organization.objects.get(pk=org.pk).activities.exists()


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> dict[str, int]:
    """Wrap ``owner.name`` so each call is counted in the returned dict's ``"n"``."""
    calls = {"n": 0}
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_every_row_is_calculated_once(tmp_path, org, factors, monkeypatch):
    from emissions.services import activities

    calculations = count_calls(monkeypatch, activities, "calculate_in_period")
    run(write_csv(tmp_path / "a.csv", [electricity_row() for _ in range(25)]), "--batch-size", "10")
    assert calculations["n"] == 25
    assert ActivityRecord.objects.count() == 25


def test_error_in_a_later_batch_writes_nothing_and_every_error_is_reported(tmp_path, org, factors, monkeypatch):
    """Batches before the first error are staged then discarded; after it nothing is staged, all is checked."""
    from emissions.jobs import imports
    from emissions.services import activities

    stages = count_calls(monkeypatch, imports, "activity_pairs_stage")
    calculations = count_calls(monkeypatch, activities, "calculate_in_period")
    rows = [electricity_row() for _ in range(40)]
    rows[14] = electricity_row(unit="parsecs")  # line 16, batch 2: only the calculator sees it
    rows[25] = electricity_row(amount="-1")  # line 27, batch 3: the serializer
    rows[37] = electricity_row(activity="x")  # line 39, batch 4: the calculator
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "a.csv", rows), "--batch-size", "10")
    message = str(exc.value)
    assert message.startswith("3 error(s) in 3 row(s) of ")
    assert "line 16: unit: " in message
    assert "line 27: amount: " in message
    assert "line 39: activity: Unknown activity 'x'." in message
    # Batch 1 staged; batch 2 has an error, so it stages nothing, nor do batches 3 and 4: they are only calculated.
    assert stages["n"] == 1
    assert calculations["n"] == 40 - 1  # the serializer already rejected line 27
    assert not ActivityRecord.objects.exists()
    assert not Emission.objects.exists()
    assert staged_count() == 0


def test_dry_run_never_writes(tmp_path, org, factors, monkeypatch):
    from emissions.jobs import imports

    stages = count_calls(monkeypatch, imports, "activity_pairs_stage")
    out = run(write_csv(tmp_path / "a.csv", [electricity_row() for _ in range(5)]), "--dry-run", "--batch-size", "2")
    assert "Dry run: 5 rows valid" in out
    assert stages["n"] == 0
    assert not ActivityRecord.objects.exists()


def test_progress_bar_follows_the_rows_done(tmp_path, org, factors, monkeypatch, capsys):
    from emissions.management.commands import import_activities as command

    bars: list[Any] = []

    class RecordingBar(command.tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.positions: list[float] = []
            bars.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            self.positions.append(self.n)
            return shown

    monkeypatch.setattr(command, "tqdm", RecordingBar)
    path = write_csv(tmp_path / "a.csv", [electricity_row() for _ in range(30)])
    out = StringIO()
    call_command("import_activities", str(path), "--org", "acme", "--batch-size", "10", stdout=out)
    assert "Imported 30 rows" in out.getvalue()
    (bar,) = bars
    # The total is the file's row count (known once the job has split the file), the position each chunk's end.
    assert bar.total == 30
    assert sorted(set(bar.positions)) == [0, 10, 20, 30]
    assert bar.positions[-1] == 30
    assert "importing" in capsys.readouterr().err


def test_empty_file_has_no_data_rows(tmp_path, org, factors):
    with pytest.raises(CommandError, match="has no data rows"):
        run(write_csv(tmp_path / "a.csv", []))


def test_spend_rows_name_their_reference_sets_and_keep_the_rows_used(tmp_path, org, factors):
    ExchangeRate.objects.create(set_name="budget", currency="EUR", quote_currency="USD", year=2022, rate="1.2")
    header = [*HEADER, "currency", "spend_year", "exchange_rate_set"]
    spend = {"category": "1", "method": "spend", "activity": "naics:331110", "amount": "1000", "unit": ""}
    rows = [
        electricity_row(**spend, currency="EUR", spend_year="2022", exchange_rate_set="budget"),
        electricity_row(**spend, currency="EUR", spend_year="2022", exchange_rate_set="nope"),
    ]
    with pytest.raises(CommandError) as exc:
        run(write_csv(tmp_path / "bad.csv", rows, header))
    assert "line 3: exchange_rate_set: No exchange-rate set 'nope' is loaded" in str(exc.value)
    assert not ActivityRecord.objects.exists()
    run(write_csv(tmp_path / "good.csv", rows[:1], header))
    record = ActivityRecord.objects.get(organization=org)
    assert record.exchange_rate_set == "budget"
    assert record.emission.co2e_kg == Decimal("944.4")  # 1000 x 1.2 x 0.787
    assert record.emission.conversion["exchange_rate"]["set"] == "budget"
