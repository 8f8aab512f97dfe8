"""``manage.py bench_db --quick`` on a small organization: report structure, and the data left as it was."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import connection
from rest_framework.authtoken.models import Token

from bench import measure
from bench.db import CURSOR_RUNS, QUICK, SUMMARY_INDEX, DatabaseBenchmark
from bench.management.commands.bench_db import Command
from calculator.types import CalculationInput
from emissions.models import ActivityRecord, Emission, EmissionFactor, Membership, Organization
from emissions.services.activities import ActivityInput, activities_create
from tests.factories import SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

TABLES = [ActivityRecord._meta.db_table, Emission._meta.db_table]
ROW_COUNT = 300


@pytest.fixture
def seeded(org: Organization, other_org: Organization, electricity_factor: EmissionFactor) -> Organization:
    """``ROW_COUNT`` electricity activities with emissions over 24 months (every third with a supplier)."""
    suppliers = SupplierFactory.create_batch(5, organization=org)
    items = []
    for i in range(ROW_COUNT):
        start = dt.date(2024 + (i % 24) // 12, 1 + i % 12, 1)
        calculation = CalculationInput(
            category=3,
            method="activity",
            activity=electricity_factor.activity,
            amount=Decimal(100 + i),
            unit="kWh" if i % 2 else "MWh",
            supplier_id=suppliers[i % 5].pk if i % 3 == 0 else None,
        )
        items.append(ActivityInput(calculation, start, start + dt.timedelta(days=27), f"T-{i}"))
    activities_create(organization=org, items=items)
    activities_create(organization=other_org, items=[i for i in items[:10] if i.calculation.supplier_id is None])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return org


def _run(tmp_path: Path, *args: str) -> tuple[DatabaseBenchmark, str]:
    """The command on organization ``acme``: the benchmark it ran, and the report it wrote."""
    command = Command(stdout=StringIO(), stderr=StringIO())
    out = tmp_path / "db.md"
    call_command(command, "--org", "acme", "--runs", "2", "--quick", "--out", str(out), *args)
    return command.benchmark, out.read_text(encoding="utf-8")


def test_quick_run_reports_every_benchmark_with_ratios(seeded: Organization, tmp_path: Path) -> None:
    benchmark, markdown = _run(tmp_path)
    names = [row.benchmark for row in benchmark.report.rows]
    size, pages, writes = QUICK
    assert names == [
        f"Emissions list, first page of {size} serialized",
        *[f"Page {p:,} of {size} (after {(p - 1) * size:,} rows)" for p in pages],
        f"Store {writes:,} activities with their emissions",
        f"activities_create's write method, {writes:,} activities",
        f"POST /api/v1/activities/, {writes:,} activities (end to end)",
        "Summary by category (whole organization)",
        f"Load {writes:,} activities + emissions",
        f"CSV import of {min(10 * writes, ROW_COUNT):,} activities (import_activities)",
        f"CSV export of {ROW_COUNT:,} emissions",
    ]
    for row in benchmark.report.rows[:-2]:
        # --runs 2, except the cursor pages, which get at least CURSOR_RUNS rounds.
        cursor_page = row.benchmark.startswith("Page ")
        assert row.naive is not None and len(row.naive.samples) == 2
        assert len(row.optimized.samples) == (CURSOR_RUNS if cursor_page else 2)
        assert row.ratio == pytest.approx(row.naive.median / row.optimized.median)
    for one_sided in benchmark.report.rows[-2:]:  # import and export: throughput and memory, nothing to compare
        assert one_sided.naive is None and one_sided.ratio is None and len(one_sided.optimized.samples) == 1
    imported = min(10 * writes, ROW_COUNT)
    assert re.search(
        rf"CSV import of {imported:,} activities: .* peak Python memory [\d.]+ MiB for {writes} rows", markdown
    )

    list_page = benchmark.report.rows[0]
    # N+1: one query for the page plus one per related object; the optimized page is one query.
    assert list_page.optimized.queries == 1
    assert list_page.naive is not None and list_page.naive.queries > size
    store = benchmark.report.rows[1 + len(pages)]
    assert store.naive is not None and store.naive.queries >= 2 * writes
    assert store.optimized.queries < writes
    assert set(benchmark.pagination_ratios) == {"offset", "cursor", "cursor_half"}

    # The Markdown: a table row per benchmark, the machine, the reproduction command, no machine paths.
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[0] == "| benchmark | naive | optimized | ratio | queries |"
    assert len(table) == 1 + len(names)
    for line, name in zip(table[1:], names, strict=True):
        assert line.startswith(f"| {name}")
    ratios = [line.split(" | ")[3] for line in table[1:]]
    assert all(re.fullmatch(r"[\d,]+\.\dx", ratio) for ratio in ratios[:-2]) and ratios[-2:] == ["—", "—"]
    assert "Deep page / first page time: OFFSET" in markdown
    assert f"{store.benchmark}: the bulk path is {store.ratio:,.1f}x faster than the per-row path" in markdown
    assert "the issue asks for >= 20x" in markdown and "Summary by category: " in markdown
    for heading in ("## Machine", "**CPU**", "**RAM**", "PostgreSQL", "## Reproduce"):
        assert heading in markdown
    # The bench app is installed only by the tooling's settings: the command line names them.
    assert "DJANGO_SETTINGS_MODULE=vcci.settings_dev python manage.py bench_db --org acme --runs 2 --quick" in markdown
    assert "make bench-db BENCH_ORG=acme BENCH_RUNS=2" in markdown
    methods = benchmark.report.rows[2 + len(pages)]
    assert methods.naive_label.startswith("bulk_create") and methods.optimized_label.startswith("COPY")
    post = benchmark.report.rows[3 + len(pages)]
    # Every single POST authenticates and writes on its own; the batch POST does it once.
    assert post.naive is not None and post.naive.queries > 5 * writes
    assert post.optimized.queries < 20
    assert post.naive.result == post.optimized.result == writes
    assert f"{post.benchmark}: one batch POST is {post.ratio:,.1f}x faster" in markdown
    summary = benchmark.report.rows[4 + len(pages)]
    assert re.search(r"with the index: .+, [\d,]+ pages read; without: .+, [\d,]+ pages", summary.note)
    assert all(plan["pages"] > 0 for plan in benchmark.summary_plans.values())
    assert str(tmp_path) not in markdown and "/home/" not in markdown and "/work/" not in markdown


def test_the_database_is_unchanged_afterwards(seeded: Organization, tmp_path: Path) -> None:
    before = measure.fingerprint(TABLES)
    assert SUMMARY_INDEX in {name for _, name, _ in before["indexes"]}
    _run(tmp_path)
    assert measure.fingerprint(TABLES) == before
    assert Emission.objects.for_org(seeded).count() == ROW_COUNT
    # The API client the POST benchmark used is gone, with its token and membership.
    assert not get_user_model().objects.filter(username="bench-api-client").exists()
    assert not Token.objects.exists() and not Membership.objects.exists()


def test_unknown_org_and_too_little_data_are_clear_errors(seeded: Organization, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--org: no organization with slug 'nope'"):
        call_command("bench_db", "--org", "nope", "--quick", "--out", str(tmp_path / "x.md"))
    with pytest.raises(CommandError, match=r"'globex' has .* emissions; the benchmark pages"):
        call_command("bench_db", "--org", "globex", "--quick", "--out", str(tmp_path / "x.md"))
    with pytest.raises(CommandError, match="--runs must be at least 1; got 0"):
        call_command("bench_db", "--org", "acme", "--runs", "0", "--out", str(tmp_path / "x.md"))
    assert not (tmp_path / "x.md").exists()
