"""``manage.py bench_cache`` on a tiny organization: seeding, the report's tables and query counts, loud failures."""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token

from bench.cache import CLIENT_USERNAME, STATE_LABELS, STATES, CacheBenchmark
from bench.management.commands.bench_cache import Command
from emissions.models import ActivityRecord, Emission, Membership, Organization
from perf.conditional import CachedResponseMixin
from tests.emissions.management import test_seed_demo
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

# seed_demo's factors (its real activity keys, made by factories): the command seeds an empty organization with it.
factors = test_seed_demo.factors

ACTIVITIES = 50
ROUNDS = 3
ENDPOINTS = {
    "Emissions summary by category": "/api/v1/emissions/summary/?group_by=category",
    "Emissions list, first page": "/api/v1/emissions/",
}


def _run(tmp_path: Path, *args: str) -> tuple[CacheBenchmark, str, str]:
    """The command on organization ``tiny``: the benchmark it ran, the report it wrote and what it printed."""
    stdout = StringIO()
    command = Command(stdout=stdout, stderr=StringIO())
    out = tmp_path / "cache.md"
    call_command(
        command, "--org", "tiny", "--activities", str(ACTIVITIES), "--rounds", str(ROUNDS), "--output", str(out), *args
    )
    return command.benchmark, out.read_text(encoding="utf-8"), stdout.getvalue()


def _tables(markdown: str) -> dict[str, dict[str, dict[str, str]]]:
    """Each endpoint's table: {endpoint heading: {state label: {column: cell}}}."""
    tables: dict[str, dict[str, dict[str, str]]] = {}
    heading = None
    columns: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("| state |"):
            columns = [cell.strip() for cell in line.strip("|").split("|")]
            assert heading is not None
            tables[heading] = {}
        elif line.startswith("| ") and heading in tables:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            tables[heading][cells[0]] = dict(zip(columns, cells, strict=True))
    return tables


# Committed, as the command runs: the seeded emissions' rollups are applied, and the uncached summary is the token
# and the aggregate (inside a test's transaction it would first apply the pending rollup changes).
@pytest.mark.django_db(transaction=True)
def test_seeds_an_empty_org_and_reports_both_endpoints_in_every_state(factors: Any, tmp_path: Path) -> None:
    benchmark, markdown, stdout = _run(tmp_path)

    org = Organization.objects.get(slug="tiny")
    assert ActivityRecord.objects.for_org(org).count() == Emission.objects.for_org(org).count() == ACTIVITIES
    assert f"has no activities: seeding {ACTIVITIES}" in stdout

    tables = _tables(markdown)
    assert list(tables) == [f"{name}: `GET {url}`" for name, url in ENDPOINTS.items()]
    for table in tables.values():
        assert list(table) == [STATE_LABELS[state] for state in STATES]
        queries = {state: int(table[STATE_LABELS[state]]["SQL"]) for state in STATES}
        # The token and the data from the database uncached; nothing from it once cached, nor for a 304.
        assert queries == {"uncached": 2, "L2": 0, "L1": 0, "304": 0}
        redis = {state: int(table[STATE_LABELS[state]]["Redis calls"]) for state in STATES}
        assert redis["uncached"] == redis["L1"] == redis["304"] == 0 and redis["L2"] > 0
        for row in table.values():
            assert re.fullmatch(r"[\d,]+\.\dx", row["vs uncached"])
            assert re.fullmatch(r"[\d,.]+ ms", row["median"])
            assert re.fullmatch(r"[\d,]+", row["req/s"])
            assert row["p95"] == "—"  # 3 samples make no 95th percentile
        assert table[STATE_LABELS["uncached"]]["vs uncached"] == "1.0x"

    for report in benchmark.reports:
        assert report.endpoint.name in ENDPOINTS and report.body_bytes > 0
        assert [len(report.results[state].samples) for state in STATES] == [ROUNDS] * len(STATES)
        read = "emissions_emissionrollup" if "summary" in report.endpoint.name else "emissions_emission"
        assert report.results["uncached"].tables == ["authtoken_token", read]
    assert "SQL statements per request are as designed (uncached 2, L2 0, L1 0, 304 0)" in markdown
    assert re.search(r"Emissions summary by category: uncached [\d.]+ ms \(2 SQL statements", markdown)
    for heading in (
        "## What the numbers show",
        "## Machine",
        "**CPU**",
        "PostgreSQL",
        "**Redis**: Redis ",
        "## Reproduce",
    ):
        assert heading in markdown
    assert "CACHE_L1_TTL=" in markdown and "organization 'tiny' emissions**: 50" in markdown
    assert (
        f"DJANGO_SETTINGS_MODULE=vcci.settings_dev python manage.py bench_cache --org tiny --rounds {ROUNDS} "
        f"--activities {ACTIVITIES}"
    ) in markdown
    assert str(tmp_path) not in markdown and "/home/" not in markdown and "/work/" not in markdown

    # The temporary API user is gone, with its token and membership.
    assert not get_user_model().objects.filter(username=CLIENT_USERNAME).exists()
    assert not Token.objects.exists() and not Membership.objects.exists()


def test_an_org_with_activities_is_not_seeded_again(factors: Any, tmp_path: Path) -> None:
    _run(tmp_path)
    _, _, stdout = _run(tmp_path)
    assert "has no activities" not in stdout
    assert ActivityRecord.objects.for_org(Organization.objects.get(slug="tiny")).count() == ACTIVITIES


def test_a_cached_body_that_differs_from_the_uncached_one_fails_loudly(
    factors: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    render = CachedResponseMixin._render

    def altered(self: CachedResponseMixin, *args: Any, **kwargs: Any) -> list[Any]:
        status, content_type, body, gzipped = render(self, *args, **kwargs)
        return [status, content_type, body + b" ", gzipped]

    monkeypatch.setattr(CachedResponseMixin, "_render", altered)
    with pytest.raises(CommandError, match="the L2 body differs from the uncached one"):
        _run(tmp_path)
    assert not (tmp_path / "cache.md").exists()
    assert not get_user_model().objects.filter(username=CLIENT_USERNAME).exists()


def test_bad_options_and_a_disabled_cache_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--rounds must be at least 1; got 0"):
        _run(tmp_path, "--rounds", "0")
    with override_settings(CACHE_ENABLED=False), pytest.raises(CommandError, match="CACHE_ENABLED is off"):
        _run(tmp_path)
    assert not (tmp_path / "cache.md").exists()
    assert not Organization.objects.filter(slug="tiny").exists()
