"""The performance report's pure parts (``bench.report``): wrk output parsing, ratios to the bare-view ceiling,
the bar verdicts, Markdown rendering and the PNG charts, from small fake results. Nothing is started and no
number is compared with the wall clock.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.report import CEILING_BAR, WRK_MARKER

WRK_TEXT = """\
Running 10s test @ http://127.0.0.1:40001/healthz
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.95ms    1.02ms  20.00ms   90.00%
    Req/Sec     4.10k   300.00     4.50k    70.00%
  Latency Distribution
     50%    1.90ms
     75%    2.30ms
     90%    3.00ms
     99%  850.00us
  41000 requests in 10.00s, 6.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 5
Requests/sec:   4100.00
Transfer/sec:    614.00KB
"""


def point(target: str, concurrency: int, rps: float) -> dict[str, Any]:
    return {"target": target, "concurrency": concurrency, "rps": rps, "p50_ms": 1.0, "p99_ms": 5.0, "errors": 0}


def fake_results() -> dict[str, Any]:
    """A results structure as ``bench.report.run`` builds it, small and with round numbers."""
    points = report.add_ratios(
        [
            point("healthz", 1, 1000),
            point("summary", 1, 900),
            point("list", 1, 700),
            point("summary_304", 1, 950),
            point("list_304", 1, 940),
            point("healthz", 8, 2000),
            point("summary", 8, 1700),
            point("list", 8, 1000),
            point("summary_304", 8, 1900),
            point("list_304", 8, 1800),
        ]
    )
    endpoint = {
        "method": "GET",
        "name": "/api/v1/emissions/",
        "requests": 100,
        "failures": 0,
        "p50_ms": 3.0,
        "p95_ms": 9.0,
        "p99_ms": 20.0,
        "rps": 10.0,
    }
    aggregated = {**endpoint, "name": "Aggregated", "requests": 300, "rps": 30.0, "error_rate": 0.0}
    return {
        "quick": True,
        "date": "2026-01-01 00:00 UTC",
        "command": "python -m bench.report --quick",
        "elapsed_s": 60,
        "ceiling": {
            "points": points,
            "duration_s": 2,
            "warmup_s": 1,
            "threads": 1,
            "wrk_version": "wrk 4.1.0",
            "server": {"workers": "2", "worker_class": "gevent"},
            "body_bytes": {"healthz": 16, "summary": 1200},
        },
        "worker_classes": [
            {
                "worker_class": "gevent",
                "rps": 30.0,
                "p50_ms": 3.0,
                "p95_ms": 9.0,
                "p99_ms": 20.0,
                "requests": 300,
                "failures": 0,
                "error_rate": 0.0,
                "cache_hit_rate": 0.97,
            },
            {
                "worker_class": "sync",
                "rps": 20.0,
                "p50_ms": 5.0,
                "p95_ms": 40.0,
                "p99_ms": 90.0,
                "requests": 200,
                "failures": 2,
                "error_rate": 0.01,
                "cache_hit_rate": 0.96,
            },
            {"worker_class": "gthread", "error": "gunicorn did not start"},
        ],
        "loadtest": {
            "users": 10,
            "duration": "10s",
            "wait_scale": 1.0,
            "orgs": 1,
            "server": {"workers": "2", "worker_class": "gevent"},
            "endpoints": [endpoint, {**endpoint, "name": "/api/v1/factors/", "p95_ms": 30.0}],
            "aggregated": aggregated,
            "cache_hit_rate": 0.97,
            "thresholds": [{"name": "error rate", "ok": True, "detail": "0.00 % <= 0.00 %"}],
            "broken": [],
        },
        "db": {
            "report": "benchmarks/db.md",
            "runs": 1,
            "rows": [
                {
                    "benchmark": "Store 50 activities",
                    "naive_ms": 200.0,
                    "optimized_ms": 10.0,
                    "naive_label": "per row",
                    "optimized_label": "COPY",
                    "ratio": 20.0,
                },
                {
                    "benchmark": "CSV export",
                    "naive_ms": None,
                    "optimized_ms": 50.0,
                    "naive_label": "",
                    "optimized_label": "36,000 rows/s",
                    "ratio": None,
                },
            ],
            "findings": ["the bulk path is 20.0x faster"],
        },
        "cache": {
            "report": "benchmarks/cache.md",
            "rounds": 5,
            "endpoints": [
                {
                    "name": "Emissions summary by category",
                    "url": "/api/v1/emissions/summary/?group_by=category",
                    "body_bytes": 1200,
                    "states": {
                        "uncached": {"median_ms": 10.0, "p95_ms": None, "queries": 2},
                        "L2": {"median_ms": 2.0, "p95_ms": None, "queries": 0},
                        "L1": {"median_ms": 1.0, "p95_ms": None, "queries": 0},
                        "304": {"median_ms": 0.8, "p95_ms": None, "queries": 0},
                    },
                }
            ],
        },
        "machine": {"CPU": "test CPU", "Cores": "2"},
        "notes": ["a note"],
        "errors": [{"phase": "load test (gthread)", "message": "gunicorn did not start"}],
    }


# -- wrk ---------------------------------------------------------------------------------------------------


def test_parse_wrk_text_report() -> None:
    result = report.parse_wrk(WRK_TEXT)
    assert result.requests == 41000
    assert result.duration_s == pytest.approx(10.0)
    assert result.rps == pytest.approx(4100.0)
    assert result.p50_ms == pytest.approx(1.9)
    assert result.p90_ms == pytest.approx(3.0)
    assert result.p99_ms == pytest.approx(0.85)  # microseconds converted
    assert (result.errors_socket, result.errors_timeout, result.errors_status) == (6, 4, 5)
    assert result.errors == 15


def test_parse_wrk_prefers_the_script_json_line() -> None:
    data = {
        "requests": 5000, "duration_us": 2_000_000, "bytes": 1, "connect": 0, "read": 1, "write": 0, "status": 2,
        "timeout": 0, "p50_us": 750, "p90_us": 1500, "p99_us": 4000, "mean_us": 800.0, "max_us": 9000,
    }  # fmt: skip
    result = report.parse_wrk(WRK_TEXT + WRK_MARKER + json.dumps(data) + "\n")
    assert result.requests == 5000
    assert result.rps == pytest.approx(2500.0)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (0.75, 1.5, 4.0)
    assert result.errors == 3


def test_parse_wrk_without_a_report_raises() -> None:
    with pytest.raises(ValueError, match="no wrk report"):
        report.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(("text", "ms"), [("850.00us", 0.85), ("1.90ms", 1.9), ("2.01s", 2010.0), ("1.00m", 60_000.0)])
def test_parse_time_ms(text: str, ms: float) -> None:
    assert report.parse_time_ms(text) == pytest.approx(ms)


def test_parse_time_ms_refuses_other_text() -> None:
    with pytest.raises(ValueError):
        report.parse_time_ms("fast")


def test_wrk_command_never_more_threads_than_connections() -> None:
    command = report.wrk_command(
        "http://127.0.0.1:1/x", concurrency=1, duration_s=3, threads=4, headers={"A": "b"}, script=None
    )
    assert command[:7] == ["wrk", "-t", "1", "-c", "1", "-d", "3s"]
    assert command[command.index("-H") : command.index("-H") + 2] == ["-H", "A: b"]
    assert command[-1] == "http://127.0.0.1:1/x"


# -- ratios and verdicts -----------------------------------------------------------------------------------


def test_combine_rounds_takes_medians_and_sums_errors() -> None:
    rounds = [
        report.WrkResult(1000, 5.0, 200.0, 1.0, 2.0, 9.0, errors_status=1),
        report.WrkResult(4000, 5.0, 800.0, 0.4, 0.8, 3.0),
        report.WrkResult(5000, 5.0, 1000.0, 0.3, None, 2.0, errors_socket=2),
    ]
    point = report.combine_rounds(rounds)
    assert point["rps"] == 800.0  # the disturbed first round does not count
    assert (point["p50_ms"], point["p90_ms"], point["p99_ms"]) == (0.4, 1.4, 3.0)
    assert (point["errors"], point["errors_status"], point["errors_socket"]) == (3, 1, 2)
    assert point["requests"] == 10_000 and point["rounds_rps"] == [200.0, 800.0, 1000.0]
    with pytest.raises(ValueError):
        report.combine_rounds([])


def test_missed_bars_name_every_cached_get_under_the_bar_and_every_broken_threshold() -> None:
    points = report.add_ratios(
        [
            {"target": "healthz", "concurrency": 8, "rps": 1000.0},
            {"target": "summary", "concurrency": 8, "rps": 850.0},
            {"target": "list", "concurrency": 8, "rps": 700.0},
        ]
    )
    results = {"ceiling": {"points": points}, "loadtest": {"broken": ["cache hit rate: 90.0 % < 95.0 %"]}}
    assert report.missed_bars(results) == [
        "emissions list page 1, 200: 0.70x of the ceiling, under 0.8x",
        "load test: cache hit rate: 90.0 % < 95.0 %",
    ]
    points[2]["rps"] = 800.0
    assert report.missed_bars({"ceiling": {"points": points}, "loadtest": {"broken": []}}) == []
    assert report.missed_bars({}) == []


def test_add_ratios_divides_by_the_bare_view_at_the_same_concurrency() -> None:
    points = report.add_ratios([point("healthz", 1, 1000), point("summary", 1, 800), point("summary", 8, 900)])
    assert [p["ratio"] for p in points] == [1.0, 0.8, None]  # no /healthz at 8 connections: no ratio


def test_ceiling_is_the_bare_views_best_and_share_handles_missing_values() -> None:
    points = fake_results()["ceiling"]["points"]
    assert report.ceiling_rps(points) == 2000
    assert report.share(1000, 2000) == 0.5
    assert report.share(None, 2000) is None
    assert report.share(1000, None) is None


def test_bar_verdicts_compare_peaks_with_the_ceiling() -> None:
    verdicts = {v["target"]: v for v in report.bar_verdicts(fake_results()["ceiling"]["points"])}
    summary, listing = verdicts["summary"], verdicts["list"]
    assert summary["peak_ratio"] == pytest.approx(0.85) and summary["met"]
    assert summary["worst_ratio"] == pytest.approx(0.85) and summary["worst_concurrency"] == 8
    assert listing["peak_ratio"] == pytest.approx(0.5) and not listing["met"]
    assert listing["peak_ratio"] < CEILING_BAR


# -- rendering ---------------------------------------------------------------------------------------------


def test_render_markdown_has_every_table_ratio_and_finding() -> None:
    text = report.render_markdown(fake_results(), {"throughput": "performance/throughput.png"})
    assert text.startswith("# Performance report\n")
    assert "**--quick run**" in text
    # The ceiling table: the ratio to /healthz at the same concurrency and to the best /healthz.
    assert "| 8 | summary by category, 200 | 1,700 | 0.85x | 0.85x | 1.00 ms | 5.00 ms | 0 |" in text
    assert "| 1 | summary by category, 200 | 900 | 0.90x | 0.45x |" in text
    # Findings computed from the numbers, including a bar that is not met, said plainly.
    assert "0.85x of the ceiling, which meets the >= 0.8x bar" in text
    assert "0.50x of the ceiling, which does NOT meet the >= 0.8x bar" in text
    # Worker classes, with the one that failed, and every throughput as a share of the ceiling.
    assert "| gevent | 30.0 | 0.015x | 3.00 ms | 9.00 ms | 20.0 ms | 300 | 0 (0.00 %) | 97.00 % |" in text
    assert "| gthread | not run: gunicorn did not start |" in text
    # The load test per endpoint, the totals, thresholds; db and cache tables with links to their reports.
    assert "| GET /api/v1/factors/ | 100 | 0 | 3.00 ms | 30.0 ms | 20.0 ms | 10.0 | 0.005x |" in text
    assert "| **all requests** | 300 |" in text
    assert "- threshold error rate: ok" in text
    assert "| Store 50 activities | 200 ms (per row) | 10.0 ms (COPY) | 20.0x |" in text
    assert "| CSV export | — | 50.0 ms (36,000 rows/s) | — |" in text
    assert "[benchmarks/db.md](benchmarks/db.md)" in text
    assert "| Emissions summary by category | L1 | 1.00 ms | — | 1,000 | 1.00x | 0 |" in text
    # Charts only where one was written; machine, command, notes and failed phases.
    assert "![Throughput vs concurrency](performance/throughput.png)" in text
    assert "latency.png" not in text
    assert "- **CPU**: test CPU" in text
    assert "python -m bench.report --quick" in text
    assert "**phase load test (gthread) failed**: gunicorn did not start" in text


def test_render_markdown_of_an_empty_run_still_has_machine_and_command() -> None:
    text = report.render_markdown({"command": "make bench", "machine": {"Cores": "2"}}, {})
    assert "## Throughput ceiling" not in text
    assert "make bench" in text and "- **Cores**: 2" in text


def test_write_charts_writes_a_png_per_section(tmp_path: Path) -> None:
    written = report.write_charts(fake_results(), tmp_path / "charts")
    assert set(written) == {"throughput", "latency", "naive_vs_optimized", "workers"}
    for path in written.values():
        assert path.parent == tmp_path / "charts"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_write_charts_skips_sections_without_data(tmp_path: Path) -> None:
    assert report.write_charts({"ceiling": {"points": []}}, tmp_path) == {}


# -- options -----------------------------------------------------------------------------------------------


def options(*argv: str) -> argparse.Namespace:
    parsed = report.parser().parse_args(list(argv))
    report.resolve(parsed)
    return parsed


def test_quick_writes_beside_its_report_not_into_docs(tmp_path: Path) -> None:
    out = tmp_path / "perf_quick.md"
    parsed = options("--quick", "--out", str(out))
    assert parsed.assets_dir == tmp_path / "perf_quick"
    assert parsed.bench_dir == tmp_path / "perf_quick" / "benchmarks"
    assert parsed.raw_dir == tmp_path / "perf_quick" / "raw"
    assert parsed.bench_org == "bench-quick"
    assert report.reproduce(parsed) == "python -m bench.report --quick"  # no machine path


def test_the_default_run_is_make_bench() -> None:
    parsed = options()
    assert parsed.out == Path("docs/performance.md")
    assert parsed.assets_dir == Path("docs/performance")
    assert parsed.bench_dir == Path("docs/benchmarks")
    assert report.reproduce(parsed) == "make bench"
    assert report.reproduce(options("--phases", "ceiling")) == "python -m bench.report --out docs/performance.md " + (
        "--phases ceiling"
    )


def test_phases_are_checked() -> None:
    assert report.phases_arg("db, ceiling") == ["db", "ceiling"]
    with pytest.raises(argparse.ArgumentTypeError):
        report.phases_arg("db,bogus")


def test_render_only_rebuilds_report_and_charts_from_results_json(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps(fake_results()), encoding="utf-8")
    out = tmp_path / "docs" / "performance.md"
    assert report.main(["--out", str(out), "--render-only", str(results)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "![Throughput vs concurrency](performance/throughput.png)" in text
    assert (tmp_path / "docs" / "performance" / "workers.png").is_file()


def test_free_bind_avoids_reserved_ports() -> None:
    host, _, port = report.free_bind().rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) not in report.RESERVED_PORTS
