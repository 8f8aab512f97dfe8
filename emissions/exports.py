"""The Scope 3 tables reporters file, from the inventory (``emissions.reports.inventory``), as rows and as CSV or XLSX.

- **ESRS E1-6** (gross Scope 3 GHG emissions, ESRS E1 paragraphs 51 and AR 46): one row per category with results
  (now or in the base year: the rows add up to the total), the total, and the share of the total computed from
  suppliers' or value-chain partners' primary data; with the base year and the change against it when the
  organization has one.
- **CDP Scope 3** (the questionnaire's Scope 3 table): the 15 categories plus "Other (upstream)" and "Other
  (downstream)", each with its evaluation status, t CO2e, methodology, the percentage calculated from supplier data
  and an explanation.

Figures are the inventory's, unchanged: t CO2e with nine decimals (exact to the gram), percentages with two; a
reader rounds for display. The same rows feed every format: JSON (the rows), CSV (a header, then the rows) and XLSX
(one sheet, numbers as numbers).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from emissions.inputs import neutralized

TABLES = ("esrs-e1-6", "cdp-scope-3")
FORMATS = ("json", "csv", "xlsx")
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# CDP's names of the calculation methods (its methodology column), for VCCI's methods.
CDP_METHODS = {
    "supplier_specific": "Supplier-specific method",
    "activity": "Average data method",
    "distance": "Distance-based method",
    "spend": "Spend-based method",
}
# The figures of the inventory (decimal strings): numbers in a sheet.
FIGURE = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def esrs_e1_6(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The ESRS E1-6 Scope 3 table of ``report`` (an inventory): header and rows."""
    header = [
        "Scope 3 category",
        "Gross Scope 3 GHG emissions (t CO2e)",
        "Base year (t CO2e)",
        "% change vs base year",
        "% from primary data",
    ]
    # Every category with results, now or in the base year (one assessed as not relevant that still has some says
    # so): the rows add up to the total row.
    rows = [
        [
            line["label"] + (" (assessed not relevant)" if line["status"] == "not_relevant" else ""),
            line["co2e_t"],
            line["base_year_co2e_t"],
            line["change_pct"],
            line["primary_data_share"],
        ]
        for line in report["categories"]
        if line["count"] or (line["base_year_co2e_t"] is not None and Decimal(line["base_year_co2e_t"]))
    ]
    total = report["total"]
    rows.append(
        [
            "Total gross indirect (Scope 3) GHG emissions",
            total["co2e_t"],
            total["base_year_co2e_t"],
            total["change_pct"],
            total["primary_data_share"],
        ]
    )
    return header, rows


def _cdp_status(line: dict[str, Any]) -> str:
    if line["status"] == "not_relevant":
        return "Not relevant, calculated" if line["count"] else "Not relevant, explanation provided"
    return "Relevant, calculated" if line["count"] else "Relevant, not yet calculated"


def _cdp_explanation(line: dict[str, Any]) -> str:
    if line["status"] == "not_relevant":
        return str(line["explanation"])
    if not line["count"]:
        return "No activity data recorded for the reporting period."
    methods = ", ".join(f"{CDP_METHODS[m['method']]} {m['share']} %" for m in line["methods"])
    quality = line["data_quality"]["emission_weighted"]
    scored = f"; data quality {quality} (1 best, 5 poorest)" if quality is not None else ""
    interval = line["uncertainty"]
    spread = f"; 95 % interval {interval['low_t']}-{interval['high_t']} t" if interval else ""
    return f"{line['count']} records: {methods}{scored}{spread}."


def cdp_scope_3(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The CDP Scope 3 table of ``report`` (an inventory): header and rows (15 categories, then the two "Other")."""
    header = [
        "Scope 3 category",
        "Evaluation status",
        "Emissions in reporting year (metric tons CO2e)",
        "Emissions calculation methodology",
        "Percentage of emissions calculated using data obtained from suppliers or value chain partners",
        "Please explain",
    ]
    rows = []
    for line in report["categories"]:
        methods = "; ".join(CDP_METHODS[m["method"]] for m in line["methods"])
        emissions = line["co2e_t"] if line["count"] else None
        share = line["primary_data_share"] if line["count"] else None
        rows.append([line["label"], _cdp_status(line), emissions, methods or None, share, _cdp_explanation(line)])
    for other in ("Other (upstream)", "Other (downstream)"):
        rows.append([other, "Not evaluated", None, None, None, "VCCI records activities in the 15 categories only."])
    return header, rows


BUILDERS: dict[str, Callable[[dict[str, Any]], tuple[list[str], list[list[Any]]]]] = {
    "esrs-e1-6": esrs_e1_6,
    "cdp-scope-3": cdp_scope_3,
}


def table(report: dict[str, Any], name: str) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of table ``name``. Precondition: ``name`` is one of ``TABLES``."""
    return BUILDERS[name](report)


def _cell(value: Any) -> Any:
    """``value`` for a file a spreadsheet opens: text that would start a formula gets a leading apostrophe (shown
    as typed, never run); figures, including negative ones, stay as they are."""
    if isinstance(value, str) and not FIGURE.fullmatch(value):
        return neutralized(value)
    return value


def as_json(header: list[str], rows: list[list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(header, row, strict=True)) for row in rows]


def as_file(header: list[str], rows: list[list[Any]], *, file_format: str, title: str) -> bytes:
    """The table as a file of ``file_format`` (one of ``FORMATS``): JSON (indented, a final line break), CSV or
    XLSX (one sheet named ``title``)."""
    if file_format == "json":
        return json.dumps(as_json(header, rows), indent=2, cls=DjangoJSONEncoder).encode() + b"\n"
    if file_format == "csv":
        return as_csv(header, rows)
    return as_xlsx(header, rows, title=title)


def as_csv(header: list[str], rows: list[list[Any]]) -> bytes:
    """UTF-8 CSV with a header; an empty cell for a value that does not apply."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([["" if value is None else _cell(value) for value in row] for row in rows])
    return out.getvalue().encode("utf-8")


def as_xlsx(header: list[str], rows: list[list[Any]], *, title: str) -> bytes:
    """One sheet named ``title``: the header in bold, then the rows, figures as numbers (exact decimals)."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title[:31]  # Excel's limit
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append([_number(value) for value in row])
    for cells in sheet.iter_rows(min_row=2):
        for cell in cells:
            if cell.data_type == "f":
                cell.data_type = "s"  # no cell is a formula: text that starts like one is shown as typed
    for column in sheet.columns:
        width = max(len(str(cell.value or "")) for cell in column)
        sheet.column_dimensions[column[0].column_letter].width = min(max(width + 2, 12), 60)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _number(value: Any) -> Any:
    """A figure (the inventory's decimal strings) as a number for the sheet; text stays text (without the control
    characters an XLSX file cannot hold)."""
    if isinstance(value, str) and FIGURE.fullmatch(value):
        return Decimal(value)
    if isinstance(value, str):
        return ILLEGAL_CHARACTERS_RE.sub("", value)
    return value
