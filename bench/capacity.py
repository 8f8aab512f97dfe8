"""``python -m bench.capacity``: docs/capacity.md in one command (``make capacity``).

What it runs, each step printed as it starts:

1. the ``/healthz`` ceiling: gunicorn as the load test starts it, ``wrk`` against the bare view at
   ``--ceiling-connections`` connections (rounds interleaved, the median kept), in this same run, so every
   req/s below can be read against what this machine serves at all today;
2. the curve: ``bench.loadtest`` (a fresh server each time, the cache warmed, the locustfile's mix) for each
   user count of ``--users`` in two scenarios: **seed** (the locustfile's think times; the largest count
   runs ``--seed-duration``, the others ``--step-duration``) and **overload** (think time 0, every user
   sending as fast as it is answered; ``--step-duration`` each), each point on ``--orgs`` organizations of its
   own seeded with ``--activities`` each (``point_prefix``). The load generator runs ``--processes``
   locust processes and its CPU is reported beside the server's, PostgreSQL's and the machine's;
3. the serialization benchmark (``manage.py bench_serialization``) on the 1,000,000-row organization
   ``--bench-org``: an uncached 100-row emissions page, whole request, side by side with DRF's
   ``ModelSerializer`` rendering the same rows;
4. docs/capacity.md with the bars below and whether each holds, PNG charts of p50/p95/p99 and req/s against
   users (``docs/capacity/``), and a before/after table against ``--before`` (summaries of the same load-test
   command on an earlier main, kept in the repository with the command that made them).

Bars (the exit status is 1 when one is missed, 2 when a step could not run):

- seed scenario at the largest user count: no timeout; error rate (failures + refusals) under 0.05 %; every
  interactive endpoint (reads, single calculations, supplier edits) p95 under 300 ms and p99 under 800 ms;
- overload at the largest user count: no timeout, no request longer than 5 s; served req/s at least 90 % of
  the best served req/s at any lower user count (no congestion collapse);
- serialization: the uncached page at least 3x faster than DRF's ``ModelSerializer``.

Raw outputs (each load test's summary.json, CSVs and logs, wrk outputs, ``results.json``) go to
``--raw-dir``; ``--render-only`` renders the report again from ``results.json`` (and the ``--before`` directory's
``README.md`` as it is now: how the earlier runs were made is prose, not a measurement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import loadtest as lt
from bench import report as rp
from bench import trace

ROOT = lt.ROOT
DEFAULT_OUT = "docs/capacity.md"
DEFAULT_RAW_DIR = "loadtest-results/capacity"
DEFAULT_BEFORE = "docs/capacity/before"
DEFAULT_USERS = (50, 100, 200, 500)
SCENARIOS = {
    # name: (wait scale, what it is)
    "seed": (1.0, "the locustfile's mix and think times"),
    "overload": (0.0, "the same mix with no think time: every user sends as soon as it is answered"),
}
# Bars (the must-shows).
MAX_ERROR_RATE = 0.0005
INTERACTIVE_P95_MS = 300.0
INTERACTIVE_P99_MS = 800.0
OVERLOAD_MAX_MS = 5000.0
NO_COLLAPSE_SHARE = 0.9
SERIALIZATION_BAR = 3.0
# Endpoints that are bulk work (perf.admission.heavy on their views); every other one is interactive.
HEAVY_ENDPOINTS = frozenset(
    {
        ("POST", "/api/v1/activities/"),
        ("POST", "/api/v1/calculate/batch/"),
        ("GET", "/api/v1/emissions/export.csv"),
    }
)


def say(message: str) -> None:
    rp.say(message)


def percentiles(figures: dict[str, Any], separator: str = " / ") -> str:
    """``p50 / p95 / p99`` of a run or an endpoint, in milliseconds without a unit."""
    return separator.join(lt.ms_number(figures[key]) for key in ("p50_ms", "p95_ms", "p99_ms"))


# -- classification and bars --------------------------------------------------------------------------------------


def is_refusal(endpoint: dict[str, Any]) -> bool:
    return str(endpoint["name"]).endswith(lt.REFUSED_SUFFIX)


def is_heavy(endpoint: dict[str, Any]) -> bool:
    name = str(endpoint["name"]).removesuffix(lt.REFUSED_SUFFIX).removesuffix(" (next page)")
    return (endpoint["method"], name) in HEAVY_ENDPOINTS


def served_endpoints(summary: dict[str, Any], *, heavy: bool) -> list[dict[str, Any]]:
    """The endpoints of one run that were served (refusal rows apart), heavy or interactive."""
    return [e for e in summary["endpoints"] if not is_refusal(e) and is_heavy(e) == heavy and e["requests"]]


def run_point(summary: dict[str, Any]) -> dict[str, Any]:
    """One run as the curve and the bars read it."""
    outcomes = summary["outcomes"]
    aggregated = summary["aggregated"]
    interactive = served_endpoints(summary, heavy=False)

    def worst(key: str) -> float | None:
        values = [e[key] for e in interactive if e.get(key) is not None]
        return max(values) if values else None

    requests = outcomes["requests"]
    return {
        "users": summary["run"]["users"],
        "duration": summary["run"]["duration"],
        "wait_scale": summary["run"]["wait_scale"],
        "requests": requests,
        "rps": aggregated["rps"],
        "served_rps": outcomes["served_rps"],
        "p50_ms": aggregated["p50_ms"],
        "p95_ms": aggregated["p95_ms"],
        "p99_ms": aggregated["p99_ms"],
        "max_ms": outcomes["max_ms"],
        "failed": outcomes["failed"],
        "timeouts": outcomes["timeouts"],
        "refused": outcomes["refused"],
        "error_rate": (outcomes["failed"] + outcomes["refused"]) / requests if requests else 1.0,
        "interactive_worst_p95_ms": worst("p95_ms"),
        "interactive_worst_p99_ms": worst("p99_ms"),
        "cache_hit_rate": summary["cache"].get("hit_rate"),
        "cpu": summary["run"].get("cpu"),
        "activities_at_end": activities_at_end(summary),
    }


def activities_at_end(summary: dict[str, Any]) -> list[int]:
    """Each organization's activities when the run ended (the load test's machine description counts them)."""
    counts = []
    for key, value in (summary.get("machine") or {}).items():
        if key.startswith("Rows: organization ") and key.endswith(" activities"):
            counts.append(int(str(value).replace(",", "")))
    return counts


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bar: name, ``ok`` (True/False, or None when its step did not run) and the figures behind it."""
    verdicts: list[dict[str, Any]] = []
    runs = results.get("runs", {})
    seed = runs.get("seed") or []
    overload = runs.get("overload") or []
    if seed:
        top = max(seed, key=lambda run: run["point"]["users"])
        point = top["point"]
        verdicts.append(
            {
                "name": f"seed scenario, {point['users']} users: no timeout",
                "ok": point["timeouts"] == 0,
                "detail": f"{point['timeouts']:,} timeouts of {point['requests']:,} requests",
            }
        )
        verdicts.append(
            {
                "name": f"seed scenario, {point['users']} users: errors + refusals < {MAX_ERROR_RATE * 100:.2f} %",
                "ok": point["error_rate"] < MAX_ERROR_RATE,
                "detail": f"{point['error_rate'] * 100:.3f} % ({point['failed']:,} failed, {point['refused']:,} "
                f"refused)",
            }
        )
        for key, limit, label in (
            ("interactive_worst_p95_ms", INTERACTIVE_P95_MS, "p95"),
            ("interactive_worst_p99_ms", INTERACTIVE_P99_MS, "p99"),
        ):
            value = point[key]
            verdicts.append(
                {
                    "name": f"seed scenario, {point['users']} users: every interactive endpoint {label} < "
                    f"{limit:,.0f} ms",
                    "ok": value is not None and value < limit,
                    "detail": f"worst {lt.ms_number(value)} ms",
                }
            )
    if overload:
        by_users = sorted(overload, key=lambda run: run["point"]["users"])
        point = by_users[-1]["point"]
        verdicts.append(
            {
                "name": f"overload, {point['users']} users: none times out, none waits over {OVERLOAD_MAX_MS:,.0f} ms",
                "ok": point["timeouts"] == 0 and point["max_ms"] <= OVERLOAD_MAX_MS,
                "detail": f"{point['timeouts']:,} timeouts; longest {lt.ms_number(point['max_ms'])} ms; "
                f"{point['refused']:,} refused with Retry-After",
            }
        )
        lower = [run["point"]["served_rps"] for run in by_users[:-1]]
        if lower:
            best = max(lower)
            verdicts.append(
                {
                    "name": f"overload, {point['users']} users: served req/s >= {NO_COLLAPSE_SHARE:.0%} of the best "
                    "at fewer users",
                    "ok": point["served_rps"] >= NO_COLLAPSE_SHARE * best,
                    "detail": f"{point['served_rps']:,.1f} vs best {best:,.1f} ({point['served_rps'] / best:.2f}x)"
                    if best
                    else "no lower run served anything",
                }
            )
    serialization = results.get("serialization")
    if serialization is not None:
        ratio = serialization.get("ratio")
        verdicts.append(
            {
                "name": f"uncached 100-row emissions page >= {SERIALIZATION_BAR:g}x faster than DRF's ModelSerializer",
                "ok": ratio is not None and ratio >= SERIALIZATION_BAR,
                "detail": "not measured" if ratio is None else f"{ratio:.2f}x",
            }
        )
    return verdicts


# -- steps --------------------------------------------------------------------------------------------------------


def run_ceiling(options: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """/healthz with wrk on the server the load tests use (same GUNICORN_* settings)."""
    if shutil.which("wrk") is None:
        raise rp.PhaseError("wrk is not installed (Debian: apt-get install -y wrk; make capacity installs it)")
    raw.mkdir(parents=True, exist_ok=True)
    bind = rp.free_bind()
    url = lt.base_url(bind)
    say(f"gunicorn on {bind} for the /healthz ceiling (log: {raw / 'gunicorn.log'})")
    server = lt.start_server(rp.server_options(bind, None), raw)
    results: list[rp.WrkResult] = []
    try:
        lt.wait_until_ready(server, url, lt.READY_TIMEOUT)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "report.lua"
            script.write_text(rp.WRK_SCRIPT, encoding="utf-8")
            common = {"concurrency": options.ceiling_connections, "threads": 2, "script": script}
            rp.run_wrk(rp.wrk_command(url + "/healthz", duration_s=2, headers={}, **common), timeout=40)
            for round_no in range(1, options.ceiling_rounds + 1):
                command = rp.wrk_command(url + "/healthz", duration_s=options.ceiling_seconds, headers={}, **common)
                result, output = rp.run_wrk(command, timeout=options.ceiling_seconds + 30)
                (raw / f"wrk_healthz_r{round_no}.txt").write_text(output, encoding="utf-8")
                results.append(result)
                say(f"  /healthz round {round_no}: {result.rps:,.0f} req/s, p99 {lt.ms_number(result.p99_ms)} ms")
    finally:
        server.stop(lt.SERVER_STOP_TIMEOUT)
    return {
        "connections": options.ceiling_connections,
        "seconds": options.ceiling_seconds,
        "rounds": options.ceiling_rounds,
        "rps": statistics.median(result.rps for result in results),
        "wrk_version": rp.wrk_version(),
    }


def point_prefix(options: argparse.Namespace, scenario: str, users: int) -> str:
    """The organizations of one point of the curve: ``<prefix>-<scenario>-<users>-a``, ...

    Each point gets organizations of its own, seeded with ``--activities`` each. The ERP users' writes grow the
    organizations they write to (section 10 of docs/capacity/analysis.md: from 20,000 activities to about 60,000
    each in a 10-minute seed run, and an export's cost grows with its month): on shared organizations every later
    point of the curve ran on more data than the earlier ones, and the curve compared data sizes as well as user
    counts.
    """
    return f"{options.org_prefix}-{scenario}-{users}"


def loadtest_args(
    options: argparse.Namespace,
    users: int,
    duration: str,
    wait_scale: float,
    out: Path,
    *,
    prefix: str,
    traced: bool = False,
) -> list[str]:
    """``bench.loadtest``'s arguments for one point; ``traced``: with its request trace (``--trace``)."""
    args = [
        "--users", str(users), "--spawn-rate", f"{options.spawn_rate:g}", "--duration", duration,
        "--wait-scale", f"{wait_scale:g}", "--out", str(out), "--orgs", str(options.orgs),
        "--org-prefix", prefix, "--activities", str(options.activities), "--bind", rp.free_bind(),
        "--processes", str(options.processes),
        # The bars are this report's, judged on the whole curve; each run still records every figure.
        "--max-error-rate", "off", "--min-cache-hit-rate", "off",
    ]  # fmt: skip
    if options.max_factors:
        args += ["--max-factors", str(options.max_factors)]
    if traced:
        args.append("--trace")
    return args


def run_curve(options: argparse.Namespace, raw: Path) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    largest = max(options.users)
    for scenario in options.scenarios:
        wait_scale, _ = SCENARIOS[scenario]
        for users in sorted(options.users):
            duration = options.seed_duration if scenario == "seed" and users == largest else options.step_duration
            out = raw / f"{scenario}-{users}"
            say(f"{scenario}: {users} users, {duration}, think time x{wait_scale:g} -> {out}")
            prefix = point_prefix(options, scenario, users)
            # The largest point of each scenario is traced: where its requests' time went, shown with its endpoints.
            args = loadtest_args(options, users, duration, wait_scale, out, prefix=prefix, traced=users == largest)
            status = lt.run(lt.parser().parse_args(args))
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
            point = run_point(summary)
            say(
                f"  served {point['served_rps']:,.1f}/s, p50/p95/p99 {percentiles(point, '/')} ms, "
                f"{point['timeouts']} timeouts, "
                f"{point['refused']} refused, longest {lt.ms_number(point['max_ms'])} ms"
            )
            runs.setdefault(scenario, []).append(
                {"scenario": scenario, "exit_status": status, "point": point, "summary": summary}
            )
    return runs


def run_serialization(options: argparse.Namespace, raw: Path) -> dict[str, Any]:
    """``manage.py bench_serialization`` on ``--bench-org``; the bar's ratio is the worst page's: DRF's
    ModelSerializer with select_related (its query included) over the whole request as served."""
    raw.mkdir(parents=True, exist_ok=True)
    data_path, report_path = raw / "serialization.json", raw / "serialization.md"
    say(f"bench_serialization --org {options.bench_org} -> {report_path}")
    lt.manage("bench_serialization", "--org", options.bench_org, "--output", str(report_path), "--json", str(data_path))
    return serialization_result(
        json.loads(data_path.read_text(encoding="utf-8")), report_path.read_text(encoding="utf-8")
    )


def serialization_result(data: dict[str, Any], report: str) -> dict[str, Any]:
    """The benchmark's pages, the worst ratio (the bar's), and its report's table for docs/capacity.md."""
    pages = [
        {"page": page["page"], "ratio": page["ratios_over_rows_request"]["plain"], "medians": page["median_seconds"]}
        for page in data["pages"]
    ]
    # The report's explanation and table, without its title and machine section (capacity.md has both).
    body = report.split("\n", 1)[1] if report.startswith("# ") else report
    body = body.split("\n## Machine", 1)[0].strip()
    return {
        "ratio": min((page["ratio"] for page in pages), default=None),
        "pages": pages,
        "organization": data.get("organization"),
        "rows": data.get("emissions"),
        "markdown": body,
    }


def read_before(directory: Path) -> dict[str, Any]:
    """The earlier main's runs (``<name>/summary.json``) and the ``README.md`` saying how they were made."""
    before: dict[str, Any] = {"runs": {}, "how": ""}
    if not directory.is_dir():
        return before
    readme = directory / "README.md"
    if readme.is_file():
        before["how"] = readme.read_text(encoding="utf-8").strip()
    for path in sorted(directory.glob("*/summary.json")):
        summary = json.loads(path.read_text(encoding="utf-8"))
        before["runs"][path.parent.name] = run_point(summary) | {"endpoints": summary["endpoints"]}
    return before


# -- report -------------------------------------------------------------------------------------------------------


def write_charts(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for scenario, runs in (results.get("runs") or {}).items():
        points = sorted((run["point"] for run in runs), key=lambda p: p["users"])
        if not points:
            continue
        users = [p["users"] for p in points]
        fig, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
        for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
            latency.plot(users, [p[key] or 0 for p in points], marker="o", label=label)
        latency.set_yscale("log")
        latency.set_xlabel("users")
        latency.set_ylabel("response time (ms, log scale)")
        latency.set_title(f"{scenario}: latency, all requests")
        latency.grid(True, alpha=0.3)
        latency.legend()
        throughput.plot(users, [p["served_rps"] for p in points], marker="o", label="served req/s")
        throughput.plot(users, [p["rps"] for p in points], marker=".", linestyle="--", label="all answers req/s")
        ceiling = (results.get("ceiling") or {}).get("rps")
        if ceiling:
            throughput.axhline(ceiling, color="grey", linestyle=":", label=f"/healthz ceiling {ceiling:,.0f}")
        throughput.set_xlabel("users")
        throughput.set_ylabel("requests / s")
        throughput.set_title(f"{scenario}: throughput")
        throughput.grid(True, alpha=0.3)
        throughput.legend(fontsize=8)
        written[scenario] = rp._save(fig, directory / f"{scenario}.png")
    return written


def _organizations_note(results: dict[str, Any]) -> str:
    """How the curve's organizations were seeded; nothing for a results.json kept before each point had its own."""
    points = [run["point"] for runs in (results.get("runs") or {}).values() for run in runs]
    if not any(point.get("activities_at_end") for point in points):
        return ""
    seeded = results.get("organizations") or {}
    each = (
        f"{seeded['count']} organizations of its own, seeded with {seeded['activities']:,} activities each"
        if seeded
        else "organizations of its own"
    )
    return (
        f" Each point runs on {each}; the last column is their activities when the run ended (the ERP users' "
        "writes grow them)."
    )


def _cpu(cpu: dict[str, Any] | None) -> str:
    if not cpu:
        return "—"
    server = f"{cpu['server']:.2f} ({cpu.get('bulk_pool', 0.0):.2f})"
    return f"{server} / {cpu['load_generator']:.2f} / {cpu['postgres']:.2f} / {cpu['machine_busy']:.2f}"


def _lag(lag: dict[str, Any] | None) -> str:
    """The event loop lag line of one run (``bench.loadtest``'s ``run.event_loop_lag``): the workers', the bulk
    pool's and locust's p99 with the share of measurements over 100 ms; "—" for a side not measured."""

    def side(figures: dict[str, Any] | None) -> str:
        if not figures or not figures.get("ticks"):
            return "—"
        if figures.get("p99_ms") is None and figures.get("last_bound_ms") is None:
            return "—"
        return f"{lt.lag_bound(figures, figures.get('p99_ms'))} ({rp.fmt_pct(figures.get('over_100ms'))})"

    if not lag:
        return "—"
    server = lag.get("server") or {}
    return " / ".join(side(figures) for figures in (server.get("main"), server.get("bulk"), lag.get("load_generator")))


def render_markdown(results: dict[str, Any], charts: dict[str, str]) -> str:
    lines = [
        "# Capacity: 500 users, overload, and where the time goes",
        "",
        f"Generated by `{results['command']}` on {results['started_at']} (UTC); raw outputs in "
        f"`{results['raw_dir']}`. Do not edit by hand: run the command again.",
        "",
        "Where the time went at 500 users before this work, measured first: [capacity/analysis.md]"
        "(capacity/analysis.md). How requests are admitted, refused and scheduled: "
        "[serving.md](serving.md#connections-admission-and-the-database-pool).",
        "",
    ]
    machine = results.get("machine") or {}
    if machine:
        lines += ["Machine: " + "; ".join(f"{key} {value}" for key, value in machine.items()), ""]
    lines += ["## Bars", ""]
    lines += rp.table(
        ["bar", "holds", "figures"],
        [[b["name"], {True: "yes", False: "**no**", None: "not run"}[b["ok"]], b["detail"]] for b in results["bars"]],
    )
    ceiling = results.get("ceiling")
    lines += ["", "## The /healthz ceiling, this run", ""]
    if ceiling:
        lines.append(
            f"wrk, {ceiling['connections']} connections, median of {ceiling['rounds']} rounds of "
            f"{ceiling['seconds']} s: **{ceiling['rps']:,.0f} req/s** (the bare Django view through the same "
            "gunicorn and middleware; nothing the API serves can be faster)."
        )
    else:
        lines.append("Not measured in this run.")
    lines += [
        "",
        "## The curve",
        "",
        "CPU columns: average cores kept busy during the run by the server (gunicorn, its workers and, in "
        "brackets, of those, the bulk pool) / the "
        "load generator (locust, all its processes) / PostgreSQL / the whole machine, of "
        f"{(machine.get('Cores') or '?')} cores. Event loop lag: how late a greenlet asking to be woken every "
        "`EVENT_LOOP_LAG_INTERVAL` (0.1 s by default) was woken (docs/serving.md, `vcci_event_loop_lag_seconds`), "
        "the bucket of the 99th percentile and, in brackets, the share of measurements over 100 ms, in the "
        "gunicorn workers / the bulk pool / the locust processes: time a request waits that no request timer of "
        "the server contains, and that locust's does. Error rate counts failures and refusals; refusals are 503 "
        "or 429 with Retry-After, counted apart." + _organizations_note(results),
        "",
    ]
    for scenario, runs in (results.get("runs") or {}).items():
        _, what = SCENARIOS[scenario]
        lines += [f"### {scenario}: {what}", ""]
        if scenario in charts:
            lines += [f"![{scenario}]({charts[scenario]})", ""]
        rows = []
        for run in sorted(runs, key=lambda r: r["point"]["users"]):
            p = run["point"]
            rows.append(
                [
                    f"{p['users']:,}",
                    p["duration"],
                    f"{p['served_rps']:,.1f}",
                    percentiles(p),
                    lt.ms_number(p["max_ms"]),
                    f"{p['timeouts']:,}",
                    f"{p['refused']:,}",
                    f"{p['error_rate'] * 100:.3f} %",
                    rp.fmt_pct(p["cache_hit_rate"]),
                    _cpu(p["cpu"]),
                    _lag(run["summary"]["run"].get("event_loop_lag")),
                    " / ".join(f"{count:,}" for count in p.get("activities_at_end") or []) or "—",
                ]
            )
        lines += rp.table(
            [
                "users",
                "run",
                "served req/s",
                "p50 / p95 / p99 ms",
                "longest ms",
                "timeouts",
                "refused",
                "errors",
                "cache hits",
                "CPU server (bulk pool) / locust / PG / machine",
                "event loop lag p99 ms (over 100 ms): workers / bulk pool / locust",
                "activities per organization at the end",
            ],
            rows,
        )
        top = max(runs, key=lambda r: r["point"]["users"])
        summary = top["summary"]
        lines += ["", f"Per endpoint at {top['point']['users']} users:", ""]
        endpoint_rows = []
        for endpoint in summary["endpoints"]:
            kind = "refused" if is_refusal(endpoint) else ("heavy" if is_heavy(endpoint) else "interactive")
            endpoint_rows.append(
                [
                    f"{endpoint['method']} {endpoint['name']}",
                    kind,
                    f"{endpoint['requests']:,}",
                    f"{endpoint['failures']:,}",
                    percentiles(endpoint),
                    lt.ms_number(endpoint["max_ms"]),
                    f"{endpoint['rps']:,.1f}",
                ]
            )
        lines += rp.table(
            ["endpoint", "kind", "requests", "failed", "p50 / p95 / p99 ms", "max ms", "req/s"], endpoint_rows
        )
        traced = summary["run"].get("trace")
        if traced:
            lines += ["", f"Where locust's time went at {top['point']['users']} users (the request trace).", ""]
            lines += [trace.EXPLANATION.format(ramp=traced["ramp_seconds"]), "", *trace.tables(traced)]
        per_resource = (summary["cache"].get("per_resource") or {}) if summary.get("cache") else {}
        if per_resource:
            lines += [
                "",
                "Cache hit rate per resource: "
                + ", ".join(f"{name} {rp.fmt_pct(r.get('hit_rate'))}" for name, r in per_resource.items())
                + ".",
            ]
        lines.append("")
    serialization = results.get("serialization")
    lines += ["## Uncached list pages", ""]
    if serialization:
        lines.append(serialization.get("markdown", "").strip())
    else:
        lines.append("Not measured in this run.")
    before = results.get("before") or {}
    if before.get("runs"):
        lines += ["", "## Before and after", "", before.get("how", ""), ""]
        rows = []
        for name, point in before["runs"].items():
            scenario = "seed" if point["wait_scale"] else "overload"
            after = max(
                (run["point"] for run in (results.get("runs") or {}).get(scenario, [])),
                key=lambda p: p["users"],
                default=None,
            )
            for label, p in (("before", point), ("after", after)):
                if p is None:
                    continue
                rows.append(
                    [
                        f"{name}: {label}",
                        f"{p['users']:,} users, {p['duration']}",
                        f"{p['served_rps']:,.1f}",
                        f"{p['failed']:,} ({p['timeouts']:,})",
                        f"{p['refused']:,}",
                        percentiles(p),
                        lt.ms_number(p["max_ms"]),
                        rp.fmt_pct(p["cache_hit_rate"]),
                    ]
                )
        lines += rp.table(
            [
                "run",
                "load",
                "served req/s",
                "failed (timeouts)",
                "refused",
                "p50 / p95 / p99 ms",
                "longest ms",
                "cache hits",
            ],
            rows,
        )
    problems = results.get("errors") or []
    if problems:
        lines += ["", "## Steps that could not run", ""] + [f"- {problem}" for problem in problems]
    lines.append("")
    return "\n".join(lines)


# -- orchestration ------------------------------------------------------------------------------------------------


def users_arg(text: str) -> list[int]:
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"comma-separated user counts, e.g. 50,100,200,500: {text!r}") from exc
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"user counts must be at least 1: {text!r}")
    return values


def scenarios_arg(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"scenarios among {', '.join(SCENARIOS)}: {text!r}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=users_arg, default=list(DEFAULT_USERS), help="User counts of the curve")
    p.add_argument("--scenarios", type=scenarios_arg, default=list(SCENARIOS), help="seed,overload (default both)")
    p.add_argument("--seed-duration", type=lt.duration_arg, default="10m", help="The seed scenario at the most users")
    p.add_argument("--step-duration", type=lt.duration_arg, default="2m", help="Every other run")
    p.add_argument("--spawn-rate", type=float, default=50.0, help="Users started per second (50)")
    p.add_argument("--processes", type=int, default=2, help="Load-generator (locust) processes (2)")
    p.add_argument("--orgs", type=int, default=lt.DEFAULT_ORGS)
    # Each point seeds organizations of its own (point_prefix); the ERP users' writes grow them, so a report run again
    # with the same prefix would start from the last one's: a new prefix starts every point again from --activities.
    p.add_argument(
        "--org-prefix", default=lt.DEFAULT_ORG_PREFIX, help="Each point's: <prefix>-<scenario>-<users>-a, -b, ..."
    )
    p.add_argument("--activities", type=int, default=lt.DEFAULT_ACTIVITIES)
    p.add_argument("--max-factors", type=int, default=None)
    p.add_argument("--ceiling-connections", type=int, default=64)
    p.add_argument("--ceiling-seconds", type=int, default=10)
    p.add_argument("--ceiling-rounds", type=int, default=3)
    p.add_argument("--bench-org", default="bench", help="The 1,000,000-activity organization (serialization)")
    p.add_argument("--no-serialization", dest="serialization", action="store_false")
    p.add_argument("--before", type=Path, default=ROOT / DEFAULT_BEFORE)
    p.add_argument("--out", type=Path, default=ROOT / DEFAULT_OUT)
    p.add_argument("--raw-dir", type=Path, default=ROOT / DEFAULT_RAW_DIR)
    p.add_argument("--render-only", action="store_true", help="Render the report from <raw-dir>/results.json")
    return p


def reproduce(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in ["python", "-m", "bench.capacity", *argv])


def render(results: dict[str, Any], options: argparse.Namespace) -> None:
    assets = options.out.with_suffix("")
    charts = {key: os.path.relpath(path, options.out.parent) for key, path in write_charts(results, assets).items()}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(render_markdown(results, charts), encoding="utf-8")
    say(f"wrote {options.out}")


def run(options: argparse.Namespace, argv: Sequence[str]) -> int:
    options.raw_dir.mkdir(parents=True, exist_ok=True)
    results_path = options.raw_dir / "results.json"
    if options.render_only:
        kept: dict[str, Any] = json.loads(results_path.read_text(encoding="utf-8"))
        if kept.get("before") and (options.before / "README.md").is_file():
            kept["before"]["how"] = read_before(options.before)["how"]
        kept["bars"] = bars(kept)
        render(kept, options)
        return 1 if any(b["ok"] is False for b in kept["bars"]) else 0
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": reproduce(argv) if argv else "make capacity",
        "raw_dir": os.path.relpath(options.raw_dir, ROOT),
        "organizations": {"count": options.orgs, "activities": options.activities},
        "errors": [],
    }
    try:
        with lt.terminate_on_sigterm():
            try:
                results["ceiling"] = run_ceiling(options, options.raw_dir / "ceiling")
            except (rp.PhaseError, lt.RunError) as exc:
                results["errors"].append(f"ceiling: {exc}")
            results["runs"] = run_curve(options, options.raw_dir)
            if options.serialization:
                try:
                    results["serialization"] = run_serialization(options, options.raw_dir / "serialization")
                except (lt.RunError, OSError, ValueError, KeyError) as exc:
                    results["errors"].append(f"serialization: {exc}")
    except lt.RunError as exc:
        results["errors"].append(f"load test: {exc}")
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    # Each point's organizations are counted in its own row (activities_at_end).
    results["machine"] = lt.machine_description([])
    results["before"] = read_before(options.before)
    results["bars"] = bars(results)
    results_path.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    render(results, options)
    for bar in results["bars"]:
        verdict = {True: "ok", False: "MISSED", None: "not run"}[bar["ok"]]
        print(f"{verdict:>7}  {bar['name']}: {bar['detail']}")
    if results["errors"]:
        print("\n".join(results["errors"]), file=sys.stderr)
        return 2
    return 1 if any(b["ok"] is False for b in results["bars"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run(parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
