"""The analyst's pages in a real browser (tests/browser/conftest.py) against a live server: the dashboard draws its
charts with the stored emissions' totals, the CSV upload shows each bad row, the exports download, the changelists
fit a 1400 px screen, and no page breaks its Content-Security-Policy or throws.

The dashboard and upload tests save their screenshots to docs/screenshots/ (the README shows them): each run of the
suite makes them anew from its own data.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from openpyxl import load_workbook
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from emissions.models import ActivityRecord, FactorDataset, Job, Organization, Supplier
from emissions.services.organizations import org_user_create
from emissions.templatetags.vcci_format import tonnes
from tests.browser.conftest import HEIGHT, WIDTH
from tests.emissions.jobs.test_imports import csv_bytes, varied_rows
from tests.emissions.management.test_import_activities import electricity_row
from tests.factories import EmissionFactorFactory, EmissionFactory, FactorDatasetFactory, SupplierFactory
from tests.helpers import unit_of_work
from tests.workers import Worker

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PASSWORD = "browser-test-password"
WAIT = 30.0
GOOD = {"technology": 2, "time": 1, "geography": 1, "completeness": 2, "reliability": 2, "score": "1.6"}
POOR = {"technology": 4, "time": 4, "geography": 1, "completeness": 3, "reliability": 4, "score": "3.2"}
PRIMARY = {"technology": 1, "time": 1, "geography": 1, "completeness": 2, "reliability": 1, "score": "1.2"}


@pytest.fixture
def analyst(org: Organization) -> str:
    """An analyst of ``org`` who signs in with a password, as people do."""
    with unit_of_work():
        user, _ = org_user_create(organization=org, username="analyst", role="analyst")
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
    return "analyst"


@pytest.fixture
def year_of_results(org: Organization, other_org: Organization) -> list[Supplier]:
    """A year of an organization's results: six categories, twelve months, fourteen suppliers with long names,
    three data-quality classes, three factor sources; and another organization's, which no page may show."""
    with unit_of_work():
        suppliers = [
            SupplierFactory.create(organization=org, name=f"{name} International Holdings and Logistics GmbH")
            for name in (
                "Northwind", "Contoso", "Fabrikam", "Tailspin", "Wingtip", "Litware", "Proseware",
                "Adventure Works", "Alpine Ski House", "Blue Yonder", "Coho Winery", "Fourth Coffee",
                "Lucerne", "Margie's Travel",
            )
        ]  # fmt: skip
        datasets = [
            FactorDatasetFactory.create(source=source, version=version)
            for source, version in [
                (FactorDataset.Source.DESNZ, "browser-2025"),
                (FactorDataset.Source.EPA_SUPPLY_CHAIN, "browser-1.3.0"),
                (FactorDataset.Source.EPA_HUB, "browser-2025"),
            ]
        ]
        factors = [
            EmissionFactorFactory.create(
                dataset=datasets[index % 3],
                activity=f"{datasets[index % 3].source}:a_long_activity_key_for_{index}",
                name="A factor with the long name publishers give their factors, region and all",
            )
            for index in range(5)
        ]
        for i in range(90):
            start = dt.date(2025, i % 12 + 1, 1)
            EmissionFactory.create(
                organization=org,
                activity__period_start=start,
                activity__period_end=start + dt.timedelta(days=27),
                activity__category=(1, 2, 3, 4, 6, 7)[i % 6],
                activity__method=("spend", "activity", "distance")[i % 3],
                activity__supplier=None if i % 10 == 0 else suppliers[i % 14],
                activity__activity=factors[i % 5].activity,
                factor=factors[i % 5],
                co2e_kg=Decimal(f"{(i * 7919) % 40000 + 500}.{i:06d}"),
                data_quality=(GOOD, POOR, PRIMARY)[i % 3],
            )
        EmissionFactory.create(organization=other_org, co2e_kg=Decimal("987654"))
    return suppliers


def sign_in(browser: webdriver.Chrome, live_server: Any, username: str) -> None:
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, lambda: browser.find_elements(By.ID, "user-tools"), "the signed-in admin")


def wait_for(browser: webdriver.Chrome, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda _: condition(), message=f"waited {timeout} s for {what}"
    )


def screenshot(browser: webdriver.Chrome, name: str) -> None:
    """The whole page, at the 1400 px width, as docs/screenshots/<name>.png."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(WIDTH, min(max(height, HEIGHT), 6000))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    browser.set_window_size(WIDTH, HEIGHT)


def page_problems(browser: webdriver.Chrome) -> list[str]:
    """The console's errors since the last call: a script error or a Content-Security-Policy violation (a missing
    favicon is no problem)."""
    return [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]


def sql(query: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return list(cursor.fetchall())


YEAR_2025 = "organization_id = %s AND period_start >= '2025-01-01' AND period_end <= '2025-12-31'"


def test_the_dashboard_draws_the_stored_totals(
    browser: webdriver.Chrome, live_server: Any, analyst: str, org: Organization, year_of_results: list[Supplier]
) -> None:
    sign_in(browser, live_server, analyst)
    browser.get(f"{live_server.url}/admin/dashboard/")
    wait_for(
        browser,
        lambda: browser.execute_script("return document.querySelectorAll('canvas[data-rendered=true]').length") == 4,
        "the four charts",
    )

    def chart(canvas: str) -> dict[str, Any]:
        return browser.execute_script(
            "const c = Chart.getChart(document.getElementById(arguments[0]));"
            " return {labels: c.data.labels, data: c.data.datasets.map(d => d.data)};",
            canvas,
        )

    def t(kg: Decimal) -> float:
        return float(kg / 1000)

    ((total_kg,),) = sql(f"SELECT sum(co2e_kg) FROM emissions_emission WHERE {YEAR_2025}", [org.pk])
    shown = browser.find_element(By.CSS_SELECTOR, "#year-total .vcci-figure")
    assert shown.text == f"{tonnes(total_kg / 1000)} CO2e"
    assert shown.get_attribute("data-co2e-t") == format((total_kg / 1000).quantize(Decimal("0.000000001")), "f")

    per_category = sql(
        f"SELECT category, sum(co2e_kg) FROM emissions_emission WHERE {YEAR_2025} GROUP BY 1 ORDER BY 1", [org.pk]
    )
    categories = chart("chart-categories")
    assert len(categories["labels"]) == len(per_category) == 6
    assert categories["data"][0] == pytest.approx([t(kg) for _, kg in per_category], rel=1e-12)

    per_month = sql(
        f"SELECT extract(month FROM period_start)::int, sum(co2e_kg) FROM emissions_emission WHERE {YEAR_2025}"
        " GROUP BY 1 ORDER BY 1",
        [org.pk],
    )
    months = chart("chart-months")
    low, high, trend = months["data"]
    assert months["labels"] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert trend == pytest.approx([t(kg) for _, kg in per_month], rel=1e-12)
    assert all(lo < value < hi for lo, value, hi in zip(low, trend, high, strict=True))  # the band brackets each

    top = sql(
        f"SELECT s.name, sum(e.co2e_kg) FROM emissions_emission e JOIN emissions_supplier s ON s.id = e.supplier_id"
        f" WHERE e.{YEAR_2025} GROUP BY s.id, s.name ORDER BY 2 DESC, s.id LIMIT 10",
        [org.pk],
    )
    suppliers = chart("chart-suppliers")
    assert suppliers["labels"] == [name for name, _ in top]
    assert suppliers["data"][0] == pytest.approx([t(kg) for _, kg in top], rel=1e-12)
    assert sum(chart("chart-quality")["data"][0]) == pytest.approx(t(total_kg), rel=1e-12)
    assert "987" not in browser.find_element(By.ID, "content-main").text  # the other organization's result
    screenshot(browser, "dashboard")

    # A filter: one category, one supplier. The figures follow.
    supplier = year_of_results[3]
    browser.get(f"{live_server.url}/admin/dashboard/?year=2025&category=4&supplier={supplier.pk}")
    wait_for(browser, lambda: browser.execute_script("return !!Chart.getChart('chart-categories')"), "the chart")
    ((filtered_kg,),) = sql(
        f"SELECT sum(co2e_kg) FROM emissions_emission WHERE {YEAR_2025} AND category = 4 AND supplier_id = %s",
        [org.pk, supplier.pk],
    )
    assert chart("chart-categories")["data"][0] == pytest.approx([t(filtered_kg)], rel=1e-12)
    assert page_problems(browser) == []


def test_the_upload_lists_each_bad_row(
    browser: webdriver.Chrome,
    live_server: Any,
    analyst: str,
    electricity_factor: Any,
    diesel_factor: Any,
    celery_worker: Worker,
    tmp_path: Path,
) -> None:
    rows = varied_rows(4)
    rows.insert(1, electricity_row(amount="-5"))
    rows.append(electricity_row(period_start="2025-13-01", category="16"))
    rows.append(electricity_row(activity="desnz:no_such_factor"))
    upload = tmp_path / "activities.csv"
    upload.write_bytes(csv_bytes(rows))

    sign_in(browser, live_server, analyst)
    browser.get(f"{live_server.url}/admin/emissions/activityrecord/")
    browser.find_element(By.ID, "import-link").click()
    wait_for(browser, lambda: browser.find_elements(By.ID, "import-form"), "the upload form")
    browser.find_element(By.NAME, "file").send_keys(str(upload))
    assert browser.find_element(By.NAME, "dry_run").is_selected()  # checking first is the default
    screenshot(browser, "upload")
    browser.find_element(By.CSS_SELECTOR, "#import-form input[type=submit]").click()

    # The job runs on the worker; its page reloads itself until the job ends.
    wait_for(browser, lambda: browser.find_elements(By.ID, "row-errors"), "the import's row errors", timeout=120)
    listed = [
        tuple(cell.text for cell in row.find_elements(By.TAG_NAME, "td"))
        for row in browser.find_elements(By.CSS_SELECTOR, "#row-errors tbody tr")
    ]
    assert [(line, column) for line, column, _ in listed] == [
        ("3", "amount"),
        ("7", "category"),
        ("7", "period_start"),
        ("8", "activity"),
    ]
    assert all(problem for _, _, problem in listed)
    assert "Failed" in browser.find_element(By.ID, "job-state").text
    screenshot(browser, "upload-errors")
    assert not ActivityRecord.objects.exists()
    assert page_problems(browser) == []


def downloaded(folder: Path, name: str) -> Path:
    """The file ``name`` once the browser has finished writing it."""
    deadline = time.monotonic() + WAIT
    path = folder / name
    while not path.exists() or any(folder.glob("*.crdownload")):
        if time.monotonic() > deadline:
            found = sorted(p.name for p in folder.iterdir())
            raise AssertionError(f"{name} was not downloaded; the folder has {found}")
        time.sleep(0.1)
    return path


def test_the_exports_download(
    browser: webdriver.Chrome,
    live_server: Any,
    analyst: str,
    org: Organization,
    year_of_results: list[Supplier],
    downloads: Path,
) -> None:
    sign_in(browser, live_server, analyst)
    browser.get(f"{live_server.url}/admin/emissions/emission/?category__exact=4")
    browser.find_element(By.ID, "export-link").click()
    exported = downloaded(downloads, f"emissions-{org.slug}-{dt.date.today().isoformat()}.csv")
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    expected = sql("SELECT id FROM emissions_emission WHERE organization_id = %s AND category = 4", [org.pk])
    assert sorted(int(row["id"]) for row in rows) == sorted(pk for (pk,) in expected)

    browser.get(f"{live_server.url}/admin/dashboard/?year=2025")
    browser.find_element(By.CSS_SELECTOR, "a.vcci-download[href*='esrs-e1-6.xlsx']").click()
    sheet = load_workbook(downloaded(downloads, f"esrs-e1-6-{org.slug}-2025.xlsx")).active
    header = [cell.value for cell in sheet[1]]
    lines = {row[0]: row for row in sheet.iter_rows(min_row=2, values_only=True)}
    ((total_kg,),) = sql(f"SELECT sum(co2e_kg) FROM emissions_emission WHERE {YEAR_2025}", [org.pk])
    figure = header.index("Gross Scope 3 GHG emissions (t CO2e)")
    assert Decimal(str(lines["Total gross indirect (Scope 3) GHG emissions"][figure])) == total_kg / 1000
    assert page_problems(browser) == []


CHANGELISTS = ("emission", "activityrecord", "supplier", "emissionfactor", "factordataset", "job", "auditevent")


def test_the_changelists_fit_a_1400_px_screen(
    browser: webdriver.Chrome, live_server: Any, analyst: str, org: Organization, year_of_results: list[Supplier]
) -> None:
    with unit_of_work():  # a finished import, so that the jobs list has a row to measure
        Job.objects.create(
            organization=org,
            kind=Job.Kind.IMPORT,
            state=Job.State.FAILED,
            params={"dry_run": True},
            error_count=1234,
            rows_total=1_000_000,
            rows_done=1_000_000,
        )
    sign_in(browser, live_server, analyst)
    overflowing = {}
    for model in CHANGELISTS:
        browser.get(f"{live_server.url}/admin/emissions/{model}/")
        widths = browser.execute_script(
            "const results = document.querySelector('#changelist .results');"
            " return [document.documentElement.scrollWidth, window.innerWidth,"
            " results ? results.scrollWidth : 0, results ? results.clientWidth : 0];"
        )
        page, window, table, room = widths
        if page > window or table > room:
            columns = browser.execute_script(
                "return Array.from(document.querySelectorAll('#result_list thead th'),"
                " th => th.className.replace('sortable ', '') + ' ' + th.offsetWidth);"
            )
            overflowing[model] = (widths, columns)
    assert overflowing == {}, f"page width, window width, table width, room for the table; each column: {overflowing}"
    assert page_problems(browser) == []
