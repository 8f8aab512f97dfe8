"""manage.py export_report: the tables as files or on standard output, and clear errors."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError
from openpyxl import load_workbook

from emissions.models import Organization
from tests.factories import EmissionFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def stored(org: Organization) -> None:
    EmissionFactory.create(
        organization=org, activity__period_start=dt.date(2025, 3, 1), activity__period_end=dt.date(2025, 3, 31),
        co2e_kg=Decimal("1234.5"),
    )  # fmt: skip


def run(*args: str) -> str:
    out = StringIO()
    call_command("export_report", *args, stdout=out)
    return out.getvalue()


@pytest.mark.usefixtures("stored")
def test_csv_and_json_on_standard_output() -> None:
    lines = run("--org", "acme", "--table", "esrs-e1-6", "--year", "2025").splitlines()
    assert lines[1] == "1 Purchased goods and services,1.234500000,,,0.00"
    rows = json.loads(
        run("--org", "acme", "--table", "cdp-scope-3", "--from", "2025-01", "--to", "2025-06", "--format", "json")
    )
    assert len(rows) == 17 and rows[0]["Emissions in reporting year (metric tons CO2e)"] == "1.234500000"


@pytest.mark.usefixtures("stored")
def test_xlsx_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "cdp.xlsx"
    printed = run("--org", "acme", "--table", "cdp-scope-3", "--year", "2025", "--format", "xlsx", "--output", str(out))
    assert "Wrote cdp-scope-3 (17 rows)" in printed
    sheet = load_workbook(out).active
    assert sheet["A2"].value == "1 Purchased goods and services" and sheet["C2"].value == pytest.approx(1.2345)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "nope", "--table", "esrs-e1-6", "--year", "2025"], "no organization with slug 'nope'"),
        (["--org", "acme", "--table", "esrs-e1-6"], "--year: Give year, or month_from and month_to."),
        (["--org", "acme", "--table", "esrs-e1-6", "--from", "2025-13", "--to", "2025-12"], "--from:"),
        (["--org", "acme", "--table", "esrs-e1-6", "--year", "2025", "--format", "xlsx"], "give --output"),
    ],
)
def test_bad_arguments_are_clear_errors(org: Organization, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(*args)
