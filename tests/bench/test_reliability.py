"""bench.reliability: failures placed in time, the write accounting, the goals and the report."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import reliability
from bench.reliability import Attempt, LoadOutcome


def outcome(history: list[tuple[float, int, int]], failures: int = 0) -> LoadOutcome:
    return LoadOutcome(requests=history[-1][1] if history else 0, failures=failures, history=history)


def test_failures_between_reads_locusts_cumulative_history():
    load = outcome([(100.0, 10, 0), (101.0, 20, 0), (102.0, 30, 3), (103.0, 40, 5), (104.0, 50, 5)], failures=5)
    assert load.failures_between(101.0, 103.0) == 5
    assert load.failures_between(102.0, 104.0) == 2
    assert load.failures_between(103.5, float("inf")) == 0
    assert load.failures_between(0.0, 99.0) == 0


def test_read_history_keeps_the_aggregated_rows(tmp_path: Path):
    path = tmp_path / "locust_stats_history.csv"
    path.write_text(
        "Timestamp,User Count,Type,Name,Total Request Count,Total Failure Count\n"
        "1700000000,10,GET,/api/v1/suppliers/,4,0\n"
        "1700000000,10,,Aggregated,12,1\n"
        "1700000001,10,,Aggregated,25,2\n",
        encoding="utf-8",
    )
    assert reliability.read_history(path) == [(1700000000.0, 12, 1), (1700000001.0, 25, 2)]
    assert reliability.read_history(tmp_path / "missing.csv") == []


def test_failed_counts_what_started_in_the_window_without_a_2xx():
    attempts = [
        Attempt(1.0, 1.1, 200),
        Attempt(2.0, 2.1, 503),
        Attempt(3.0, 13.0, 0, "ReadTimeout"),
        Attempt(4.0, 4.1, 201),
        Attempt(5.0, 5.1, 409),
    ]
    assert [a.started for a in reliability.failed(attempts)] == [2.0, 3.0, 5.0]
    assert [a.started for a in reliability.failed(attempts, 3.0, 5.0)] == [3.0]


def test_writer_batches_name_each_activity_once():
    writer = reliability.Writer("http://127.0.0.1:1", "token", "rel-x", size=3)
    body, refs = writer.batch(7)
    assert refs == ["rel-x-7-0", "rel-x-7-1", "rel-x-7-2"]
    assert [item["external_ref"] for item in json.loads(body)] == refs


def results(**overrides: Any) -> dict[str, Any]:
    writes = {
        "batches": 40,
        "acknowledged_rows": 400,
        "lost": [],
        "duplicated": [],
        "committed_unacknowledged": [],
        "attempts": 55,
        "replays": 3,
        "given_up": 0,
    }
    data: dict[str, Any] = {
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:06:00+00:00",
        "redis": {
            "load": outcome([(1.0, 900, 0)]),
            "down_s": 15.0,
            "failed_during": 0,
            "probe_failed": 0,
            "probes": 600,
        },
        "postgres": {
            "load": outcome([(1.0, 800, 0)]),
            "down_s": 1.2,
            "failed_after_back": 0,
            "locust_failed_after_back": 0,
            "own_failed_after_back": 0,
            "own_failed_during": 12,
            "recovered_s": 0.3,
            "writes": writes,
        },
        "timeouts": {**writes, "batches": 20, "size": 200, "timed_out": 20, "rows": 4000, "attempts": 60},
        "abuse": {
            "tokens": 300,
            "token_seconds": 3.0,
            "token_statuses": {401: 20, 429: 280},
            "passwords": 50,
            "password_statuses": {200: 5, 429: 45},
            "right_password_after": 429,
            "right_password_logged_in": False,
            "owner_logged_in": True,
            "client_requests": 100,
            "client_failed": 0,
        },
        "fuzz": {
            "operations": 20,
            "cases": 1500,
            "server_errors": 0,
            "schema_violations": 0,
            "failures": [],
            "command": f"{reliability.ROOT}/.venv/bin/schemathesis --config-file {reliability.ROOT}/schemathesis.toml "
            "run http://127.0.0.1:8766/api/schema/ --report-json-path "
            f"{tempfile.gettempdir()}/vcci-fuzz-x1/report.json",
        },
    }
    for name, changes in overrides.items():
        data[name] = {**data[name], **changes}
    return data


def test_every_goal_met_renders_as_met():
    measured = reliability.goals(results())
    assert len(measured) == 10
    assert all(met for _, _, met in measured)


@pytest.mark.parametrize(
    ("scenario", "changes", "goal"),
    [
        ("redis", {"probe_failed": 1}, "Redis killed"),
        ("postgres", {"failed_after_back": 2}, "failed requests after it is back"),
        ("timeouts", {"rows": 4200}, "exactly once"),
        ("abuse", {"token_statuses": {401: 300}}, "tokens stopped"),
        ("abuse", {"right_password_logged_in": True}, "password guessing"),
        ("abuse", {"owner_logged_in": False}, "another address"),
        ("abuse", {"client_failed": 3}, "legitimate client"),
        ("fuzz", {"server_errors": 1}, "5xx"),
        ("fuzz", {"schema_violations": 2}, "schema violations"),
    ],
)
def test_a_missed_goal_is_reported(scenario, changes, goal):
    missed = [what for what, _, met in reliability.goals(results(**{scenario: changes})) if not met]
    assert len(missed) == 1
    assert goal in missed[0]


def test_a_lost_or_duplicated_write_misses_its_goal():
    data = results()
    data["postgres"]["writes"] = {**data["postgres"]["writes"], "duplicated": ["rel-pg-3-1"]}
    missed = [what for what, figure, met in reliability.goals(data) if not met]
    assert missed == ["PostgreSQL restarted: acknowledged writes lost or duplicated (must be 0)"]


def test_the_report_names_its_command_and_figures():
    options = argparse.Namespace(users=50, activities=20000)
    text = reliability.render(results(), options)
    assert "`python -m bench.reliability --users 50 --activities 20000`" in text
    assert "| Redis killed for 15 s: failed requests (goal 0) | 0 | yes |" in text
    assert "20 x 401, 280 x 429" in text
    assert "4,000 rows for 4,000 activities" in text
    assert ".venv/bin/schemathesis --config-file schemathesis.toml run" in text
    assert "--report-json-path report.json" in text
    assert str(reliability.ROOT) not in text
    assert tempfile.gettempdir() + "/" not in text
