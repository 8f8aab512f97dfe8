"""manage.py import_factors: summary output, progress bar, directory errors and all-or-nothing runs."""

from __future__ import annotations

import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.db import connection

from emissions.importers import desnz, ipcc_gwp
from emissions.models import EmissionFactor, ExchangeRate, FactorDataset, PriceIndex
from emissions.services.reference import SHIPPED_EXCHANGE_RATES, SHIPPED_PRICE_INDEX
from tests.helpers import call_command

DATA = Path(settings.FACTOR_DATA_DIR)

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command("import_factors", *args, stdout=out)
    return out.getvalue()


def test_summary_table_then_unchanged_on_second_run(capsys):
    # Given in reverse order: the command still imports the GWPs first.
    output = _run("--dir", str(DATA), "--source", "epa_hub", "ipcc_gwp")
    assert "IPCC AR5 GWP-100" in output
    assert "US EPA GHG Emission Factors Hub 2024" in output
    hub_line = next(line for line in output.splitlines() if line.startswith("epa_hub"))
    assert "imported" in hub_line
    assert "270" in hub_line
    assert "treatment not applicable (empty cell): 183" in hub_line
    assert "XLSX) skipped" in output
    assert f"Done: {EmissionFactor.objects.count()} factors created." in output
    # The progress bar goes to stderr, never into the summary.
    assert "epa_hub 2024" in capsys.readouterr().err
    assert "factor/s" not in output

    again = _run("--source", "ipcc_gwp", "epa_hub", "--no-progress")
    statuses = [line.split()[-3] for line in again.splitlines() if line.startswith(("ipcc_gwp", "epa_hub"))]
    assert statuses == ["unchanged"] * 6
    assert "Done: 0 factors created." in again
    assert capsys.readouterr().err == ""


def reltuples(table: str) -> float:
    """The planner's row estimate for ``table``, as of its last ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        return cursor.fetchone()[0]


def test_a_run_that_creates_factors_refreshes_their_statistics():
    table = EmissionFactor._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")  # statistics of the empty table: the planner expects no rows
    assert reltuples(table) == 0
    _run("--source", "ipcc_gwp", "--no-progress")
    assert reltuples(table) == EmissionFactor.objects.count() > 0


def test_failing_source_rolls_back_the_whole_run(tmp_path):
    target = tmp_path / ipcc_gwp.FILE
    target.parent.mkdir(parents=True)
    shutil.copyfile(DATA / ipcc_gwp.FILE, target)
    bad = tmp_path / desnz.FILE
    bad.parent.mkdir(parents=True)
    bad.write_text("ID,Scope\n1_1,Scope 1\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"column 'Level 1': missing column in header\nNothing was written\."):
        _run("--dir", str(tmp_path), "--source", "ipcc_gwp", "desnz", "--no-progress")
    assert FactorDataset.objects.count() == 0
    assert EmissionFactor.objects.count() == 0


SHIPPED_RATES_LINE = "Exchange rates (set 'ecb'): 835 rows, 41 currencies, 1999-2025: {}."
SHIPPED_INDEX_LINE = "Price indexes (set 'cpi-u'): 113 rows, 1 currency, 1913-2025: {}."


def test_loads_the_shipped_reference_tables_then_reports_them_unchanged():
    output = _run("--source", "ipcc_gwp", "--no-progress")
    assert SHIPPED_RATES_LINE.format("835 created, 0 updated, 0 unchanged") in output
    assert SHIPPED_INDEX_LINE.format("113 created, 0 updated, 0 unchanged") in output
    assert "Note:" not in output
    assert ExchangeRate.objects.filter(set_name="ecb").count() == 835
    assert PriceIndex.objects.filter(set_name="cpi-u").count() == 113
    assert ExchangeRate.objects.count() + PriceIndex.objects.count() == 835 + 113

    again = _run("--source", "ipcc_gwp", "--no-progress")
    assert SHIPPED_RATES_LINE.format("0 created, 0 updated, 835 unchanged") in again
    assert SHIPPED_INDEX_LINE.format("0 created, 0 updated, 113 unchanged") in again


def test_no_reference_skips_the_reference_tables():
    output = _run("--source", "ipcc_gwp", "--no-progress", "--no-reference")
    assert "Exchange rates" not in output
    assert "Price indexes" not in output
    assert "Note:" not in output
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0
    assert FactorDataset.objects.exists()


def gwp_only(directory: Path) -> None:
    target = directory / ipcc_gwp.FILE
    target.parent.mkdir(parents=True)
    shutil.copyfile(DATA / ipcc_gwp.FILE, target)


def test_missing_reference_folder_is_a_note_not_a_failure(tmp_path):
    gwp_only(tmp_path)
    output = _run("--dir", str(tmp_path), "--source", "ipcc_gwp", "--no-progress")
    notes = [line for line in output.splitlines() if line.startswith("Note: reference/")]
    assert len(notes) == 2
    assert notes[0].startswith(f"Note: {SHIPPED_EXCHANGE_RATES} not found in the data folder")
    assert '"Source: ECB"' in notes[0]
    assert notes[1].startswith(f"Note: {SHIPPED_PRICE_INDEX} not found in the data folder")
    assert "CUUR0000SA0" in notes[1]
    assert all("section 6 of the factor data's SOURCES.md" in note for note in notes)
    assert FactorDataset.objects.exists()
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0


def test_a_bad_reference_row_rolls_back_the_factors_too(tmp_path):
    gwp_only(tmp_path)
    rates = tmp_path / SHIPPED_EXCHANGE_RATES
    rates.parent.mkdir()
    shutil.copyfile(DATA / SHIPPED_EXCHANGE_RATES, rates)
    index = tmp_path / SHIPPED_PRICE_INDEX
    index.write_text("currency,year,value,source\nUSD,2022,292.655,BLS\nUSD,2024,0,BLS\n", encoding="utf-8")
    with pytest.raises(
        CommandError, match=r"bls_cpi_u_annual\.csv: line 3, column 'value': .*\nNothing was written\.$"
    ):
        _run("--dir", str(tmp_path), "--source", "ipcc_gwp", "--no-progress")
    assert FactorDataset.objects.count() == EmissionFactor.objects.count() == 0
    assert ExchangeRate.objects.count() == PriceIndex.objects.count() == 0


def test_missing_or_empty_directory_points_to_sources(tmp_path, settings):
    with pytest.raises(CommandError, match=r"missing or empty.*README's 'Emission-factor data' section"):
        _run("--dir", str(tmp_path / "nowhere"))
    with pytest.raises(CommandError, match="missing or empty"):
        _run("--dir", str(tmp_path))
    settings.FACTOR_DATA_DIR = ""
    with pytest.raises(CommandError, match=r"No factor data directory is configured.*FACTOR_DATA_DIR or pass --dir"):
        _run()


@pytest.mark.django_db(transaction=True)
def test_the_refreshed_statistics_count_the_import_as_analyzed():
    _run("--source", "ipcc_gwp", "--no-progress")
    with connection.cursor() as cursor:
        # Make this backend report everything it still holds, then read the statistics afresh.
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT 1")
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT n_live_tup, n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = %s",
            [EmissionFactor._meta.db_table],
        )
        live, modified = cursor.fetchone()
    # Every imported row was counted before the ANALYZE, so none is left "modified since" it.
    assert (live, modified) == (EmissionFactor.objects.count(), 0)
