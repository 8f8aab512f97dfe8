"""``manage.py check_indexes`` on PostgreSQL: declared indexes, unused/overlapping ones, hot-query plans."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management.base import CommandError
from django.db import connection

from emissions.models import ActivityRecord, Category, Emission, EmissionFactor, Method, Organization
from perf.management.commands.check_indexes import DEFAULT_MIN_ROWS
from tests.factories import SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

CATEGORIES = [Category.PURCHASED_GOODS, Category.UPSTREAM_TRANSPORT, Category.BUSINESS_TRAVEL, Category.WASTE]
METHODS = [Method.SPEND, Method.ACTIVITY, Method.DISTANCE]


def _seed(organization: Organization, factor: EmissionFactor, count: int) -> None:
    """``count`` activities with emissions over 24 months, 20 suppliers, 4 categories, 3 methods (bulk)."""
    suppliers = SupplierFactory.create_batch(20, organization=organization)
    activities = []
    for i in range(count):
        start = dt.date(2024 + (i % 24) // 12, 1 + i % 12, 1)
        activities.append(
            ActivityRecord(
                organization=organization,
                supplier=suppliers[i % 20],
                category=CATEGORIES[i % 4],
                method=METHODS[i % 3],
                activity=factor.activity,
                amount=Decimal(i),
                unit="kWh",
                period_start=start,
                period_end=start + dt.timedelta(days=27),
            )
        )
    ActivityRecord.objects.bulk_create(activities, batch_size=1000)
    Emission.objects.bulk_create(
        [
            Emission(
                organization=organization,
                activity=a,
                supplier=a.supplier,
                category=a.category,
                method=a.method,
                period_start=a.period_start,
                period_end=a.period_end,
                factor=factor,
                co2e_kg=a.amount * factor.co2e_per_unit,
                data_quality={"score": "2.0"},
            )
            for a in activities
        ],
        batch_size=1000,
    )


@pytest.fixture
def data(org: Organization, other_org: Organization, electricity_factor: EmissionFactor) -> None:
    _seed(org, electricity_factor, 3000)
    _seed(other_org, electricity_factor, 300)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _run(*args: str) -> tuple[dict[str, Any], int]:
    """Run the command with --json; (report, exit status)."""
    out = StringIO()
    try:
        call_command("check_indexes", "--json", *args, stdout=out)
        status = 0
    except CommandError as exc:
        status = exc.returncode
    return json.loads(out.getvalue()), status


def _execute(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


# -- (a) declared indexes ------------------------------------------------------------------------


def test_every_declared_index_exists_and_is_valid_after_migrate(org: Organization) -> None:
    report, status = _run()
    names = {d["name"]: d for d in report["declared"]}
    for name in ("emission_org_period_idx", "emission_org_cat_period_idx", "factor_search_trgm_idx"):
        assert names[name]["status"] == "ok"
    assert names["supplier_org_external_id_uniq"]["kind"] == "constraint"  # unique constraints are indexes too
    assert "factor_co2e_non_negative" not in names  # check constraints are not
    assert (report["ok"], report["failures"], status) == (True, [], 0)


def test_a_dropped_index_is_reported_missing_and_fails(org: Organization) -> None:
    _execute("DROP INDEX emission_org_sup_period_idx")  # rolled back with the test's transaction
    report, status = _run()
    missing = [d for d in report["declared"] if d["status"] != "ok"]
    assert missing == [
        {
            "name": "emission_org_sup_period_idx",
            "table": "emissions_emission",
            "model": "emissions.Emission",
            "kind": "index",
            "status": "missing",
        }
    ]
    assert status == 1 and report["ok"] is False
    assert any("emission_org_sup_period_idx" in f and "missing" in f for f in report["failures"])


def test_an_invalid_index_fails(org: Organization) -> None:
    # What a failed CREATE INDEX CONCURRENTLY leaves behind (rolled back with the test's transaction).
    _execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'emission_org_meth_period_idx'::regclass")
    report, status = _run()
    statuses = {d["name"]: d["status"] for d in report["declared"]}
    assert statuses["emission_org_meth_period_idx"] == "invalid"
    assert status == 1


def test_human_output_names_the_missing_index_and_exits_non_zero(org: Organization) -> None:
    _execute("DROP INDEX activity_org_cat_period_idx")
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("check_indexes", stdout=out)
    assert raised.value.returncode == 1
    text = out.getvalue()
    assert "MISSING: activity_org_cat_period_idx on emissions_activityrecord" in text
    assert "FAILED" in text


# -- (b) unused and overlapping ------------------------------------------------------------------


def test_a_crafted_duplicate_is_reported_as_duplicate_and_unused_without_failing(org: Organization) -> None:
    _execute('CREATE INDEX crafted_dup_idx ON emissions_emission ("organization_id", "period_start" DESC, "id" DESC)')
    report, status = _run()
    duplicates = [o for o in report["overlapping"] if o["kind"] == "duplicate"]
    assert len(duplicates) == 1  # one entry per identical pair
    assert {duplicates[0]["index"], duplicates[0]["covered_by"]} == {"crafted_dup_idx", "emission_org_period_idx"}
    assert {"index": "crafted_dup_idx", "table": "emissions_emission"}.items() <= next(
        u for u in report["unused"] if u["index"] == "crafted_dup_idx"
    ).items()
    assert status == 0  # reported, not failed


def test_a_prefix_is_overlapping_but_a_reversed_sort_or_other_predicate_is_not(org: Organization) -> None:
    _execute('CREATE INDEX crafted_prefix_idx ON emissions_emission ("organization_id", "category")')
    _execute('CREATE INDEX crafted_mixed_idx ON emissions_emission ("organization_id", "category" DESC)')
    _execute('CREATE INDEX crafted_partial_idx ON emissions_emission ("organization_id") WHERE "supplier_id" IS NULL')
    report, _ = _run()
    by_index: dict[str, set[str]] = {}
    for o in report["overlapping"]:
        by_index.setdefault(o["index"], set()).add(o["covered_by"])
    assert by_index["crafted_prefix_idx"] == {"emission_org_cat_period_idx"}
    assert "crafted_mixed_idx" not in by_index  # (org ASC, category DESC) orders differently
    assert "crafted_partial_idx" not in by_index  # a different predicate serves other rows
    # Django's own foreign-key index on organization_id is a prefix of the composite indexes.
    fk_index = next(name for name in by_index if name.startswith("emissions_emission_organization_id_"))
    assert "emission_org_period_idx" in by_index[fk_index]


# -- (c) hot queries -----------------------------------------------------------------------------


def test_json_report_shape(data: None) -> None:
    report, _ = _run("--org", "acme")
    assert set(report) == {
        "ok",
        "min_rows",
        "organization",
        "declared",
        "unused",
        "overlapping",
        "unregistered",
        "hot_queries",
        "failures",
    }
    assert report["min_rows"] == DEFAULT_MIN_ROWS
    assert report["organization"]["slug"] == "acme"
    row = report["hot_queries"][0]
    assert set(row) == {
        "name",
        "table",
        "table_rows",
        "expected_index",
        "indexes_used",
        "table_indexes_used",
        "seq_scans",
        "plan_nodes",
        "time_ms",
        "buffers",
        "status",
        "problems",
    }
    assert set(row["buffers"]) == {"shared_hit", "shared_read"}
    assert row["status"] in {"ok", "warn", "fail"}
    # factor_act_region_year_idx backs no registered query (the resolver filters on activity alone).
    assert "factor_act_region_year_idx" in report["unregistered"]


def test_default_org_is_the_one_with_most_emissions(data: None) -> None:
    report, _ = _run()
    assert report["organization"]["slug"] == "acme"  # 3,000 emissions against Globex's 300


@pytest.mark.parametrize(
    "name",
    [
        "emissions.list.first_page",
        "emissions.list.deep_page",
        "emissions.list.category",
        "emissions.list.supplier",
        "emissions.list.method",
        "activities.list.first_page",
        "activities.list.supplier",
    ],
)
def test_list_pages_use_their_index_even_on_a_few_thousand_rows(data: None, name: str) -> None:
    report, _ = _run("--org", "acme", "--min-rows", "0")
    row = next(r for r in report["hot_queries"] if r["name"] == name)
    assert row["expected_index"] in row["table_indexes_used"], row["plan_nodes"]
    assert row["table_rows"] == 3300
    assert row["time_ms"] >= 0 and row["buffers"]["shared_hit"] + row["buffers"]["shared_read"] > 0


def test_seq_scans_fail_only_on_tables_larger_than_min_rows(data: None) -> None:
    strict, strict_status = _run("--org", "acme", "--min-rows", "0")
    lenient, lenient_status = _run("--org", "acme", "--min-rows", "100000")
    lenient_rows = {r["name"]: r for r in lenient["hot_queries"]}
    for row in strict["hot_queries"]:
        missed = row["expected_index"] not in row["indexes_used"]
        big_seq_scan = any(scan["rows"] > 0 for scan in row["seq_scans"])
        # With every table "large", a missed index or any Seq Scan on a non-empty table fails ...
        assert (row["status"] == "fail") == (missed or big_seq_scan), row
        # ... and with a threshold above the data the same plan is at most a warning.
        assert lenient_rows[row["name"]]["status"] != "fail", lenient_rows[row["name"]]
    assert strict_status == (1 if any(r["status"] == "fail" for r in strict["hot_queries"]) else 0)
    assert (lenient["ok"], lenient_status) == (True, 0)


def test_a_hot_query_whose_index_is_gone_fails_with_a_seq_scan_or_another_index(data: None) -> None:
    _execute("DROP INDEX emission_org_meth_period_idx")
    report, status = _run("--org", "acme", "--min-rows", "0")
    row = next(r for r in report["hot_queries"] if r["name"] == "emissions.list.method")
    assert row["status"] == "fail"
    assert "emission_org_meth_period_idx" not in row["indexes_used"]
    assert any("expected index emission_org_meth_period_idx not used" in p for p in row["problems"])
    assert status == 1


def test_human_table_lists_every_hot_query(data: None) -> None:
    out = StringIO()
    call_command("check_indexes", "--org", "acme", stdout=out)
    text = out.getvalue()
    for header in ("query", "index expected", "index used", "plan nodes", "time ms", "buffers", "status"):
        assert header in text
    assert "emissions.summary.month" in text and "emission_org_cat_period_idx" in text


def test_unknown_org_is_an_error(org: Organization) -> None:
    with pytest.raises(CommandError, match="--org: no organization with slug 'nope'"):
        call_command("check_indexes", "--org", "nope", stdout=StringIO())


def test_without_organizations_hot_queries_are_skipped() -> None:
    report, status = _run()
    assert report["organization"] is None and report["hot_queries"] == []
    assert status == 0
