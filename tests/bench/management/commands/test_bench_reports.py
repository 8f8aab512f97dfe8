"""``manage.py bench_reports`` on two tiny organizations: seeding, the report's table and findings, the rollup
bodies checked against the emissions' bodies, loud failures."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db.models import Count

from bench.management.commands.bench_reports import Command
from bench.reports import CLIENT_USERNAME, ReportsBenchmark
from emissions import summaries
from emissions.models import Emission
from tests.emissions.management import test_seed_demo
from tests.helpers import call_command

# Committed, as the command runs against a database: the seeded emissions' rollups are applied at each commit.
pytestmark = pytest.mark.django_db(transaction=True)

factors = test_seed_demo.factors
ROUNDS = 2


def _run(tmp_path: Path, *args: str) -> tuple[ReportsBenchmark, str, str]:
    stdout = StringIO()
    command = Command()
    out = tmp_path / "reports.md"
    call_command(
        command, "--small", "small:30", "--large", "large:90", "--rounds", str(ROUNDS), "--output", str(out), *args,
        stdout=stdout,
    )  # fmt: skip
    return command.benchmark, out.read_text(encoding="utf-8"), stdout.getvalue()


def test_seeds_both_organizations_and_reports_every_summary_from_both_sources(factors: Any, tmp_path: Path) -> None:
    benchmark, markdown, stdout = _run(tmp_path)

    counts = dict(Emission.objects.values_list("organization__slug").annotate(n=Count("pk")).order_by())
    assert counts == {"small": 30, "large": 90}
    for slug, activities in counts.items():
        assert f"Organization '{slug}' has no activities: seeding {activities}" in stdout
    small, large = benchmark.sides
    assert (small.emissions, large.emissions) == (30, 90)
    assert all(len(timing.samples) == ROUNDS for side in benchmark.sides for timing in side.timings.values())

    rows = [
        line
        for line in markdown.splitlines()
        if line.startswith(("| by ", "| one supplier", "| inventory", "| admin dashboard"))
    ]
    assert [row.split(" | ")[0] for row in rows] == [
        "| by category",
        "| by supplier",
        "| by month",
        "| by method",
        f"| by category, year {large.year}",
        "| one supplier by month",
        f"| inventory report, year {large.year}",
        f"| admin dashboard, year {large.year}",
    ]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert all(re.fullmatch(r"[\d,.]+ ms", cell) for cell in cells[1:5]), row  # 2 samples: no p95
        assert all(re.fullmatch(r"[\d,.]+x", cell) for cell in cells[5:]), row
    assert "From the rollups, the worst large / small ratio is" in markdown
    assert "the bar is at least 20x" in markdown
    assert f"Admin dashboard, year {large.year}: " in markdown and "not held to the bar" in markdown
    assert "- large: organization `large`, 90 emissions; rollup groups:" in markdown
    assert (
        "DJANGO_SETTINGS_MODULE=vcci.settings_dev python manage.py bench_reports --small small:30 --large large:90 "
        f"--rounds {ROUNDS}"
    ) in markdown
    assert str(tmp_path) not in markdown and "/work/" not in markdown
    assert not get_user_model().objects.filter(username__startswith=CLIENT_USERNAME).exists()


def test_a_rollup_answer_that_differs_fails_loudly(
    factors: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    present = summaries.present_kg

    def off_by_one_from_the_rollups(value: Any) -> str:
        from django.conf import settings

        return present(value) + ("1" if settings.ROLLUP_READS else "")

    monkeypatch.setattr(summaries, "present_kg", off_by_one_from_the_rollups)
    with pytest.raises(CommandError, match="the rollups' body differs from the emissions' body"):
        _run(tmp_path)
    assert not (tmp_path / "reports.md").exists()
    assert not get_user_model().objects.filter(username__startswith=CLIENT_USERNAME).exists()


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--rounds must be at least 1; got 0"):
        _run(tmp_path, "--rounds", "0")
    with pytest.raises(CommandError, match="An organization is SLUG:ACTIVITIES"):
        call_command(Command(), "--small", "small", stdout=StringIO())
