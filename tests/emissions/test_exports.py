"""emissions.exports: the ESRS E1-6 and CDP Scope 3 tables from an inventory, as rows, CSV and XLSX."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from openpyxl import load_workbook

from emissions import exports
from emissions.models import CategoryExclusion, Organization
from emissions.reports import inventory
from tests.factories import EmissionFactory

pytestmark = pytest.mark.django_db

PRIMARY = {"technology": 1, "time": 1, "geography": 1, "completeness": 2, "reliability": 1, "score": "1.2"}


@pytest.fixture
def report(org: Organization) -> dict[str, Any]:
    def emission(kg: str, category: int, **kwargs: Any) -> None:
        start = dt.date(2025, 5, 1)
        EmissionFactory.create(
            organization=org, activity__category=category, activity__period_start=start,
            activity__period_end=dt.date(2025, 5, 31), co2e_kg=Decimal(kg), **kwargs,
        )  # fmt: skip

    emission("1500", 1)
    emission("500", 1, activity__method="supplier_specific", data_quality=PRIMARY)
    emission("250.5", 6, activity__method="distance")
    CategoryExclusion.objects.create(organization=org, category=14, explanation="No franchises.")
    return inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 12, 31), draws=500)


def test_esrs_lists_the_significant_categories_and_the_total_with_the_primary_share(report: dict[str, Any]) -> None:
    header, rows = exports.esrs_e1_6(report)
    assert header[:2] == ["Scope 3 category", "Gross Scope 3 GHG emissions (t CO2e)"]
    assert rows == [
        ["1 Purchased goods and services", "2.000000000", None, None, "25.00"],
        ["6 Business travel", "0.250500000", None, None, "0.00"],
        ["Total gross indirect (Scope 3) GHG emissions", "2.250500000", None, None, "22.22"],
    ]


def test_cdp_lists_every_category_with_its_status_and_the_two_others(report: dict[str, Any]) -> None:
    header, rows = exports.cdp_scope_3(report)
    assert header[1] == "Evaluation status"
    assert len(rows) == 17 and [row[0] for row in rows[-2:]] == ["Other (upstream)", "Other (downstream)"]
    by_name = {row[0]: row for row in rows}
    purchased = by_name["1 Purchased goods and services"]
    assert purchased[1:5] == [
        "Relevant, calculated",
        "2.000000000",
        "Average data method; Supplier-specific method",
        "25.00",
    ]
    assert purchased[5].startswith("2 records: Average data method 75.00 %, Supplier-specific method 25.00 %")
    assert by_name["14 Franchises"][1:] == ["Not relevant, explanation provided", None, None, None, "No franchises."]
    assert by_name["2 Capital goods"][1:3] == ["Relevant, not yet calculated", None]


def test_csv_and_xlsx_carry_the_same_rows(report: dict[str, Any]) -> None:
    header, rows = exports.esrs_e1_6(report)
    parsed = list(csv.reader(io.StringIO(exports.as_csv(header, rows).decode("utf-8"))))
    assert parsed[0] == header
    assert parsed[1] == ["1 Purchased goods and services", "2.000000000", "", "", "25.00"]
    sheet = load_workbook(io.BytesIO(exports.as_xlsx(header, rows, title="esrs-e1-6"))).active
    assert sheet.title == "esrs-e1-6"
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert values[0] == header
    assert values[3][0] == "Total gross indirect (Scope 3) GHG emissions"
    assert values[3][1] == pytest.approx(2.2505) and isinstance(values[3][1], float)  # a number, not text
    assert exports.as_json(header, rows)[0]["% from primary data"] == "25.00"


def test_text_that_would_start_a_formula_is_written_as_text(org: Organization) -> None:
    CategoryExclusion.objects.create(organization=org, category=15, explanation='=HYPERLINK("http://x","y")')
    report = inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 12, 31), draws=500)
    header, rows = exports.cdp_scope_3(report)
    parsed = list(csv.reader(io.StringIO(exports.as_csv(header, rows).decode("utf-8"))))
    assert parsed[15][5] == '\'=HYPERLINK("http://x","y")'
    sheet = load_workbook(io.BytesIO(exports.as_xlsx(header, rows, title="cdp"))).active
    assert sheet.cell(row=16, column=6).value == '=HYPERLINK("http://x","y")'  # shown as typed...
    assert sheet.cell(row=16, column=6).data_type == "s"  # ...as a string, not a formula
    assert exports.as_csv(["change"], [["-46.67"]]).decode().splitlines()[1] == "-46.67"  # a figure stays a figure


def test_an_excluded_category_with_results_is_a_row_so_the_rows_add_up(org: Organization) -> None:
    start, end = dt.date(2025, 5, 1), dt.date(2025, 5, 31)
    for category in (1, 8):
        EmissionFactory.create(
            organization=org, activity__category=category, activity__period_start=start, activity__period_end=end,
            co2e_kg=Decimal("1000"),
        )  # fmt: skip
    CategoryExclusion.objects.create(organization=org, category=8, explanation="Leases ended in 2024.")
    report = inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 12, 31), draws=500)
    _, rows = exports.esrs_e1_6(report)
    assert [(row[0], row[1]) for row in rows] == [
        ("1 Purchased goods and services", "1.000000000"),
        ("8 Upstream leased assets (assessed not relevant)", "1.000000000"),
        ("Total gross indirect (Scope 3) GHG emissions", "2.000000000"),
    ]
    _, cdp = exports.cdp_scope_3(report)
    assert cdp[7][1] == "Not relevant, calculated"


def test_control_characters_are_left_out_of_a_sheet() -> None:
    sheet = load_workbook(io.BytesIO(exports.as_xlsx(["note"], [["Reason\x0bmore"]], title="t"))).active
    assert sheet["A2"].value == "Reasonmore"


def test_an_explanation_that_a_spreadsheet_would_run_is_refused(org: Organization) -> None:
    for text in ("=1+1", "@SUM(A1)", "Reason\x0bmore"):
        with pytest.raises(ValidationError):
            CategoryExclusion(organization=org, category=9, explanation=text).full_clean()
    CategoryExclusion(organization=org, category=9, explanation="Not relevant:\nno downstream transport.").full_clean()
