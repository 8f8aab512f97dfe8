"""The emissions list hot queries are the queries the API runs, SQL for SQL.

Summaries and factor resolution need no such check: the hot queries call the same QuerySet methods
(``EmissionQuerySet.summary``, ``EmissionFactorQuerySet.average_candidates``) as the API and the
calculator, tested in ``tests/emissions/test_models.py``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import cast

import pytest
from django.db import connection
from django.db.backends.postgresql.operations import DatabaseOperations
from django.db.models import QuerySet
from django.test.utils import CaptureQueriesContext

from emissions.hot_queries import SEARCH_TERM, _filter_values, _last_twelve_months
from emissions.models import Emission, EmissionFactor, Organization
from perf.hot_queries import HotQuery, registry
from tests.conftest import MemberAPIClient
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db


def _query(name: str) -> HotQuery:
    return next(q for q in registry() if q.name == name)


def _sql(queryset: QuerySet) -> str:
    sql, params = queryset.query.sql_with_params()
    return cast(DatabaseOperations, connection.ops).compose_sql(sql, params)


def _executed(api: MemberAPIClient, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = api.get(url)
    assert response.status_code == 200, response.content
    return [q["sql"] for q in captured.captured_queries]


@pytest.fixture
def emissions(org: Organization, electricity_factor: EmissionFactor) -> None:
    suppliers = SupplierFactory.create_batch(2, organization=org)
    for i in range(6):
        start = dt.date(2025, 1 + i % 3, 1)
        EmissionFactory.create(
            organization=org,
            activity__organization=org,
            activity__supplier=suppliers[i % 2],
            activity__category=1 + i % 2,
            activity__period_start=start,
            activity__period_end=start + dt.timedelta(days=27),
            activity__activity=electricity_factor.activity,
            factor=electricity_factor,
            co2e_kg=Decimal(i + 1),
        )


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("emissions.list.first_page", ""),
        ("emissions.list.category", "category={category}"),
        ("emissions.list.supplier", "supplier={supplier}"),
        ("emissions.list.method", "method={method}"),
    ],
)
def test_emission_list_queries_are_the_apis(
    api: MemberAPIClient, org: Organization, emissions: None, name: str, params: str
) -> None:
    values = _filter_values(Emission, org)
    executed = _executed(api, "/api/v1/emissions/?" + params.format(**values))
    assert _sql(_query(name).build(org)) in executed


def test_deep_page_is_the_page_after_the_middle_row(api: MemberAPIClient, org: Organization, emissions: None) -> None:
    query = _query("emissions.list.deep_page").build(org)
    listed = [row["id"] for row in api.get("/api/v1/emissions/").json()["results"]]
    assert len(listed) == 6
    # The page after the row at offset 6 // 2, in the list's order, at the API's default page size (+1 probe row).
    assert [row[0] for row in query] == listed[4:]  # value rows (perf.rows), the id first
    assert "LIMIT 101" in _sql(query)


def test_last_twelve_months_ends_with_the_latest_period(org: Organization, emissions: None) -> None:
    assert _last_twelve_months(org) == {"period_from": "2024-04-01", "period_to": "2025-03-31"}  # up to March 2025


def test_period_filtered_summary_totals_the_window(org: Organization, emissions: None) -> None:
    # The fixture's rows all lie inside the window, which ends with their latest month: nothing is left out.
    rows = list(_query("emissions.summary.category.last_12_months").build(org))
    assert {row["key"]: (row["total_kg"], row["count"]) for row in rows} == {1: (Decimal(9), 3), 2: (Decimal(12), 3)}


def test_factor_search_and_supplier_list_are_the_apis(api: MemberAPIClient, org: Organization, emissions: None) -> None:
    assert _sql(_query("factors.search").build(org)) in _executed(api, f"/api/v1/factors/?search={SEARCH_TERM}")
    assert _sql(_query("suppliers.list").build(org)) in _executed(api, "/api/v1/suppliers/")


def test_factor_resolution_selects_the_latest_activitys_candidates(
    org: Organization, emissions: None, electricity_factor: EmissionFactor
) -> None:
    # The organization's latest record names the electricity factor's key: its candidates are the query's rows.
    assert list(_query("factors.resolve").build(org)) == [electricity_factor]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("emissions.summary.rollups.category", "group_by=category"),
        ("emissions.summary.rollups.supplier", "group_by=supplier"),
        ("emissions.summary.rollups.one_supplier_by_month", "group_by=month&supplier={supplier}"),
    ],
)
def test_rollup_summary_queries_are_the_apis(
    api: MemberAPIClient, org: Organization, emissions: None, name: str, params: str
) -> None:
    values = _filter_values(Emission, org)
    executed = _executed(api, "/api/v1/emissions/summary/?" + params.format(**values))
    assert _sql(_query(name).build(org)) in executed
