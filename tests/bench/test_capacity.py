"""bench.capacity: the bars read from the load tests' summaries, and the report rendered from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import capacity, trace


def endpoint(method: str, name: str, *, requests: int = 100, p95: float = 100, p99: float = 200) -> dict[str, Any]:
    return {
        "method": method,
        "name": name,
        "requests": requests,
        "failures": 0,
        "p50_ms": 10.0,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": p99,
        "rps": requests / 60,
    }


def summary(
    users: int,
    *,
    wait_scale: float = 1.0,
    served_rps: float = 100.0,
    timeouts: int = 0,
    refused: int = 0,
    failed: int = 0,
    max_ms: float = 900.0,
    endpoints: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "run": {"users": users, "duration": "2m", "wait_scale": wait_scale, "cpu": None},
        "endpoints": endpoints
        or [
            endpoint("GET", "/api/v1/emissions/"),
            endpoint("POST", "/api/v1/calculate/batch/", p95=2000, p99=4000),  # heavy: its own figures
            endpoint("GET", "/api/v1/emissions/ (refused)", requests=refused),
        ],
        "aggregated": {"rps": served_rps, "p50_ms": 10.0, "p95_ms": 100.0, "p99_ms": 300.0},
        "outcomes": {
            "requests": 10_000,
            "served_rps": served_rps,
            "max_ms": max_ms,
            "failed": failed,
            "timeouts": timeouts,
            "refused": refused,
        },
        "cache": {"hit_rate": 0.95, "per_resource": {"emissions": {"hit_rate": 0.9}}},
    }


def results(seed: list[dict[str, Any]], overload: list[dict[str, Any]], ratio: float | None = 4.0) -> dict[str, Any]:
    def runs(summaries: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
        return [{"scenario": scenario, "point": capacity.run_point(s), "summary": s} for s in summaries]

    return {
        "runs": {"seed": runs(seed, "seed"), "overload": runs(overload, "overload")},
        "serialization": {"ratio": ratio, "markdown": "| page | ratio |"},
    }


def verdicts(data: dict[str, Any]) -> list[bool | None]:
    return [bar["ok"] for bar in capacity.bars(data)]


def test_every_bar_holds() -> None:
    data = results(
        [summary(50), summary(500)],
        [summary(50, wait_scale=0, served_rps=800), summary(500, wait_scale=0, served_rps=760, refused=300)],
    )
    assert verdicts(data) == [True] * 7


def test_heavy_endpoints_and_refusals_are_not_interactive() -> None:
    point = capacity.run_point(summary(500))
    assert point["interactive_worst_p95_ms"] == 100 and point["interactive_worst_p99_ms"] == 200


@pytest.mark.parametrize(
    ("seed_500", "missed"),
    [
        (summary(500, timeouts=1), "no timeout"),
        (summary(500, refused=5, failed=1), "errors + refusals"),
        (summary(500, endpoints=[endpoint("GET", "/api/v1/factors/", p95=301)]), "p95"),
        (summary(500, endpoints=[endpoint("PATCH", "/api/v1/suppliers/{id}/", p99=800)]), "p99"),
    ],
)
def test_each_seed_bar_is_judged_at_the_most_users(seed_500: dict[str, Any], missed: str) -> None:
    data = results([summary(50, timeouts=9), seed_500], [])
    broken = [bar["name"] for bar in capacity.bars(data) if bar["ok"] is False]
    assert len(broken) == 1 and missed in broken[0]


def test_overload_collapse_and_long_waits_are_missed() -> None:
    collapse = results([], [summary(100, wait_scale=0, served_rps=1000), summary(500, wait_scale=0, served_rps=899)])
    assert [bar["ok"] for bar in capacity.bars(collapse)][:2] == [True, False]
    waited = results([], [summary(100, wait_scale=0), summary(500, wait_scale=0, max_ms=5001)])
    assert capacity.bars(waited)[0]["ok"] is False


def test_a_slow_page_misses_the_serialization_bar() -> None:
    assert capacity.bars(results([], [], ratio=2.9))[-1]["ok"] is False
    assert capacity.bars(results([], [], ratio=None))[-1]["ok"] is False


def test_the_report_renders_from_results_json(tmp_path: Path) -> None:
    data = results([summary(50), summary(500)], [summary(50, wait_scale=0), summary(500, wait_scale=0)])
    for runs in data["runs"].values():  # as in a results.json kept before each point had organizations of its own
        for run in runs:
            del run["point"]["activities_at_end"]
    before = tmp_path / "before" / "seed-500-3m"
    before.mkdir(parents=True)
    (before / "summary.json").write_text(json.dumps(summary(500, timeouts=653, failed=653)))
    (tmp_path / "before" / "README.md").write_text("Made with the earlier main.")
    raw = tmp_path / "raw"
    raw.mkdir()
    data |= {
        "started_at": "2026-12-03T12:00:00+00:00",
        "command": "make capacity",
        "raw_dir": "raw",
        "ceiling": {"connections": 64, "seconds": 10, "rounds": 3, "rps": 2000.0, "wrk_version": "wrk 4"},
        "before": capacity.read_before(tmp_path / "before"),
        "machine": {"Cores": "2"},
    }
    (raw / "results.json").write_text(json.dumps(data))
    # The prose saying how the earlier runs were made is read again; their figures come from results.json.
    (tmp_path / "before" / "README.md").write_text("Made with the earlier main, on a machine of the same kind.")
    out = tmp_path / "docs" / "capacity.md"
    argv = ["--render-only", "--raw-dir", str(raw), "--out", str(out), "--before", str(tmp_path / "before")]

    def rendered(data: dict[str, Any]) -> str:
        (raw / "results.json").write_text(json.dumps(data))
        assert capacity.main(argv) == 0
        return out.read_text()

    status = capacity.main(argv)
    assert status == 0
    text = out.read_text()
    assert "**2,000 req/s**" in text
    assert "Made with the earlier main, on a machine of the same kind." in text and "seed-500-3m: before" in text
    assert "| GET /api/v1/emissions/ (refused) | refused |" in text
    # These points have no CPU figures and no organization counts, and the curve does not claim organizations per point.
    assert "| activities per organization at the end |" in text and "| — | — |" in text
    assert "organizations of its own" not in text
    data["organizations"] = {"count": 2, "activities": 20_000}
    for runs in data["runs"].values():
        for run in runs:
            run["point"]["activities_at_end"] = [61_204, 58_917]
    text = rendered(data)
    assert "Each point runs on 2 organizations of its own, seeded with 20,000 activities each" in text
    assert "| 61,204 / 58,917 |" in text
    assert "| event loop lag p99 ms (over 100 ms): workers / bulk pool / locust |" in text
    # A run measured on both sides shows each side's p99 bucket and share over 100 ms; the others show none.
    lag = {"ticks": 1000, "p50_ms": 50.0, "p99_ms": 250.0, "over_100ms": 0.12, "max_ms": None, "last_bound_ms": 5000}
    locust = {**lag, "p99_ms": None, "over_100ms": 0.02, "max_ms": 6100.0, "processes": 2}
    data["runs"]["overload"][-1]["summary"]["run"]["event_loop_lag"] = {
        "server": {"main": lag, "bulk": {**lag, "p99_ms": 1000.0, "over_100ms": 0.315}},
        "load_generator": locust,
    }
    text = rendered(data)
    assert "| <= 250 (12.00 %) / <= 1,000 (31.50 %) / > 5,000 (2.00 %) |" in text
    assert text.count("| — | 61,204 / 58,917 |") == 3  # the three runs without the measurement
    # A traced point shows where its requests' time went, under its endpoints.
    assert "the request trace" not in text
    records = [
        trace.Traced("GET /api/v1/emissions/", 1000.0, 1000.2, 200, False, 1000.15, 1000.2, opened=True),
        trace.Traced("GET /api/v1/emissions/", 1020.0, 1020.05, 200, False, 1020.01, 1020.05, opened=False),
    ]
    data["runs"]["seed"][-1]["summary"]["run"]["trace"] = trace.summarize(records, ramp_seconds=10)
    text = rendered(data)
    assert "Where locust's time went at 500 users (the request trace)." in text
    opened = "| ramp: requests that opened a connection | 1 | 0 | 200 / 200 / 200 | 150 / 150 / 150 | 50 / 50 / 50 |"
    assert opened in text
    assert "| GET /api/v1/emissions/ | 1 | 0 | 50 / 50 / 50 | 10 / 10 / 10 | 40 / 40 / 40 |" in text
    assert (tmp_path / "docs" / "capacity" / "seed.png").is_file()
    assert (tmp_path / "docs" / "capacity" / "overload.png").is_file()


def test_the_serialization_bar_reads_the_worst_page() -> None:
    data = {
        "organization": "bench",
        "emissions": 1_000_000,
        "pages": [
            {"page": "next page", "median_seconds": {"plain": 0.03}, "ratios_over_rows_request": {"plain": 3.4}},
            {"page": "filtered", "median_seconds": {"plain": 0.03}, "ratios_over_rows_request": {"plain": 2.9}},
        ],
    }
    report = "# Serialization benchmark\n\nExplained.\n\n| page | x |\n\n## Machine\n\n- CPU\n"
    result = capacity.serialization_result(data, report)
    assert result["ratio"] == 2.9 and result["rows"] == 1_000_000
    assert result["markdown"] == "Explained.\n\n| page | x |"
    assert capacity.bars({"serialization": result})[-1]["ok"] is False


def test_every_point_of_the_curve_runs_on_organizations_of_its_own(tmp_path: Path) -> None:
    """The ERP users' writes grow the organizations: each point seeds its own, so no point runs on another's data."""
    options = capacity.parser().parse_args(["--org-prefix", "cap", "--activities", "5000"])
    prefixes = {
        capacity.point_prefix(options, scenario, users) for scenario in capacity.SCENARIOS for users in (50, 500)
    }
    assert prefixes == {"cap-seed-50", "cap-seed-500", "cap-overload-50", "cap-overload-500"}
    args = capacity.loadtest_args(options, 50, "2m", 1.0, tmp_path, prefix="cap-seed-50")
    assert args[args.index("--org-prefix") + 1] == "cap-seed-50"
    assert args[args.index("--activities") + 1] == "5000"
    default = capacity.parser().parse_args([])
    assert capacity.point_prefix(default, "overload", 200) == "loadtest-overload-200"


def test_the_curve_runs_each_point_on_its_own_organizations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int, str]] = []
    traced: list[int] = []

    def fake_run(options: Any) -> int:
        seen.append((options.org_prefix, options.users, options.duration))
        if options.trace:
            traced.append(options.users)
        Path(options.out).mkdir(parents=True, exist_ok=True)
        Path(options.out, "summary.json").write_text(json.dumps(summary(options.users)))
        return 0

    monkeypatch.setattr(capacity.lt, "run", fake_run)
    options = capacity.parser().parse_args(["--org-prefix", "cap", "--users", "50,500", "--seed-duration", "3m"])
    runs = capacity.run_curve(options, tmp_path)
    assert seen == [
        ("cap-seed-50", 50, "2m"),
        ("cap-seed-500", 500, "3m"),
        ("cap-overload-50", 50, "2m"),
        ("cap-overload-500", 500, "2m"),
    ]
    assert [run["point"]["users"] for run in runs["overload"]] == [50, 500]
    assert traced == [500, 500]  # each scenario's largest point has its request trace


def test_a_point_reports_its_organizations_activities_at_the_end() -> None:
    run = summary(500)
    run["machine"] = {
        "Cores": "2",
        "Rows: organization 'cap-seed-500-a' activities": "61,204",
        "Rows: organization 'cap-seed-500-a' emissions": "61,204",
        "Rows: organization 'cap-seed-500-b' activities": "58,917",
    }
    assert capacity.run_point(run)["activities_at_end"] == [61_204, 58_917]
    assert capacity.run_point(summary(50))["activities_at_end"] == []
