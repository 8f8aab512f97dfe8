"""bench.jobs: rates, the ratio to seeding, the comparison of a killed run with an undisturbed one, the report."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import jobs


def test_rate_is_rows_per_second_and_zero_without_time():
    assert jobs.rate(1000, 4.0) == 250.0
    assert jobs.rate(1000, 0.0) == 0.0


def test_seeding_ratio_scales_the_seeding_time_to_the_jobs_rows():
    # Seeding 1000 rows took 10 s, so 500 rows take 5 s: a job of 500 rows in 7.5 s is 1.5x.
    assert jobs.seeding_ratio(job_seconds=7.5, job_rows=500, seed_seconds=10.0, seed_rows=1000) == pytest.approx(1.5)
    assert jobs.seeding_ratio(job_seconds=7.5, job_rows=500, seed_seconds=10.0, seed_rows=0) is None
    assert jobs.seeding_ratio(job_seconds=7.5, job_rows=0, seed_seconds=10.0, seed_rows=1000) is None


def test_differences_name_each_key_that_differs_or_is_missing():
    undisturbed = {"activities": 10, "co2e_kg": "5.0", "audit entries": '{"x insert": 10}'}
    assert jobs.differences(undisturbed, dict(undisturbed)) == []
    killed = {**undisturbed, "activities": 9}
    del killed["audit entries"]
    assert jobs.differences(undisturbed, killed) == [
        "activities: 10 != 9",
        "audit entries: '{\"x insert\": 10}' != None",
    ]


def summary() -> dict[str, Any]:
    run = {"jobs": [1, 2], "rows": 1000, "seconds": 2.0, "rows_per_s": 500.0, "seeding_ratio": 1.25}
    figures = {"activities": 1000, "co2e_kg": "12.5"}
    return {
        "date": "2026-01-02 03:04 UTC",
        "machine": {"cores": 2, "cpu": "Test CPU", "memory_gb": 4.0},
        "activities": 1000,
        "command": "make bench-jobs JOBS_ACTIVITIES=1000",
        "seed": {"rows": 1000, "seconds": 1.6, "rows_per_s": 625.0},
        "recalculation": {
            "runs": [
                {**run, "concurrency": 1, "transition": "original -> x1.05"},
                {**run, "concurrency": 2, "transition": "x1.05 -> original", "rows_per_s": 800.0},
            ],
            "speedup": 1.6,
            "goal_ratio": 2.0,
            "goal_met": True,
        },
        "import": {
            "rows": 1000,
            "csv_mb": 0.1,
            "api": {"rows": 1000, "seconds": 4.0, "rows_per_s": 250.0, "job": 3},
            "command": {"rows": 1000, "seconds": 5.0, "rows_per_s": 200.0},
            "api_to_command": 1.25,
        },
        "kills": {
            "import": {
                "killed": 2,
                "attempts": 2,
                "state": "succeeded",
                "undisturbed": figures,
                "killed_run": dict(figures),
                "differences": [],
            }
        },
        "kills_equal": True,
    }


def test_render_states_the_rates_the_speedup_and_an_equal_kill():
    text = jobs.render(summary())
    assert "Run 2026-01-02 03:04 UTC on 2 CPU cores (Test CPU), 1,000 stored emissions" in text
    assert "| 1,000 | 1.6 | 625 |" in text
    assert "| 1 | original -> x1.05 | 2 | 1,000 | 2.0 | 500 | 1.25x |" in text
    assert "| 2 | x1.05 -> original | 2 | 1,000 | 2.0 | 800 | 1.25x |" in text
    assert "Speed-up from the second worker process: **1.60x**" in text
    assert "**met**." in text
    assert "| `POST /api/v1/imports/` (upload to job end, worker of 2 processes) | 1,000 | 4.0 | 250 |" in text
    assert "| import | 2 | 2 | succeeded | equal |" in text
    assert "| co2e_kg | 12.5 | 12.5 |" in text
    assert "make bench-jobs JOBS_ACTIVITIES=1000" in text


def test_render_reports_a_missed_goal_and_a_differing_kill():
    data = copy.deepcopy(summary())
    data["recalculation"]["goal_met"] = False
    kill = data["kills"]["import"]
    kill["killed_run"]["activities"] = 999
    kill["differences"] = jobs.differences(kill["undisturbed"], kill["killed_run"])
    data["kills_equal"] = False
    text = jobs.render(data)
    assert "**missed**." in text
    assert "| import | 2 | 2 | succeeded | **not equal**: activities: 1000 != 999 |" in text
    assert "a killed run differed from the undisturbed one" in text
