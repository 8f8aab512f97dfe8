"""emissions.admin_views and the admin's readable pages: the dashboard, the downloads, the CSV upload and its job's
page, the activity and emission pages, supplier search and filters. Through Django's test client; the same pages in
a real browser are tests/browser."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from openpyxl import load_workbook

from emissions import exports
from emissions.api.export import COLUMNS
from emissions.jobs.imports import job_run_here
from emissions.models import ActivityRecord, Emission, Job, Organization
from emissions.reports import inventory
from emissions.services.organizations import org_user_create
from tests.emissions.jobs.test_imports import csv_bytes, varied_rows
from tests.emissions.management.test_import_activities import electricity_row
from tests.factories import EmissionFactorFactory, EmissionFactory, SupplierFactory
from tests.helpers import Client, unit_of_work

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/dashboard/"
IMPORT = "/admin/emissions/activityrecord/import/"


def member_client(org: Organization, role: str, username: str = "member") -> Client:
    with unit_of_work():  # a service call of its own (a second one in a test is no N+1)
        user, _ = org_user_create(organization=org, username=username, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff_client(org: Organization) -> Client:
    return member_client(org, "analyst")


@pytest.fixture
def superuser_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture(autouse=True)
def imports_folder(settings: Any, tmp_path: Any) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "imports": {**settings.STORAGES["imports"], "OPTIONS": {"location": tmp_path / "imports"}},
    }


def emission(org: Organization, kg: str, *, month: int = 3, year: int = 2025, **kwargs: Any) -> Emission:
    start = dt.date(year, month, 1)
    return EmissionFactory.create(
        organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=27),
        co2e_kg=Decimal(kg), **kwargs,
    )  # fmt: skip


# -- the dashboard --------------------------------------------------------------------------------------------------


def test_the_dashboard_shows_the_members_organization_and_its_newest_year(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    emission(org, "1500.25", month=2)
    emission(org, "250", month=7, activity__category=6)
    emission(org, "9", year=2024)
    emission(other_org, "77777")
    response = staff_client.get(DASHBOARD)
    assert response.status_code == 200
    figures = response.context["figures"]
    assert (figures["year"], figures["total"]["co2e_kg"], figures["total"]["count"]) == (2025, "1750.250000", 2)
    assert response.context["years"] == [2025, 2024]
    page = response.content.decode()
    assert "1.8 t CO2e" in page  # rounded for people
    # The charts' figures, as the page's script reads them: the same as the context's.
    start = page.index('<script id="dashboard-data" type="application/json">') + len(
        '<script id="dashboard-data" type="application/json">'
    )
    assert json.loads(page[start : page.index("</script>", start)]) == json.loads(json.dumps(figures))
    assert "77777" not in page and "77,777" not in page


def test_the_dashboards_filters_choose_the_year_category_and_supplier(staff_client: Client, org: Organization) -> None:
    supplier = SupplierFactory.create(organization=org, name="Northern Steel")
    emission(org, "40", activity__supplier=supplier, activity__category=1)
    emission(org, "60", activity__category=1)
    emission(org, "5", activity__supplier=supplier, activity__category=4)
    emission(org, "7", year=2024, activity__supplier=supplier, activity__category=1)
    response = staff_client.get(DASHBOARD, {"year": 2025, "category": 1, "supplier": supplier.pk})
    assert response.status_code == 200
    assert response.context["figures"]["total"]["co2e_kg"] == "40.000000"
    assert response.context["supplier_name"] == "Northern Steel"
    assert response.context["figures"]["year"] == 2025
    response = staff_client.get(DASHBOARD, {"year": 2024})
    assert response.context["figures"]["total"]["co2e_kg"] == "7.000000"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"year": "1800"}, "year"), ({"category": "16"}, "category"), ({"supplier": "x"}, "supplier")],
)
def test_a_bad_filter_is_a_400_naming_it(staff_client: Client, params: dict[str, str], field: str) -> None:
    response = staff_client.get(DASHBOARD, params)
    assert response.status_code == 400
    assert field in response.context["form"].errors


def test_another_organizations_supplier_is_refused(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    theirs = SupplierFactory.create(organization=other_org, name="Their Supplier")
    emission(other_org, "10", activity__supplier=theirs)
    response = staff_client.get(DASHBOARD, {"supplier": theirs.pk})
    assert response.status_code == 400
    assert response.context["form"].errors["supplier"] == ["No supplier of your organization has this id."]
    assert "Their Supplier" not in response.content.decode()


def test_a_superuser_chooses_the_organization(
    superuser_client: Client, org: Organization, other_org: Organization
) -> None:
    emission(other_org, "12")
    page = superuser_client.get(DASHBOARD)
    assert page.status_code == 200
    assert f"?organization={other_org.pk}" in page.content.decode()
    response = superuser_client.get(DASHBOARD, {"organization": other_org.pk})
    assert response.context["figures"]["total"]["co2e_kg"] == "12.000000"
    assert superuser_client.get(DASHBOARD, {"organization": 999999}).status_code == 404


def test_staff_without_a_membership_and_anonymous_users_see_no_dashboard(client: Client) -> None:
    assert client.get(DASHBOARD).status_code == 302  # to the login page
    user = get_user_model().objects.create_user("loose", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 403


def test_the_dashboard_costs_the_same_queries_for_1_and_100_results(staff_client: Client, org: Organization) -> None:
    counts = []
    for n in (1, 99):
        for i in range(n):
            emission(org, "1", month=i % 12 + 1, activity__supplier=SupplierFactory.create(organization=org))
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(DASHBOARD).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


# -- downloads ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["esrs-e1-6", "cdp-scope-3"])
def test_the_report_downloads_are_the_exports_tables(staff_client: Client, org: Organization, name: str) -> None:
    emission(org, "1234.5")
    emission(org, "10", activity__category=6)
    report = inventory(org, period_from=dt.date(2025, 1, 1), period_to=dt.date(2025, 12, 31))
    header, rows = exports.table(report, name)
    for file_format in ("csv", "json", "xlsx"):
        response = staff_client.get(f"/admin/reports/{name}.{file_format}", {"year": 2025})
        assert response.status_code == 200
        assert response["Content-Disposition"] == f'attachment; filename="{name}-{org.slug}-2025.{file_format}"'
        body = response.content
        if file_format == "csv":
            assert body == exports.as_csv(header, rows)
        elif file_format == "json":
            assert json.loads(body) == json.loads(json.dumps(exports.as_json(header, rows)))
        else:
            sheet = load_workbook(io.BytesIO(body)).active
            assert [cell.value for cell in sheet[1]] == header
            assert sheet.max_row == len(rows) + 1


def test_a_report_download_without_a_year_or_of_an_unknown_table_is_refused(staff_client: Client) -> None:
    response = staff_client.get("/admin/reports/esrs-e1-6.csv")
    assert response.status_code == 400
    assert response.content.decode().startswith("year: ")
    assert staff_client.get("/admin/reports/ghg.csv", {"year": 2025}).status_code == 404
    assert staff_client.get("/admin/reports/esrs-e1-6.pdf", {"year": 2025}).status_code == 404


def test_the_emissions_export_is_the_changelists_rows_as_the_apis_csv(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    kept = [emission(org, "11", activity__category=1), emission(org, "12", activity__category=1)]
    emission(org, "13", activity__category=4)
    emission(other_org, "14", activity__category=1)
    response = staff_client.get("/admin/emissions/emission/export/", {"category__exact": 1})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))  # type: ignore[attr-defined]
    assert rows[0] == list(COLUMNS)
    assert sorted(int(row[0]) for row in rows[1:]) == sorted(e.pk for e in kept)
    page = staff_client.get("/admin/emissions/emission/", {"category__exact": 1}).content.decode()
    assert 'href="/admin/emissions/emission/export/?category__exact=1"' in page


# -- the CSV upload -------------------------------------------------------------------------------------------------


def upload(client: Client, data: bytes, *, dry_run: bool) -> Any:
    file = io.BytesIO(data)
    file.name = "activities.csv"
    return client.post(IMPORT, {"file": file, **({"dry_run": "on"} if dry_run else {})})


def run_the_job() -> Job:
    # The upload's job waits for the workers once the request commits; here it runs in this process.
    return job_run_here(Job.objects.get().pk)


def test_a_dry_run_lists_every_bad_rows_line_column_and_problem(
    staff_client: Client, org: Organization, electricity_factor: Any, diesel_factor: Any
) -> None:
    rows = varied_rows(3)
    rows.insert(1, electricity_row(amount="-5"))
    rows.append(electricity_row(period_start="2025-13-01", category="16"))
    response = upload(staff_client, csv_bytes(rows), dry_run=True)
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{IMPORT}{job.pk}/?organization={org.pk}"
    assert job.params["dry_run"] is True and job.organization == org
    run_the_job()
    page = staff_client.get(response["Location"])
    assert page.status_code == 200
    errors = page.context["row_errors"]
    assert {(error["line"], error["field"]) for error in errors} == {
        (3, "amount"),
        (6, "category"),
        (6, "period_start"),
    }
    html = page.content.decode()
    assert '<tr data-line="3">' in html and '<tr data-line="6">' in html
    assert "refresh" not in html  # finished: the page no longer reloads itself
    assert not ActivityRecord.objects.exists()


def test_a_valid_file_imports_and_its_page_says_what_it_added(
    staff_client: Client, org: Organization, electricity_factor: Any, diesel_factor: Any
) -> None:
    response = upload(staff_client, csv_bytes(varied_rows(4)), dry_run=False)
    assert response.status_code == 302
    page = staff_client.get(response["Location"])
    assert page.context["refresh"] == 2  # queued: the page reloads itself
    run_the_job()
    page = staff_client.get(response["Location"])
    assert ActivityRecord.objects.filter(organization=org).count() == 4
    assert "Imported 4 rows" in page.content.decode()


def test_a_bad_header_is_a_form_error_and_nothing_is_queued(staff_client: Client) -> None:
    response = upload(staff_client, b"colour,size\nred,3\n", dry_run=True)
    assert response.status_code == 400
    assert "Unknown column(s): colour, size" in response.context["form"].errors["file"][0]
    assert not Job.objects.exists()


def test_a_viewer_may_not_upload_and_no_one_sees_another_organizations_import(
    org: Organization, other_org: Organization, staff_client: Client
) -> None:
    viewer = member_client(org, "viewer", username="viewer")
    assert viewer.get(IMPORT).status_code == 403
    assert "Import activities" not in viewer.get("/admin/").content.decode()
    theirs = Job.objects.create(organization=other_org, kind=Job.Kind.IMPORT, params={"dry_run": True})
    assert staff_client.get(f"{IMPORT}{theirs.pk}/").status_code == 404


# -- readable pages, search and filters -----------------------------------------------------------------------------


def test_the_activity_page_shows_its_emission_readably(staff_client: Client, org: Organization) -> None:
    factor = EmissionFactorFactory.create(name="Electricity: UK", unit="kWh", co2e_per_unit=Decimal("0.177"))
    result = emission(
        org,
        "1234.567891",
        factor=factor,
        fallbacks=[{"code": "year_fallback", "detail": "No 2026 factor; used 2025."}],
        warnings=[{"code": "factor_outdated", "detail": "The factor is 6 years older than the activity."}],
    )
    page = staff_client.get(f"/admin/emissions/activityrecord/{result.activity_id}/change/").content.decode()
    assert "1,235 kg" in page and 'title="1234.567891 kg CO2e"' in page
    assert "Electricity: UK" in page and "0.177 kg CO2e per kWh" in page
    assert "<strong>year_fallback</strong>: No 2026 factor; used 2025." in page
    assert "<strong>factor_outdated</strong>" in page
    assert "<td>reliability</td><td>2</td><td>good</td>" in page
    assert '"code"' not in page and "{&quot;" not in page  # no raw JSON


def test_the_emission_page_shows_its_figures_readably(staff_client: Client, org: Organization) -> None:
    result = emission(
        org,
        "2.5",
        gases={"co2": "2.4", "ch4": "0.1"},
        conversion={
            "amount": "1000",
            "currency": "EUR",
            "spend_year": 2024,
            "factor_currency": "USD",
            "price_year": 2022,
            "exchange_rate": {"set": "ecb", "year": 2024, "value": "1.0824", "how": "direct", "rows": []},
            "price_index": None,
        },
    )
    page = staff_client.get(f"/admin/emissions/emission/{result.pk}/change/").content.decode()
    assert "2.50 kg" in page and "exactly 2.500000 kg" in page
    assert "Spent 1000 EUR in 2024; the factor is priced in USD of 2022." in page
    assert "Exchange rate 1.0824 (ecb set, 2024, direct)." in page
    assert "<td>ch4</td><td>0.10 kg</td>" in page
    assert "None: the factor matched as asked." in page
    assert "{&quot;" not in page


def test_emissions_are_found_by_supplier_and_filtered_by_source_and_supplier(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    acme = SupplierFactory.create(organization=org, name="Acme Metals", external_id="V-100")
    other = SupplierFactory.create(organization=org, name="Zenith Paper", external_id="V-200")
    theirs = SupplierFactory.create(organization=other_org, name="Acme Metals", external_id="V-100")
    mine = emission(org, "1", activity__supplier=acme)
    emission(org, "2", activity__supplier=other)
    emission(other_org, "3", activity__supplier=theirs)
    changelist = "/admin/emissions/emission/"

    def listed(params: dict[str, Any]) -> list[int]:
        response = staff_client.get(changelist, params)
        assert response.status_code == 200
        return [row.pk for row in response.context["cl"].result_list]

    assert listed({"q": "acme"}) == [mine.pk]
    assert listed({"q": "V-100"}) == [mine.pk]
    assert listed({"supplier__id__exact": acme.pk}) == [mine.pk]
    assert listed({"supplier__id__exact": theirs.pk}) == []
    source = mine.factor.dataset.source
    assert mine.pk in listed({"factor__dataset__source": source})
    assert listed({"factor__dataset__source": "ipcc_gwp"}) == []
    # The supplier's page and list lead to its emissions.
    link = f"{changelist}?supplier__id__exact={acme.pk}"
    assert link in staff_client.get(f"/admin/emissions/supplier/{acme.pk}/change/").content.decode()
    assert link in staff_client.get("/admin/emissions/supplier/").content.decode()


def test_the_landing_page_and_the_admin_link_to_the_dashboard(client: Client, staff_client: Client) -> None:
    assert f'href="{DASHBOARD}"' in client.get("/").content.decode()
    admin_page = staff_client.get("/admin/").content.decode()
    assert f'href="{DASHBOARD}"' in admin_page and f'href="{IMPORT}"' in admin_page
    assert reverse("dashboard") == DASHBOARD


# -- bad parameters and other organizations' ids --------------------------------------------------------------------


def test_another_organizations_supplier_id_names_nothing_in_the_filter(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    theirs = SupplierFactory.create(organization=other_org, name="Secret Supplier Ltd")
    for changelist in ("/admin/emissions/emission/", "/admin/emissions/activityrecord/"):
        page = staff_client.get(changelist, {"supplier__id__exact": theirs.pk})
        assert page.status_code == 200
        assert "Secret Supplier Ltd" not in page.content.decode()
        assert f"supplier {theirs.pk}" in page.content.decode()


@pytest.mark.parametrize("value", ["x", "\u00b2", "-1"])
def test_a_bad_supplier_filter_is_the_admins_bad_filter_page_and_a_400_for_the_export(
    staff_client: Client, value: str
) -> None:
    page = staff_client.get("/admin/emissions/emission/", {"supplier__id__exact": value})
    assert page.status_code == 302 and page["Location"].endswith("?e=1")
    export = staff_client.get("/admin/emissions/emission/export/", {"supplier__id__exact": value})
    assert export.status_code == 400
    assert export.content.decode().startswith("supplier: ")


def test_bad_numbers_are_4xx_not_errors(staff_client: Client, superuser_client: Client, org: Organization) -> None:
    assert staff_client.get("/admin/reports/esrs-e1-6.csv", {"year": "\u00b2"}).status_code == 400
    assert superuser_client.get(DASHBOARD, {"organization": "\u00b2"}).status_code == 404
    export = staff_client.get("/admin/emissions/emission/export/", {"period_start__year": "x"})
    assert export.status_code == 400


def test_an_upload_over_the_limit_is_refused_before_it_is_read(
    staff_client: Client, settings: Any, electricity_factor: Any
) -> None:
    settings.IMPORT_MAX_BYTES = 100
    response = upload(staff_client, csv_bytes(varied_rows(20)), dry_run=True)
    assert response.status_code == 413
    assert response.content.decode().startswith("file: The file is larger than the 100-byte limit")
    assert not Job.objects.exists()


def test_the_organization_choice_keeps_the_pages_parameters(superuser_client: Client, org: Organization) -> None:
    Organization.objects.create(name="Second", slug="second")  # two: the superuser must choose
    page = superuser_client.get("/admin/reports/esrs-e1-6.csv", {"year": 2025})
    assert page.status_code == 200
    assert f'href="/admin/reports/esrs-e1-6.csv?year=2025&amp;organization={org.pk}"' in page.content.decode()


def test_the_dashboards_link_lists_the_emissions_it_counts(staff_client: Client, org: Organization) -> None:
    counted = emission(org, "5", month=12)
    EmissionFactory.create(  # December 2025 into 2026: counted in neither year
        organization=org, activity__period_start=dt.date(2025, 12, 1), activity__period_end=dt.date(2026, 1, 31)
    )
    page = staff_client.get(DASHBOARD, {"year": 2025}).content.decode()
    link = "/admin/emissions/emission/?period_start__gte=2025-01-01&amp;period_end__lte=2025-12-31"
    assert link in page
    listed = staff_client.get(link.replace("&amp;", "&")).context["cl"].result_list
    assert [row.pk for row in listed] == [counted.pk]


def test_a_factor_figure_is_written_plainly(staff_client: Client, org: Organization) -> None:
    result = emission(org, "1", factor=EmissionFactorFactory.create(co2e_per_unit=Decimal("10.000"), unit="t"))
    page = staff_client.get(f"/admin/emissions/emission/{result.pk}/change/").content.decode()
    assert "10 kg CO2e per t" in page and "1E+1" not in page
