"""``manage.py bench_serialization`` on a small organization: the table, the raw figures, nothing left behind."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.test import override_settings
from rest_framework.test import APIClient

from bench import serialization
from bench.management.commands.bench_serialization import Command
from bench.serialization import CLIENT_USERNAME, SIDE_LABELS, SIDES
from emissions.models import Organization
from tests.factories import EmissionFactory, OrganizationFactory, SupplierFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny() -> Organization:
    org = OrganizationFactory.create(slug="tiny")
    supplier = SupplierFactory.create(organization=org, name="Zürich \u2028")
    for day in range(1, 13):
        EmissionFactory.create(
            organization=org,
            activity__period_start=dt.date(2025, 1, day),
            activity__supplier=supplier if day % 2 else None,
            activity__category=1 + day % 3,
        )
    return org


def _run(tmp_path: Path, *args: str) -> tuple[Command, str, dict, str]:
    stdout = StringIO()
    command = Command(stdout=stdout, stderr=StringIO())
    out, raw = tmp_path / "serialization.md", tmp_path / "serialization.json"
    call_command(command, "--org", "tiny", "--runs", "2", "--output", str(out), "--json", str(raw), *args)
    return command, out.read_text(encoding="utf-8"), json.loads(raw.read_text(encoding="utf-8")), stdout.getvalue()


def test_reports_every_page_and_side_with_ratios(tiny: Organization, tmp_path: Path) -> None:
    command, markdown, figures, stdout = _run(tmp_path, "--depth", "5")
    header = next(line for line in markdown.splitlines() if line.startswith("| page |"))
    assert [SIDE_LABELS[side] for side in SIDES] == [cell.strip() for cell in header.strip("|").split("|")][1:6]
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| page")]
    cached = "; cache on: token and versions from the cache"
    assert [row.split("|")[1].strip() for row in rows] == [
        "next page, 5 rows down",
        "filtered first page (category=1)",
        "first page",
        "next page, 5 rows down" + cached,
        "filtered next page (category=1)" + cached,
    ]
    assert all(row.rstrip(" |").endswith("x") for row in rows)
    assert "python manage.py bench_serialization --org tiny --runs 2 --depth 5" in markdown
    assert markdown in stdout

    assert [page["page"] for page in figures["pages"]] == [result.page.name for result in command.benchmark.results]
    for page, result in zip(figures["pages"], command.benchmark.results, strict=True):
        assert set(page["median_seconds"]) == set(SIDES)
        assert all(len(samples) == 2 for samples in page["samples_seconds"].values())
        assert page["ratios_over_rows_request"]["rows_request"] == 1
        # One query for a page of model instances; the requests add the token's with the cache off, and read it
        # from the cache with it on (the benchmark's member is never committed, yet cached as a committed one).
        requests = 1 if result.page.cache else 2
        assert page["queries"] == {
            "plain": 1,
            "plain_render": 0,
            "serializer": 1,
            "drf_request": requests,
            "rows_request": requests,
        }
    deep = command.benchmark.results[0]
    assert deep.url.startswith("/api/v1/emissions/?after=") and deep.body_bytes > 0


def test_leaves_nothing_behind(tiny: Organization, tmp_path: Path) -> None:
    users = get_user_model().objects.count()
    _run(tmp_path)
    assert get_user_model().objects.count() == users
    assert not get_user_model().objects.filter(username=CLIENT_USERNAME).exists()


def test_an_unknown_or_empty_organization_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No organization 'tiny'"):
        _run(tmp_path)
    OrganizationFactory.create(slug="tiny")
    with pytest.raises(CommandError, match="has 0 emissions"):
        _run(tmp_path)


@pytest.mark.parametrize("args", [["--runs", "0"], ["--depth", "0"]])
def test_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    with pytest.raises(CommandError, match="must be at least 1"):
        call_command(Command(stdout=StringIO()), "--org", "tiny", *args, "--output", str(tmp_path / "x.md"))


def test_a_round_not_answered_200_fails_the_run(
    tiny: Organization, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One refusal in a middle round (the last round's answers are 200): its fast 429 must not pass as a page.
    calls = itertools.count(1)

    class RefusingOnce(serialization.WsgiClient):
        def get(self, url: str) -> serialization.Answer:
            if next(calls) == 3:  # the warm-up's two requests, then the first round's DRF request
                return serialization.Answer(429, (("Retry-After", "1"),), b"")
            return super().get(url)

    monkeypatch.setattr(serialization, "WsgiClient", RefusingOnce)
    with pytest.raises(CommandError, match=r"not answered 200 in every round \(\{'DRF 429': 1\}\)"):
        _run(tmp_path)


def test_the_wsgi_client_answers_what_the_test_client_does(tiny: Organization) -> None:
    # The benchmark's requests skip the test client's bookkeeping, not any of the server's work: the same request
    # through both gets the same status, headers and body, and leaves the connection's transaction open. The cache
    # off, as for the benchmark's first pages: each computes its page (neither is the other's cached body). The test
    # client goes last: it connects the connection recycling again after its request.
    with (
        serialization._member_token(tiny) as key,
        override_settings(CACHE_ENABLED=False),
        serialization.connections_kept(),
    ):
        headers = {"Authorization": f"Token {key}", "X-Request-ID": "same", "Accept": "application/json"}
        url = "/api/v1/emissions/?category=2"
        answer = serialization.WsgiClient(headers).get(url)
        expected = APIClient(HTTP_AUTHORIZATION=f"Token {key}", HTTP_X_REQUEST_ID="same").get(
            url, HTTP_ACCEPT="application/json"
        )
        assert answer.status_code == expected.status_code == 200
        assert answer.content == expected.content
        assert answer.headers == tuple(expected.items())
        assert answer.header("content-type") == "application/json"
        assert len(json.loads(answer.content)["results"]) == 4  # categories cycle 2, 3, 1 over the 12 days
        # Still inside the member's transaction: the token's user is there.
        assert get_user_model().objects.filter(username=CLIENT_USERNAME).exists()
    assert not get_user_model().objects.filter(username=CLIENT_USERNAME).exists()
