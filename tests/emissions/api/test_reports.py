"""GET /api/v1/reports/inventory/: periods and their errors, tenancy, roles, a constant query count, caching."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from openpyxl import load_workbook

from emissions import exports
from emissions.models import CategoryExclusion, Membership, Organization
from tests.emissions.api.test_permissions import member_api
from tests.factories import EmissionFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/reports/inventory/"


def emissions(org: Organization, n: int, *, year: int = 2025) -> None:
    for i in range(n):
        start = dt.date(year, 1 + i % 12, 1)
        EmissionFactory.create(
            organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=27),
            activity__category=1 + i % 5, co2e_kg=Decimal(i + 1),
        )  # fmt: skip


def test_a_year_or_a_window_of_whole_months(api: Any, org: Organization) -> None:
    emissions(org, 12)
    by_year = api.get(URL, {"year": 2025})
    assert by_year.status_code == 200, by_year.content
    body = by_year.json()
    assert (body["period_from"], body["period_to"]) == ("2025-01-01", "2025-12-31")
    assert body["total"]["co2e_kg"] == "78.000000" and body["total"]["count"] == 12
    assert len(body["categories"]) == 15
    quarter = api.get(URL, {"month_from": "2025-01", "month_to": "2025-03"}).json()
    assert (quarter["period_from"], quarter["period_to"]) == ("2025-01-01", "2025-03-31")
    assert quarter["total"]["co2e_kg"] == "6.000000"  # January to March: 1 + 2 + 3


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({}, "year", "Give year, or month_from and month_to."),
        ({"year": "2025", "month_from": "2025-01"}, "year", "not both"),
        ({"year": "twenty"}, "year", "A valid integer is required."),
        ({"year": "1800"}, "year", "greater than or equal to 1900"),
        ({"month_from": "2025-13", "month_to": "2025-12"}, "month_from", "does not match"),
        ({"month_from": "2025-01-01", "month_to": "2025-12"}, "month_from", "does not match"),
        ({"month_from": "2025-06", "month_to": "2025-01"}, "month_to", "month_from or later"),
        ({"month_to": "2025-01"}, "month_from", "Required with month_to."),
        ({"year": "2025", "group_by": "x"}, "group_by", "Unknown field."),
    ],
)
def test_a_bad_period_is_a_400_naming_the_field(api: Any, params: dict[str, str], field: str, message: str) -> None:
    response = api.get(URL, params)
    assert response.status_code == 400
    errors = response.json()
    assert field in errors and message in " ".join(errors[field]), errors


def test_each_organization_reads_its_own(api: Any, other_api: Any, org: Organization, other_org: Organization) -> None:
    emissions(org, 3)
    emissions(other_org, 5)
    assert api.get(URL, {"year": 2025}).json()["total"]["count"] == 3
    assert other_api.get(URL, {"year": 2025}).json()["total"]["count"] == 5


def test_a_viewer_reads_it(org: Organization) -> None:
    emissions(org, 2)
    assert member_api(org, Membership.Role.VIEWER).get(URL, {"year": 2025}).status_code == 200


def test_the_query_count_does_not_grow_with_the_emissions(api: Any, org: Organization, cold_cache: Any) -> None:
    def queries() -> int:
        cold_cache()
        with CaptureQueriesContext(connection) as captured:
            assert api.get(URL, {"year": 2025}).status_code == 200
        return len(captured.captured_queries)

    emissions(org, 3)
    few = queries()
    emissions(org, 60)
    assert queries() == few
    org.base_year = 2024
    org.save()
    assert queries() == few + 1  # the base year's read


def test_a_cached_answer_is_revalidated_and_a_write_changes_it(api: Any, org: Organization) -> None:
    emissions(org, 2)
    first = api.get(URL, {"year": 2025})
    again = api.get(URL, {"year": 2025}, HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304
    emissions(org, 1)
    changed = api.get(URL, {"year": 2025}, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and changed.json()["total"]["count"] == 3


def test_a_new_base_year_is_in_the_next_answer(api: Any, org: Organization) -> None:
    emissions(org, 2, year=2024)
    assert api.get(URL, {"year": 2025}).json()["base_year"] is None
    org.base_year = 2024
    org.save()
    assert api.get(URL, {"year": 2025}).json()["base_year"]["co2e_t"] == "0.003000000"


def test_a_new_exclusion_is_in_the_next_answer(api: Any, org: Organization) -> None:
    emissions(org, 1)
    assert api.get(URL, {"year": 2025}).json()["categories"][7]["status"] == "not_calculated"
    CategoryExclusion.objects.create(organization=org, category=8, explanation="No leased assets.")
    line = api.get(URL, {"year": 2025}).json()["categories"][7]
    assert (line["status"], line["explanation"]) == ("not_relevant", "No leased assets.")


# -- the tables -----------------------------------------------------------------------------------------------


def test_the_esrs_table_as_json_csv_and_xlsx(api: Any, org: Organization) -> None:
    emissions(org, 5)
    rows = api.get("/api/v1/reports/esrs-e1-6/", {"year": 2025}).json()
    assert rows[-1]["Scope 3 category"] == "Total gross indirect (Scope 3) GHG emissions"
    assert rows[-1]["Gross Scope 3 GHG emissions (t CO2e)"] == "0.015000000"
    as_csv = api.get("/api/v1/reports/esrs-e1-6/", {"year": 2025, "format": "csv"})
    assert as_csv["Content-Type"] == "text/csv; charset=utf-8"
    assert as_csv["Content-Disposition"] == 'attachment; filename="esrs-e1-6-2025-01-2025-12.csv"'
    assert as_csv.content.decode().splitlines()[-1] == "Total gross indirect (Scope 3) GHG emissions,0.015000000,,,0.00"
    as_xlsx = api.get(
        "/api/v1/reports/cdp-scope-3/", {"month_from": "2025-01", "month_to": "2025-06", "format": "xlsx"}
    )
    assert as_xlsx["Content-Type"] == exports.XLSX_CONTENT_TYPE
    sheet = load_workbook(io.BytesIO(as_xlsx.content)).active
    assert sheet.title == "cdp-scope-3" and sheet.max_row == 18  # a header, 15 categories, the two "Other"


def test_a_tables_errors_are_json_whatever_the_format(api: Any) -> None:
    response = api.get("/api/v1/reports/cdp-scope-3/", {"format": "csv"})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "year" in response.json()


def test_a_table_counts_only_the_callers_organization(
    api: Any, other_api: Any, org: Organization, other_org: Organization
) -> None:
    emissions(org, 1)
    emissions(other_org, 3)
    total = api.get("/api/v1/reports/esrs-e1-6/", {"year": 2025}).json()[-1]
    assert total["Gross Scope 3 GHG emissions (t CO2e)"] == "0.001000000"


def test_an_unknown_format_is_a_400_naming_it(api: Any) -> None:
    response = api.get("/api/v1/reports/esrs-e1-6/", {"year": 2025, "format": "pdf"})
    assert response.status_code == 400 and response.json() == {"format": ["Must be one of json, csv, xlsx."]}
    assert api.post("/api/v1/reports/esrs-e1-6/?format=pdf").status_code == 405


def test_a_format_suffix_options_and_the_browsable_api(api: Any, org: Organization) -> None:
    emissions(org, 1)
    suffixed = api.get("/api/v1/reports/esrs-e1-6.csv", {"year": 2025})
    assert suffixed.status_code == 200 and suffixed["Content-Type"] == "text/csv; charset=utf-8"
    assert api.get("/api/v1/reports/esrs-e1-6.pdf", {"year": 2025}).status_code in (400, 404)
    assert api.get("/api/v1/reports/inventory.json", {"year": 2025}).status_code == 200
    options = api.options("/api/v1/reports/cdp-scope-3/?format=xlsx")
    assert options.status_code == 200 and options["Content-Type"] == "application/json"
    page = api.get("/api/v1/reports/esrs-e1-6/", {"year": 2025}, HTTP_ACCEPT="text/html")
    assert "Content-Disposition" not in page
