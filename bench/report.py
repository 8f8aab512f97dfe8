"""``python -m bench.report``: the performance report, every phase in one run (``make bench``).

Phases, each printed as it starts (``--phases`` runs a subset):

1. ``db`` and ``cache``: the database and cache benchmarks (``bench.db``, ``bench.cache``: what ``manage.py
   bench_db`` and ``manage.py bench_cache`` run) on organization ``--bench-org`` (seeded first when empty:
   ``--bench-activities`` activities, plus a neighbour tenant of the same size as ``make bench-db`` does). They
   run in this process, so their structured results (``DatabaseBenchmark.report``, ``CacheBenchmark.reports``)
   feed the tables and charts; each also writes its own Markdown report into ``--bench-dir``.
2. ``ceiling``: gunicorn as the load test starts it (``bench.loadtest.start_server``, same ``GUNICORN_*``
   settings), then ``wrk`` (a C closed-loop load generator: it does not take the CPU a Python client would)
   at each ``--concurrency`` against the bare Django view ``/healthz`` and the cached, token-authenticated
   GETs (emissions summary by category, emissions list first page), warmed first, each also as a conditional
   request answered 304. Every req/s is also shown as a ratio of ``/healthz`` at the same concurrency.
3. ``workers``: ``bench.loadtest``'s mixed workload (same users, duration and think time) once per worker
   class: ``gevent`` (the main load test, phase 4), ``sync`` and ``gthread`` (``--threads`` threads per worker,
   through ``GUNICORN_THREADS``, which also sizes the worker's database pool).
4. the main load test is that ``gevent`` run: per endpoint p50/p95/p99 and req/s, error rate, cache hit rate.
5. PNG charts (matplotlib, Agg backend) into the assets directory next to ``--out``
   (``docs/performance.md`` -> ``docs/performance/``), and the Markdown report at ``--out``, with the machine,
   the date, the command and findings computed from the numbers.

Everything raw (wrk outputs, the load tests' CSVs and logs, ``results.json``) goes to ``--raw-dir``; the
report can be rendered again from ``results.json`` alone with ``--render-only``.

``--quick`` shrinks every phase (a small organization instead of the 1M-activity one, few rounds, short runs)
so the whole report can be smoke-tested in a few minutes; its numbers say nothing about scale.

Exit status: 0 when every phase ran and every bar held, 1 when a bar was missed (a cached GET under
``CEILING_BAR`` of the ceiling, or a broken threshold of the main load test: each is named on stderr and in
the report), 2 when a phase could not run (the report is still written, listing what failed), 130 on Ctrl-C.
Whatever was started (gunicorn, wrk, locust) is stopped in every case.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import loadtest as lt
from bench.measure import SETTINGS_MODULE, BenchError, table

ROOT = lt.ROOT
DEFAULT_OUT = "docs/performance.md"
DEFAULT_RAW_DIR = "loadtest-results/report"
PHASES = ("db", "cache", "ceiling", "workers")
WORKER_CLASSES = ("gevent", "sync", "gthread")
MAIN_WORKER_CLASS = "gevent"
# Ports never chosen for this run's servers: `make run`'s and the range a concurrent `make loadtest` may use.
RESERVED_PORTS = frozenset({8000, *range(8765, 8800)})
# The bar the issue sets: cached authenticated GETs reach at least this share of the bare-view ceiling.
CEILING_BAR = 0.8
WRK_MARKER = "WRK_JSON "
# Printed by wrk's done() hook: exact counts and microsecond percentiles, rather than its rounded text.
WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, \\"connect\\": %d, \\"read\\": %d, "
    .. "\\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d, \\"p50_us\\": %d, \\"p90_us\\": %d, "
    .. "\\"p99_us\\": %d, \\"mean_us\\": %.1f, \\"max_us\\": %d}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class Sizes:
    """How big each phase is: the real run, or ``--quick``."""

    bench_activities: int
    bench_runs: int
    cache_rounds: int
    concurrencies: tuple[int, ...]
    wrk_duration: int
    wrk_warmup: int
    wrk_rounds: int
    users: int
    spawn_rate: float
    duration: str
    orgs: int
    load_activities: int
    max_factors: int | None


FULL = Sizes(
    bench_activities=1_000_000,
    bench_runs=5,
    cache_rounds=200,
    concurrencies=(1, 8, 32, 64),
    wrk_duration=5,
    wrk_warmup=1,
    wrk_rounds=3,
    users=lt.DEFAULT_USERS,
    spawn_rate=lt.DEFAULT_SPAWN_RATE,
    duration=lt.DEFAULT_DURATION,
    orgs=lt.DEFAULT_ORGS,
    load_activities=lt.DEFAULT_ACTIVITIES,
    max_factors=None,
)
QUICK = Sizes(
    bench_activities=2_000,
    bench_runs=1,
    cache_rounds=5,
    concurrencies=(1, 8),
    wrk_duration=2,
    wrk_warmup=1,
    wrk_rounds=1,
    users=10,
    spawn_rate=10.0,
    duration="10s",
    orgs=1,
    load_activities=2_000,
    max_factors=30,
)


@dataclass(frozen=True)
class Target:
    """One URL of the ceiling phase: the bare view, or a cached API read (plain, or conditional -> 304)."""

    key: str
    label: str
    path: str
    authenticated: bool
    conditional: bool = False
    # Accept-Encoding as real clients send it (browsers, curl --compressed, python-requests, locust): a cached
    # body is then served in its stored gzip form. Off for one row, to show the uncompressed transfer too.
    compressed: bool = True

    @property
    def expected_status(self) -> int:
        return 304 if self.conditional else 200


BARE = Target("healthz", "/healthz (bare view)", "/healthz", authenticated=False)
TARGETS = (
    BARE,
    Target("summary", "summary by category, 200", "/api/v1/emissions/summary/?group_by=category", True),
    Target("list", "emissions list page 1, 200", "/api/v1/emissions/", True),
    Target("summary_304", "summary by category, 304", "/api/v1/emissions/summary/?group_by=category", True, True),
    Target("list_304", "emissions list page 1, 304", "/api/v1/emissions/", True, True),
    Target("list_identity", "emissions list page 1, 200, no gzip", "/api/v1/emissions/", True, compressed=False),
)
CLIENT_HEADERS = {"Accept-Encoding": "gzip, deflate, br"}
# The cached authenticated GETs the bar applies to (full 200 responses; the 304s are reported beside them).
CACHED_GETS = ("summary", "list")


class PhaseError(Exception):
    """A phase could not be run; the message says why. The other phases still run."""


def say(message: str) -> None:
    lt.say(f"report: {message}")


# -- wrk --------------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """One wrk run: requests, seconds, req/s, latency percentiles (ms) and errors of each kind."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors_socket: int = 0
    errors_status: int = 0  # responses that were not 2xx or 3xx
    errors_timeout: int = 0

    @property
    def errors(self) -> int:
        return self.errors_socket + self.errors_status + self.errors_timeout


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")
_PERCENTILE = re.compile(r"^\s*(50|90|99)(?:\.0+)?%\s+(\S+)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse_time_ms(text: str) -> float:
    """wrk's formatted time (``850.00us``, ``1.90ms``, ``2.01s``, ``1.00m``) in milliseconds; ValueError otherwise."""
    match = _TIME.match(text.strip())
    if match is None:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """wrk's output: the JSON line of ``WRK_SCRIPT`` when present, else its text report (run with ``--latency``).

    ValueError when neither is there (wrk failed before reporting).
    """
    for line in text.splitlines():
        if line.startswith(WRK_MARKER):
            data = json.loads(line[len(WRK_MARKER) :])
            seconds = data["duration_us"] / 1e6
            return WrkResult(
                requests=data["requests"],
                duration_s=seconds,
                rps=data["requests"] / seconds if seconds else 0.0,
                p50_ms=data["p50_us"] / 1000,
                p90_ms=data["p90_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors_socket=data["connect"] + data["read"] + data["write"],
                errors_status=data["status"],
                errors_timeout=data["timeout"],
            )
    requests, rps = _REQUESTS.search(text), _RPS.search(text)
    if requests is None or rps is None:
        raise ValueError(f"no wrk report in the output:\n{text.strip()[:500]}")
    percentiles = {int(p): parse_time_ms(value) for p, value in _PERCENTILE.findall(text)}
    socket_errors = _SOCKET.search(text)
    connect, read, write, timeout = (int(n) for n in socket_errors.groups()) if socket_errors else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(text)
    return WrkResult(
        requests=int(requests.group(1)),
        duration_s=parse_time_ms(requests.group(2) + requests.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles.get(50),
        p90_ms=percentiles.get(90),
        p99_ms=percentiles.get(99),
        errors_socket=connect + read + write,
        errors_status=int(non_2xx.group(1)) if non_2xx else 0,
        errors_timeout=timeout,
    )


def combine_rounds(results: Sequence[WrkResult]) -> dict[str, Any]:
    """One point from the rounds of a target at a concurrency: the median of each figure, errors summed.

    ``rounds_rps`` keeps every round's req/s, so the report can show the spread.
    """
    if not results:
        raise ValueError("no rounds to combine")

    def median_of(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    return {
        "requests": sum(r.requests for r in results),
        "duration_s": sum(r.duration_s for r in results),
        "rps": statistics.median(r.rps for r in results),
        "p50_ms": median_of([r.p50_ms for r in results]),
        "p90_ms": median_of([r.p90_ms for r in results]),
        "p99_ms": median_of([r.p99_ms for r in results]),
        "errors_socket": sum(r.errors_socket for r in results),
        "errors_status": sum(r.errors_status for r in results),
        "errors_timeout": sum(r.errors_timeout for r in results),
        "errors": sum(r.errors for r in results),
        "rounds_rps": [r.rps for r in results],
    }


def wrk_command(
    url: str, *, concurrency: int, duration_s: int, threads: int, headers: dict[str, str], script: Path | None
) -> list[str]:
    """The wrk command line; never more threads than connections (wrk refuses that)."""
    command = ["wrk", "-t", str(max(1, min(threads, concurrency))), "-c", str(concurrency), "-d", f"{duration_s}s"]
    command += ["--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    return [*command, url]


def run_wrk(command: list[str], timeout: float) -> tuple[WrkResult, str]:
    """Run wrk to completion (in its own session, killed with its group if it overstays); result and output."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.communicate()
        raise PhaseError(f"wrk did not finish within {timeout:g} s") from exc
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): never leave a load generator running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait()
    if process.returncode != 0:
        raise PhaseError(f"wrk exited with status {process.returncode}:\n{output.strip()[:500]}")
    try:
        return parse_wrk(output), output
    except ValueError as exc:
        raise PhaseError(str(exc)) from exc


# -- ratios and summaries (pure) ----------------------------------------------------------------------------


def add_ratios(points: list[dict[str, Any]], bare: str = BARE.key) -> list[dict[str, Any]]:
    """Each point's ``ratio``: its req/s over the bare view's at the same concurrency (None without that)."""
    ceiling = {p["concurrency"]: p["rps"] for p in points if p["target"] == bare}
    for point in points:
        base = ceiling.get(point["concurrency"])
        point["ratio"] = point["rps"] / base if base else None
    return points


def peak(points: Sequence[dict[str, Any]], target: str) -> dict[str, Any] | None:
    """The point of ``target`` with the highest req/s."""
    mine = [p for p in points if p["target"] == target]
    return max(mine, key=lambda p: p["rps"]) if mine else None


def ceiling_rps(points: Sequence[dict[str, Any]]) -> float | None:
    """The bare view's highest req/s over every concurrency: the ceiling other throughputs are a share of."""
    best = peak(points, BARE.key)
    return best["rps"] if best else None


def share(value: float | None, ceiling: float | None) -> float | None:
    return value / ceiling if value is not None and ceiling else None


def bar_verdicts(points: Sequence[dict[str, Any]], targets: Sequence[str] = CACHED_GETS) -> list[dict[str, Any]]:
    """For each cached GET: its peak req/s over the bare view's peak, the lowest same-concurrency ratio, the bar."""
    verdicts = []
    top = ceiling_rps(points)
    for target in targets:
        best = peak(points, target)
        if best is None or not top:
            continue
        ratios = [p["ratio"] for p in points if p["target"] == target and p.get("ratio") is not None]
        worst = min(ratios) if ratios else None
        worst_at = next((p["concurrency"] for p in points if p["target"] == target and p.get("ratio") == worst), None)
        verdicts.append(
            {
                "target": target,
                "peak_rps": best["rps"],
                "peak_concurrency": best["concurrency"],
                "peak_ratio": best["rps"] / top,
                "worst_ratio": worst,
                "worst_concurrency": worst_at,
                "met": best["rps"] / top >= CEILING_BAR,
            }
        )
    return verdicts


def missed_bars(results: dict[str, Any]) -> list[str]:
    """What the run was to show and did not: cached GETs under the ceiling bar, the main load test's broken
    thresholds. Empty when every measured bar held (a phase that did not run is an error, not a miss)."""
    missed = []
    for verdict in bar_verdicts((results.get("ceiling") or {}).get("points") or []):
        if not verdict["met"]:
            label = TARGET_LABELS.get(verdict["target"], verdict["target"])
            missed.append(f"{label}: {fmt_ratio(verdict['peak_ratio'])} of the ceiling, under {CEILING_BAR}x")
    for item in (results.get("loadtest") or {}).get("broken") or []:
        missed.append(f"load test: {item}")
    return missed


# -- formatting ------------------------------------------------------------------------------------------


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def fmt_rps(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    # A load test with think time uses a small share of the ceiling: keep two significant digits of it.
    return f"{value:.2f}x" if value >= 0.1 or value == 0 else f"{value:.2g}x"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f} %"


TARGET_LABELS = {target.key: target.label for target in TARGETS}


def findings(results: dict[str, Any]) -> list[str]:
    """Statements computed from the numbers: the ceiling bar, 304s, worker classes, the load test, db and cache."""
    out: list[str] = []
    ceiling = results.get("ceiling") or {}
    points = ceiling.get("points") or []
    top = ceiling_rps(points)
    if top:
        bare = peak(points, BARE.key)
        assert bare is not None
        out.append(
            f"The bare Django view (`/healthz`, full middleware, no DB or cache) peaks at {fmt_rps(top)} req/s "
            f"({bare['concurrency']} connections): the ceiling of this server on this machine."
        )
        for verdict in bar_verdicts(points):
            label = TARGET_LABELS.get(verdict["target"], verdict["target"])
            bar = "meets" if verdict["met"] else "does NOT meet"
            worst = (
                f"; at {verdict['worst_concurrency']} connections it reaches {fmt_ratio(verdict['worst_ratio'])} of "
                "/healthz at the same concurrency"
                if verdict["worst_ratio"] is not None
                else ""
            )
            out.append(
                f"Cached authenticated GET, {label}: peaks at {fmt_rps(verdict['peak_rps'])} req/s, "
                f"{fmt_ratio(verdict['peak_ratio'])} of the ceiling, which {bar} the >= {CEILING_BAR}x bar{worst}."
            )
        compressed, identity = peak(points, "list"), peak(points, "list_identity")
        if compressed and identity:
            out.append(
                f"{TARGET_LABELS['list_identity']} (a client that does not accept gzip): "
                f"{fmt_rps(identity['rps'])} req/s at best, {fmt_ratio(share(identity['rps'], top))} of the ceiling; "
                f"the same page gzip-encoded: {fmt_ratio(share(compressed['rps'], top))}."
            )
        for plain, conditional in (("summary", "summary_304"), ("list", "list_304")):
            a, b = peak(points, plain), peak(points, conditional)
            if a and b and a["rps"]:
                out.append(
                    f"{TARGET_LABELS[conditional]}: {fmt_rps(b['rps'])} req/s at best, {b['rps'] / a['rps']:.2f}x the "
                    f"200's {fmt_rps(a['rps'])} ({fmt_ratio(share(b['rps'], top))} of the ceiling)."
                )
    workers = [w for w in results.get("worker_classes") or [] if w.get("rps") is not None]
    if len(workers) > 1:
        fastest = max(workers, key=lambda w: w["rps"])
        quickest = min(workers, key=lambda w: w["p95_ms"] if w["p95_ms"] is not None else float("inf"))
        out.append(
            f"Worker classes on the same mixed workload: {fastest['worker_class']} served the most "
            f"({fmt_rps(fastest['rps'])} req/s), {quickest['worker_class']} the lowest p95 "
            f"({fmt_ms(quickest['p95_ms'])}); "
            + ", ".join(f"{w['worker_class']} {fmt_pct(w['error_rate'])} errors" for w in workers)
            + "."
        )
    main = results.get("loadtest")
    if main and main.get("aggregated"):
        agg = main["aggregated"]
        slowest = max(
            (e for e in main.get("endpoints", []) if e.get("p95_ms") is not None),
            key=lambda e: e["p95_ms"],
            default=None,
        )
        text = (
            f"Main load test ({main.get('users')} users, {main.get('duration')}, {MAIN_WORKER_CLASS}): "
            f"{fmt_rps(agg['rps'])} req/s ({fmt_ratio(share(agg['rps'], top))} of the ceiling"
            + ("; users with think time: the offered load, not capacity" if main.get("wait_scale", 1) else "")
            + f"), p95 {fmt_ms(agg.get('p95_ms'))}, error rate "
            f"{fmt_pct(agg.get('error_rate'))}, cache hit rate {fmt_pct(main.get('cache_hit_rate'))}"
        )
        if slowest is not None:
            text += f"; slowest endpoint at p95: {slowest['method']} {slowest['name']} ({fmt_ms(slowest['p95_ms'])})"
        out.append(text + ".")
        if main.get("broken"):
            out.append("Load-test thresholds broken: " + "; ".join(main["broken"]) + ".")
    db = results.get("db") or {}
    out += [f"Database: {finding}" for finding in db.get("findings", [])]
    for endpoint in (results.get("cache") or {}).get("endpoints", []):
        states = endpoint["states"]
        if "uncached" in states and "L1" in states and states["L1"]["median_ms"]:
            out.append(
                f"Cache, {endpoint['name']}: uncached {fmt_ms(states['uncached']['median_ms'])}, from process memory "
                f"{fmt_ms(states['L1']['median_ms'])} "
                f"({states['uncached']['median_ms'] / states['L1']['median_ms']:,.1f}x faster) in-process."
            )
    return out


def render_markdown(results: dict[str, Any], charts: dict[str, str]) -> str:
    """The report as Markdown from a results structure (see ``run``); ``charts`` maps a chart key to its path."""
    quick = results.get("quick")
    lines = [
        "# Performance report",
        "",
        "Generated by `python -m bench.report` (`make bench`); do not edit by hand. Every number below was measured",
        "in the run described at the end (machine, date, command); the README's performance figures come from here.",
    ]
    if quick:
        lines += [
            "",
            "**--quick run**: tiny data and short runs, for smoke tests; the numbers say nothing about scale.",
        ]
    found = findings(results)
    if found:
        lines += ["", "## What the numbers show", ""] + [f"- {item}" for item in found]

    ceiling = results.get("ceiling")
    if ceiling and ceiling.get("points"):
        points = ceiling["points"]
        top = ceiling_rps(points)
        lines += [
            "",
            "## Throughput ceiling: the bare view vs cached authenticated GETs",
            "",
            f"wrk ({ceiling.get('wrk_version', 'wrk')}, {ceiling['threads']} thread(s), keep-alive, closed loop) for "
            f"{ceiling['duration_s']} s per cell after a {ceiling['warmup_s']} s warm-up, "
            + (
                f"{ceiling['rounds']} rounds interleaving the requests at each concurrency (medians shown; "
                "*rounds* lists each round's req/s), "
                if (ceiling.get("rounds") or 1) > 1
                else ""
            )
            + "against gunicorn "
            f"({describe_server(ceiling.get('server', {}))}). `/healthz` is a bare Django view returning a small "
            "JSON under the normal middleware (no database, no cache, no authentication): the ceiling. The API "
            "requests carry `Authorization: Token ...` and were warmed first; the 304 rows send the 200's ETag in "
            "`If-None-Match`. Every request carries `Accept-Encoding: gzip, deflate, br`, as browsers, curl "
            "`--compressed`, python-requests and locust send it (cached bodies are kept gzip-compressed too), "
            "except the *no gzip* row. *vs /healthz* is req/s over `/healthz`'s at the same concurrency; "
            f"*of ceiling* is req/s over `/healthz`'s best ({fmt_rps(top)} req/s).",
            "",
        ]
        rows = []
        for point in sorted(points, key=lambda p: (p["concurrency"], [t.key for t in TARGETS].index(p["target"]))):
            rows.append(
                [
                    str(point["concurrency"]),
                    TARGET_LABELS.get(point["target"], point["target"]),
                    fmt_rps(point["rps"]),
                    fmt_ratio(point.get("ratio")),
                    fmt_ratio(share(point["rps"], top)),
                    fmt_ms(point.get("p50_ms")),
                    fmt_ms(point.get("p99_ms")),
                    f"{point.get('errors', 0):,}",
                    " / ".join(fmt_rps(rps) for rps in point.get("rounds_rps") or []) or "—",
                ]
            )
        lines += table(
            ["connections", "request", "req/s", "vs /healthz", "of ceiling", "p50", "p99", "errors", "rounds"], rows
        )
        if ceiling.get("load_average_before") is not None:
            lines += [
                "",
                f"Load average (1 min) just before these runs: {ceiling['load_average_before']:.2f} "
                f"on {(results.get('machine') or {}).get('Cores', '?')} cores"
                + (
                    " (the machine was busy: other processes shared the CPU)."
                    if ceiling["load_average_before"] >= 0.5
                    else "."
                ),
            ]
        if ceiling.get("body_bytes"):
            sizes = ", ".join(
                f"{TARGET_LABELS.get(k, k)} {v:,} bytes" for k, v in ceiling["body_bytes"].items() if v is not None
            )
            lines += ["", f"Response bodies on the wire: {sizes}."]
        lines += chart_line(charts, "throughput", "Throughput vs concurrency")

    workers = results.get("worker_classes")
    if workers:
        top = ceiling_rps((ceiling or {}).get("points") or [])
        lines += [
            "",
            "## Worker classes on the same mixed workload",
            "",
            "`bench.loadtest` (locustfile.py: analysts, factor searches, calculations, supplier edits, ERP batches) "
            "with the same users, duration and think time for each worker class; *of ceiling* is req/s over the "
            "`/healthz` ceiling above (measured with gevent workers).",
            "",
        ]
        rows = [
            [
                w["worker_class"] + (f" ({w['threads']} threads)" if w.get("threads") else ""),
                fmt_rps(w.get("rps")),
                fmt_ratio(share(w.get("rps"), top)),
                fmt_ms(w.get("p50_ms")),
                fmt_ms(w.get("p95_ms")),
                fmt_ms(w.get("p99_ms")),
                f"{w.get('requests', 0):,}",
                f"{w.get('failures', 0):,} ({fmt_pct(w.get('error_rate'))})",
                fmt_pct(w.get("cache_hit_rate")),
            ]
            if not w.get("error")
            else [w["worker_class"], "not run: " + w["error"][:200], "", "", "", "", "", "", ""]
            for w in workers
        ]
        lines += table(
            ["worker class", "req/s", "of ceiling", "p50", "p95", "p99", "requests", "errors", "cache hit rate"],
            rows,
        )
        lines += chart_line(charts, "workers", "Worker classes")

    main = results.get("loadtest")
    if main and main.get("endpoints"):
        top = ceiling_rps((ceiling or {}).get("points") or [])
        lines += [
            "",
            f"## Load test ({MAIN_WORKER_CLASS} workers)",
            "",
            f"{main.get('users')} users, {main.get('duration')}, think-time scale {main.get('wait_scale', 1):g}, "
            f"{main.get('orgs')} organization(s); gunicorn {describe_server(main.get('server', {}))}. Cache hit "
            f"rate (from `/metrics`, this run's traffic only): {fmt_pct(main.get('cache_hit_rate'))}.",
            "",
        ]
        rows = [
            [
                f"{e['method']} {e['name']}",
                f"{e['requests']:,}",
                f"{e['failures']:,}",
                fmt_ms(e.get("p50_ms")),
                fmt_ms(e.get("p95_ms")),
                fmt_ms(e.get("p99_ms")),
                fmt_rps(e.get("rps")),
                fmt_ratio(share(e.get("rps"), top)),
            ]
            for e in main["endpoints"]
        ]
        agg = main["aggregated"]
        rows.append(
            [
                "**all requests**",
                f"{agg['requests']:,}",
                f"{agg['failures']:,} ({fmt_pct(agg.get('error_rate'))})",
                fmt_ms(agg.get("p50_ms")),
                fmt_ms(agg.get("p95_ms")),
                fmt_ms(agg.get("p99_ms")),
                fmt_rps(agg.get("rps")),
                fmt_ratio(share(agg.get("rps"), top)),
            ]
        )
        lines += table(["endpoint", "requests", "failures", "p50", "p95", "p99", "req/s", "of ceiling"], rows)
        lines.append("")
        for check in main.get("thresholds", []):
            verdict = {True: "ok", False: "**broken**", None: "not checked"}[check["ok"]]
            lines.append(f"- threshold {check['name']}: {verdict} ({check['detail']})")
        lines += chart_line(charts, "latency", "Latency percentiles per endpoint")

    db = results.get("db")
    if db and db.get("rows"):
        lines += [
            "",
            "## Database: naive vs optimized",
            "",
            f"From `manage.py bench_db` ({db.get('runs')} timed runs per side, medians); the full report with every "
            f"note: [{db['report']}]({db['report']}).",
            "",
        ]
        rows = [
            [
                r["benchmark"],
                "—" if r["naive_ms"] is None else f"{fmt_ms(r['naive_ms'])} ({r['naive_label']})",
                f"{fmt_ms(r['optimized_ms'])} ({r['optimized_label']})",
                "—" if r["ratio"] is None else f"{r['ratio']:,.1f}x",
            ]
            for r in db["rows"]
        ]
        lines += table(["benchmark", "naive", "optimized", "naive / optimized"], rows)
        lines += chart_line(charts, "naive_vs_optimized", "Naive vs optimized")

    cache = results.get("cache")
    if cache and cache.get("endpoints"):
        c1 = next(
            (
                p["rps"]
                for p in (ceiling or {}).get("points") or []
                if p["target"] == BARE.key and p["concurrency"] == 1
            ),
            None,
        )
        lines += [
            "",
            "## Cache: uncached vs Redis vs process memory vs 304",
            "",
            f"From `manage.py bench_cache` ({cache.get('rounds')} interleaved rounds, in-process test client, one "
            f"client; req/s = 1 / median); full report: [{cache['report']}]({cache['report']}). *vs /healthz, 1 "
            "connection* divides by `/healthz` over HTTP with one wrk connection: in-process requests skip the "
            "network and gunicorn, so that ratio can exceed 1.",
            "",
        ]
        rows = []
        for endpoint in cache["endpoints"]:
            for state, values in endpoint["states"].items():
                rps = 1000 / values["median_ms"] if values["median_ms"] else None
                rows.append(
                    [
                        endpoint["name"],
                        state,
                        fmt_ms(values["median_ms"]),
                        fmt_ms(values.get("p95_ms")),
                        fmt_rps(rps),
                        fmt_ratio(share(rps, c1)),
                        str(values.get("queries", "—")),
                    ]
                )
        lines += table(["endpoint", "state", "median", "p95", "req/s", "vs /healthz, 1 connection", "SQL"], rows)

    lines += ["", "## Machine", ""]
    lines += [f"- **{key}**: {value}" for key, value in (results.get("machine") or {}).items()]
    lines += ["", "## Reproduce", "", "```sh", results.get("command", "make bench"), "```", ""]
    lines += [f"Run on {results.get('date', '?')}; took {results.get('elapsed_s', 0) / 60:.1f} min."]
    notes = results.get("notes") or []
    errors = results.get("errors") or []
    if notes or errors:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in notes]
        lines += [f"- **phase {e['phase']} failed**: {e['message']}" for e in errors]
    return "\n".join(lines) + "\n"


def chart_line(charts: dict[str, str], key: str, title: str) -> list[str]:
    return ["", f"![{title}]({charts[key]})"] if key in charts else []


def describe_server(server: dict[str, Any]) -> str:
    if not server:
        return "default settings"
    parts = [f"{server.get('workers', '?')} {server.get('worker_class', '?')} workers"]
    if server.get("worker_connections"):
        parts.append(f"worker_connections {server['worker_connections']}")
    if server.get("threads"):
        parts.append(f"{server['threads']} threads")
    return ", ".join(parts)


# -- charts ----------------------------------------------------------------------------------------------


def write_charts(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """PNG charts for whatever the results hold; returns chart key -> file written."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a server or in CI
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    points = (results.get("ceiling") or {}).get("points") or []
    if points:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for target in TARGETS:
            mine = sorted((p for p in points if p["target"] == target.key), key=lambda p: p["concurrency"])
            if mine:
                ax.plot(
                    [p["concurrency"] for p in mine],
                    [p["rps"] for p in mine],
                    marker="o",
                    linestyle="--" if target.conditional else "-",
                    linewidth=2.5 if target is BARE else 1.5,
                    label=target.label,
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["concurrency"] for p in points}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel("requests / s")
        ax.set_title("Throughput vs concurrency: bare view vs cached authenticated GETs")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written["throughput"] = _save(fig, directory / "throughput.png")

    main = results.get("loadtest") or {}
    endpoints = [e for e in main.get("endpoints") or [] if e.get("p50_ms") is not None]
    if endpoints:
        names = [f"{e['method']} {e['name']}" for e in endpoints]
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.5))
        height = 0.27
        for i, (key, label) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
            ax.barh(
                [y + (i - 1) * height for y in range(len(names))],
                [e.get(key) or 0 for e in endpoints],
                height=height,
                label=label,
            )
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("ms")
        ax.set_title(f"Load test latency percentiles per endpoint ({MAIN_WORKER_CLASS})")
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend()
        written["latency"] = _save(fig, directory / "latency.png")

    db_rows = [r for r in (results.get("db") or {}).get("rows") or [] if r.get("naive_ms") is not None]
    cache_endpoints = (results.get("cache") or {}).get("endpoints") or []
    if db_rows or cache_endpoints:
        panels = [p for p in (db_rows, cache_endpoints) if p]
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
        ax_iter = iter(axes[0])
        if db_rows:
            ax = next(ax_iter)
            labels = [_wrap(r["benchmark"]) for r in db_rows]
            ys = range(len(db_rows))
            ax.barh([y - 0.2 for y in ys], [r["naive_ms"] for r in db_rows], height=0.4, label="naive")
            ax.barh([y + 0.2 for y in ys], [r["optimized_ms"] for r in db_rows], height=0.4, label="optimized")
            ax.set_yticks(list(ys))
            ax.set_yticklabels(labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlabel("ms (log scale)")
            ax.set_title("Database: naive vs optimized (bench_db)")
            ax.legend(fontsize=8)
        if cache_endpoints:
            ax = next(ax_iter)
            states = list(cache_endpoints[0]["states"])
            width = 0.8 / max(1, len(cache_endpoints))
            for i, endpoint in enumerate(cache_endpoints):
                ax.bar(
                    [x + i * width for x in range(len(states))],
                    [endpoint["states"].get(s, {}).get("median_ms") or 0 for s in states],
                    width=width,
                    label=endpoint["name"],
                )
            ax.set_xticks([x + width * (len(cache_endpoints) - 1) / 2 for x in range(len(states))])
            ax.set_xticklabels(states)
            ax.set_yscale("log")
            ax.set_ylabel("median ms (log scale)")
            ax.set_title("Cache: uncached vs L2 vs L1 vs 304 (bench_cache)")
            ax.legend(fontsize=8)
        written["naive_vs_optimized"] = _save(fig, directory / "naive_vs_optimized.png")

    workers = [w for w in results.get("worker_classes") or [] if w.get("rps") is not None]
    if workers:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        names = [w["worker_class"] for w in workers]
        left.bar(names, [w["rps"] for w in workers], color="tab:blue")
        left.set_ylabel("requests / s")
        left.set_title("Throughput")
        width = 0.27
        for i, (key, label) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
            right.bar(
                [x + (i - 1) * width for x in range(len(names))], [w.get(key) or 0 for w in workers], width, label=label
            )
        right.set_xticks(range(len(names)))
        right.set_xticklabels(names)
        right.set_ylabel("ms")
        right.set_title("Latency")
        right.legend(fontsize=8)
        fig.suptitle("Worker classes, same mixed workload")
        written["workers"] = _save(fig, directory / "workers.png")
    return written


def _wrap(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- phases ------------------------------------------------------------------------------------------------


def django_setup() -> None:
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
        django.setup()


def close_db() -> None:
    """Close this process's database connections (and pool) before servers take the load."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()
        connection.close()


def seed_bench(options: argparse.Namespace, sizes: Sizes) -> bool:
    """The benchmark organization and, for the real run, a neighbour tenant of the same size (as make bench-db)."""
    org = options.bench_org
    say(f"seed_demo --org {org} --activities {sizes.bench_activities:,} --if-empty")
    lt.manage("seed_demo", "--org", org, "--activities", str(sizes.bench_activities), "--if-empty")
    if not options.quick:
        lt.manage(
            "seed_demo", "--org", f"{org}-neighbour", "--activities", str(sizes.bench_activities),
            "--seed", "43", "--if-empty",
        )  # fmt: skip
    return True


def run_db(options: argparse.Namespace, sizes: Sizes, bench_dir: Path) -> dict[str, Any]:
    """The database benchmark (``bench.db``, as ``manage.py bench_db``) in this process; its rows (ms) and findings."""
    from bench.db import DatabaseBenchmark
    from emissions.models import Organization

    out = bench_dir / "db.md"
    say(f"bench_db --org {options.bench_org} --runs {sizes.bench_runs}" + (" --quick" if options.quick else ""))
    benchmark = DatabaseBenchmark(
        Organization.objects.get(slug=options.bench_org), runs=sizes.bench_runs, quick=options.quick
    )
    report = benchmark.run(out)
    (options.raw_dir / "bench_db.log").write_text(benchmark.markdown, encoding="utf-8")
    return {
        "report": relative_link(out, options.out),
        "runs": sizes.bench_runs,
        "rows": [
            {
                "benchmark": row.benchmark,
                "naive_ms": None if row.naive is None else row.naive.median * 1000,
                "optimized_ms": row.optimized.median * 1000,
                "naive_label": row.naive_label,
                "optimized_label": row.optimized_label,
                "ratio": row.ratio,
            }
            for row in report.rows
        ],
        "findings": list(report.findings),
    }


def run_cache(options: argparse.Namespace, sizes: Sizes, bench_dir: Path) -> dict[str, Any]:
    """The cache benchmark (``bench.cache``, as ``manage.py bench_cache``) in this process; per endpoint and state:
    median, p95, SQL statements."""
    from bench.cache import CacheBenchmark

    out = bench_dir / "cache.md"
    say(f"bench_cache --org {options.bench_org} --rounds {sizes.cache_rounds}")
    with open(options.raw_dir / "bench_cache.log", "w", encoding="utf-8") as log:
        benchmark = CacheBenchmark(
            options.bench_org, rounds=sizes.cache_rounds, activities=sizes.bench_activities, stdout=log
        )
        benchmark.run(out)
        log.write(benchmark.markdown)
    return {
        "report": relative_link(out, options.out),
        "rounds": sizes.cache_rounds,
        "endpoints": [
            {
                "name": endpoint.endpoint.name,
                "url": endpoint.endpoint.url,
                "body_bytes": endpoint.body_bytes,
                "states": {
                    state: {
                        "median_ms": result.median * 1000,
                        "p95_ms": None if result.p95 is None else result.p95 * 1000,
                        "queries": result.queries,
                    }
                    for state, result in endpoint.results.items()
                },
            }
            for endpoint in benchmark.reports
        ],
    }


def free_bind(host: str = "127.0.0.1") -> str:
    """A ``host:port`` nothing listens on, chosen by the kernel, outside ``RESERVED_PORTS``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return f"{host}:{port}"
    raise PhaseError("no free port found")


def fetch(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one GET; 304 and errors included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def server_options(bind: str, worker_class: str | None, extra: Sequence[str] = ()) -> argparse.Namespace:
    """bench.loadtest's options for ``start_server``: the same gunicorn settings as the load test."""
    args = ["--bind", bind, *extra]
    if worker_class:
        args += ["--worker-class", worker_class]
    return lt.parser().parse_args(args)


def server_settings(worker_class: str, threads: int | None = None) -> dict[str, Any]:
    return {
        "workers": os.environ.get("GUNICORN_WORKERS") or "2",
        "worker_class": worker_class,
        "worker_connections": os.environ.get("GUNICORN_WORKER_CONNECTIONS") or None,
        "threads": threads,
    }


def wrk_version() -> str:
    result = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (result.stdout + result.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def run_ceiling(options: argparse.Namespace, sizes: Sizes, token: str, slug: str) -> dict[str, Any]:
    """gunicorn + wrk: /healthz vs the cached GETs (200 and 304) at every concurrency; ratios to /healthz."""
    if shutil.which("wrk") is None:
        raise PhaseError("wrk is not installed (Debian: apt-get install -y wrk; make bench installs it)")
    raw = options.raw_dir / "ceiling"
    raw.mkdir(parents=True, exist_ok=True)
    bind = free_bind()
    url = lt.base_url(bind)
    host = url.removeprefix("http://")
    # The cache keys and ETags of the API include the Host the requests carry: warm for the one wrk sends.
    say(f"warm_cache --org {slug} --host {host}")
    lt.manage("warm_cache", "--org", slug, "--host", host, "--no-progress")
    load = os.getloadavg()[0]
    say(f"gunicorn on {bind} for the ceiling (log: {raw / 'gunicorn.log'}); load average {load:.2f}")
    server = lt.start_server(server_options(bind, None), raw)
    points: list[dict[str, Any]] = []
    body_bytes: dict[str, int | None] = {}
    try:
        lt.wait_until_ready(server, url, lt.READY_TIMEOUT)
        headers_for: dict[str, dict[str, str]] = {}
        auth = {"Authorization": f"Token {token}", "Accept": "application/json"}
        for target in TARGETS:
            headers = {**(CLIENT_HEADERS if target.compressed else {}), **(auth if target.authenticated else {})}
            if target.conditional:
                status, response_headers, _ = fetch(url + target.path, headers)
                etag = response_headers.get("ETag")
                if status != 200 or not etag:
                    raise PhaseError(f"GET {target.path} answered {status} without an ETag; cannot test 304s")
                headers["If-None-Match"] = etag
            # Twice: the first request fills this worker's memory; the second shows what wrk will get.
            fetch(url + target.path, headers)
            status, _, body = fetch(url + target.path, headers)
            if status != target.expected_status:
                raise PhaseError(f"GET {target.path} answered {status}, not {target.expected_status}")
            headers_for[target.key] = headers
            body_bytes[target.key] = len(body)
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "report.lua"
            script.write_text(WRK_SCRIPT, encoding="utf-8")
            for concurrency in sizes.concurrencies:
                runs: dict[str, list[WrkResult]] = {target.key: [] for target in TARGETS}
                # Rounds interleave the targets: a disturbance of the machine (another process, a noisy
                # neighbour) then hits one round of each, and the median of the rounds discards it.
                for round_no in range(1, sizes.wrk_rounds + 1):
                    for target in TARGETS:
                        if not server.running():
                            raise PhaseError(f"gunicorn exited during the ceiling runs:\n{server.tail()}")
                        common = {"concurrency": concurrency, "threads": options.wrk_threads, "script": script}
                        headers = headers_for[target.key]
                        run_wrk(
                            wrk_command(url + target.path, duration_s=sizes.wrk_warmup, headers=headers, **common),
                            timeout=sizes.wrk_warmup + 30,
                        )
                        command = wrk_command(
                            url + target.path, duration_s=sizes.wrk_duration, headers=headers, **common
                        )
                        result, output = run_wrk(command, timeout=sizes.wrk_duration + 30)
                        (raw / f"wrk_{target.key}_c{concurrency}_r{round_no}.txt").write_text(
                            output.replace(token, "<token>"), encoding="utf-8"
                        )
                        runs[target.key].append(result)
                        say(
                            f"  c={concurrency:<3} round {round_no} {target.label:<32} {result.rps:>9,.0f} req/s  "
                            f"p50 {fmt_ms(result.p50_ms)}  p99 {fmt_ms(result.p99_ms)}  errors {result.errors}"
                        )
                for target in TARGETS:
                    points.append(
                        {"target": target.key, "concurrency": concurrency, **combine_rounds(runs[target.key])}
                    )
            # The same statuses after the runs: a write or an expired version during them would mix states.
            for target in TARGETS:
                status, _, _ = fetch(url + target.path, headers_for[target.key])
                if status != target.expected_status:
                    raise PhaseError(
                        f"after the runs GET {target.path} answered {status}, not {target.expected_status}"
                    )
    finally:
        say("stopping gunicorn (ceiling)")
        server.stop(lt.SERVER_STOP_TIMEOUT)
    return {
        "points": add_ratios(points),
        "duration_s": sizes.wrk_duration,
        "warmup_s": sizes.wrk_warmup,
        "rounds": sizes.wrk_rounds,
        "threads": options.wrk_threads,
        "wrk_version": wrk_version(),
        "server": server_settings(os.environ.get("GUNICORN_WORKER_CLASS") or MAIN_WORKER_CLASS),
        "body_bytes": body_bytes,
        # Other processes competing for the CPU distort req/s: the report says how busy the machine was.
        "load_average_before": load,
    }


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in os.environ for the duration (bench.loadtest's children inherit it), then restored."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def loadtest_args(options: argparse.Namespace, sizes: Sizes, out: Path, worker_class: str) -> list[str]:
    args = [
        "--users", str(sizes.users), "--spawn-rate", f"{sizes.spawn_rate:g}", "--duration", sizes.duration,
        "--out", str(out), "--orgs", str(sizes.orgs), "--activities", str(sizes.load_activities),
        "--bind", free_bind(), "--worker-class", worker_class,
    ]  # fmt: skip
    if options.wait_scale is not None:
        args += ["--wait-scale", f"{options.wait_scale:g}"]
    if sizes.max_factors:
        args += ["--max-factors", str(sizes.max_factors)]
    return args


def run_loadtest(options: argparse.Namespace, sizes: Sizes, worker_class: str) -> dict[str, Any]:
    """One ``bench.loadtest`` run with ``worker_class``; its summary.json plus the exit status."""
    out = options.raw_dir / f"loadtest-{worker_class}"
    threads = options.threads if worker_class == "gthread" else None
    # Read by gunicorn.conf.py and by the settings, which size each worker's database pool to its threads.
    extra = {"GUNICORN_THREADS": str(threads)} if threads else {}
    say(f"load test with {worker_class} workers" + (f" ({threads} threads)" if threads else "") + f" -> {out}")
    with environment(extra):
        status = lt.run(lt.parser().parse_args(loadtest_args(options, sizes, out, worker_class)))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    aggregated = summary["aggregated"]
    return {
        "worker_class": worker_class,
        "threads": threads,
        "exit_status": status,
        "rps": aggregated["rps"],
        "p50_ms": aggregated["p50_ms"],
        "p95_ms": aggregated["p95_ms"],
        "p99_ms": aggregated["p99_ms"],
        "requests": aggregated["requests"],
        "failures": aggregated["failures"],
        "error_rate": aggregated["error_rate"],
        "cache_hit_rate": summary["cache"].get("hit_rate"),
        "broken": summary.get("broken", []),
        "summary": summary,
    }


def main_loadtest(run: dict[str, Any], sizes: Sizes, options: argparse.Namespace) -> dict[str, Any]:
    """The report's view of the main (gevent) load test."""
    summary = run["summary"]
    return {
        "users": sizes.users,
        "duration": sizes.duration,
        "wait_scale": options.wait_scale if options.wait_scale is not None else 1.0,
        "orgs": sizes.orgs,
        "server": server_settings(run["worker_class"]),
        "endpoints": summary["endpoints"],
        "aggregated": summary["aggregated"],
        "cache_hit_rate": summary["cache"].get("hit_rate"),
        "thresholds": summary.get("thresholds", []),
        "broken": summary.get("broken", []),
    }


# -- orchestration -----------------------------------------------------------------------------------------


def relative_link(target: Path, report: Path) -> str:
    """``target`` as a link from the report's folder (relative when possible, else its name)."""
    try:
        return os.path.relpath(target.resolve(), report.resolve().parent)
    except ValueError:
        return target.name


def reproduce(options: argparse.Namespace) -> str:
    """The command that repeats this run, without machine paths."""
    if not options.quick and options.out == Path(DEFAULT_OUT) and set(options.phases) == set(PHASES):
        return "make bench"
    parts = ["python", "-m", "bench.report"]
    if options.quick:
        parts.append("--quick")
    if not options.out.is_absolute():
        parts += ["--out", str(options.out)]
    if set(options.phases) != set(PHASES):
        parts += ["--phases", ",".join(options.phases)]
    return " ".join(shlex.quote(part) for part in parts)


def phases_arg(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(PHASES)}; got {text!r}")
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Database and cache benchmarks, the throughput ceiling (wrk: /healthz vs cached GETs), "
        "worker classes and the load test in one run; writes a Markdown report with PNG charts.",
    )
    p.add_argument("--quick", action="store_true", help="Tiny data, short runs: a smoke test of the whole report")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"The report (default {DEFAULT_OUT})")
    p.add_argument(
        "--assets-dir",
        type=Path,
        default=None,
        help="Charts folder (default: the report's path without .md, e.g. docs/performance/)",
    )
    p.add_argument(
        "--bench-dir",
        type=Path,
        default=None,
        help="Where bench_db and bench_cache write db.md and cache.md (default: <out folder>/benchmarks, or "
        "<assets dir>/benchmarks with --quick)",
    )
    p.add_argument(
        "--raw-dir",
        type=Path,
        default=None,
        help=f"wrk outputs, load-test CSVs and logs, results.json (default {DEFAULT_RAW_DIR}, or <assets dir>/raw "
        "with --quick)",
    )
    p.add_argument("--phases", type=phases_arg, default=list(PHASES), help=f"Subset of {','.join(PHASES)} (all)")
    p.add_argument(
        "--bench-org", default=None, help="Organization of bench_db/bench_cache (bench; --quick: bench-quick)"
    )
    p.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=None,
        help="wrk connections, comma-separated (default 1,8,32,64; --quick 1,8)",
    )
    p.add_argument("--wrk-duration", type=int, default=None, help="Seconds per wrk measurement (5; --quick 2)")
    p.add_argument(
        "--wrk-rounds",
        type=int,
        default=None,
        help="Interleaved rounds per concurrency; the report shows medians (3; --quick 1)",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: the server needs the cores)")
    p.add_argument("--users", type=int, default=None, help=f"Load-test users ({lt.DEFAULT_USERS}; --quick 10)")
    p.add_argument("--duration", default=None, help=f"Load-test run time per worker class ({lt.DEFAULT_DURATION})")
    p.add_argument("--wait-scale", type=float, default=None, help="Load-test think-time scale (default 1)")
    p.add_argument("--threads", type=int, default=8, help="Threads per gthread worker (default 8)")
    p.add_argument(
        "--render-only",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="Measure nothing: render the report and charts again from a results.json of an earlier run",
    )
    return p


def resolve(options: argparse.Namespace) -> Sizes:
    """Fill the path defaults and return the sizes after the command-line overrides."""
    sizes = QUICK if options.quick else FULL
    overrides: dict[str, Any] = {}
    if options.concurrency:
        overrides["concurrencies"] = options.concurrency
    if options.wrk_duration:
        overrides["wrk_duration"] = options.wrk_duration
    if options.wrk_rounds:
        overrides["wrk_rounds"] = options.wrk_rounds
    if options.users:
        overrides["users"] = options.users
    if options.duration:
        overrides["duration"] = options.duration
    sizes = Sizes(**{**asdict(sizes), **overrides})
    options.assets_dir = options.assets_dir or options.out.with_suffix("")
    if options.bench_dir is None:
        options.bench_dir = options.assets_dir / "benchmarks" if options.quick else options.out.parent / "benchmarks"
    if options.raw_dir is None:
        options.raw_dir = options.assets_dir / "raw" if options.quick else Path(DEFAULT_RAW_DIR)
    options.bench_org = options.bench_org or ("bench-quick" if options.quick else "bench")
    return sizes


def render(results: dict[str, Any], options: argparse.Namespace) -> None:
    """Charts into the assets folder, then the Markdown report referencing them."""
    charts = write_charts(results, options.assets_dir)
    links = {key: relative_link(path, options.out) for key, path in charts.items()}
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(render_markdown(results, links), encoding="utf-8")
    say(f"wrote {options.out} and {len(charts)} chart(s) in {options.assets_dir}")


def run(options: argparse.Namespace) -> int:
    """Every chosen phase; the report is written even when one fails (exit status 2 then)."""
    sizes = resolve(options)
    if options.render_only:
        render(json.loads(options.render_only.read_text(encoding="utf-8")), options)
        return 0
    problems = preflight(options.phases)
    if problems:
        print("report: " + "; ".join(problems), file=sys.stderr)
        return 2
    started = time.monotonic()
    options.raw_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "quick": options.quick,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": reproduce(options),
        "errors": [],
        "notes": [],
    }

    def attempt(phase: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        # Any failure of one phase is reported and the others still run (KeyboardInterrupt is no Exception).
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            known = isinstance(exc, PhaseError | lt.RunError | BenchError)
            message = str(exc) if known else f"{type(exc).__name__}: {exc}"
            say(f"phase {phase} failed: {message}")
            results["errors"].append({"phase": phase, "message": " ".join(message.split())[:1000]})
            return None

    if "db" in options.phases or "cache" in options.phases:
        django_setup()
        if attempt("seed", seed_bench, options, sizes):
            if "db" in options.phases:
                results["db"] = attempt("db", run_db, options, sizes, options.bench_dir)
            if "cache" in options.phases:
                results["cache"] = attempt("cache", run_cache, options, sizes, options.bench_dir)
        close_db()

    slugs = lt.org_slugs(lt.DEFAULT_ORG_PREFIX, sizes.orgs)
    if "ceiling" in options.phases or "workers" in options.phases:
        # The load tests' organizations (seeded once, when empty): the ceiling reads the first one's data.
        tokens = attempt("seed", lt.prepare_orgs, slugs, activities=sizes.load_activities, seed=True) or []
        if tokens and "ceiling" in options.phases:
            results["ceiling"] = attempt("ceiling", run_ceiling, options, sizes, tokens[0], slugs[0])
        if tokens and "workers" in options.phases:
            runs = [attempt(f"load test ({cls})", run_loadtest, options, sizes, cls) for cls in WORKER_CLASSES]
            results["worker_classes"] = [
                {k: v for k, v in run.items() if k != "summary"}
                if run
                else {"worker_class": cls, "error": "see the notes"}
                for cls, run in zip(WORKER_CLASSES, runs, strict=True)
            ]
            main_run = runs[WORKER_CLASSES.index(MAIN_WORKER_CLASS)]
            if main_run:
                results["loadtest"] = main_loadtest(main_run, sizes, options)
    cores = os.cpu_count() or 0
    results["notes"].append(
        f"The load generators (wrk, locust) ran on the same {cores}-core machine as gunicorn, PostgreSQL and Redis: "
        "they take CPU from the server, so absolute req/s are lower than on a dedicated server; the ratios compare "
        "requests measured under the same conditions."
    )
    described = ([options.bench_org] if {"db", "cache"} & set(options.phases) else []) + slugs
    results["machine"] = {**lt.machine_description(described), "Redis": redis_version()}
    if "ceiling" in options.phases or "workers" in options.phases:
        results["machine"]["Load generator"] = wrk_version() if shutil.which("wrk") else "wrk not installed"
    results["elapsed_s"] = time.monotonic() - started
    (options.raw_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    render(results, options)
    if results["errors"]:
        return 2
    missed = missed_bars(results)
    for item in missed:
        print(f"report: bar missed: {item}", file=sys.stderr)
    return 1 if missed else 0


def preflight(phases: Sequence[str]) -> list[str]:
    """What is missing for the chosen phases, checked before anything runs (the charts come last, after minutes)."""
    problems = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        problems.append("matplotlib is not installed (pip install matplotlib): the charts need it")
    if "ceiling" in phases and shutil.which("wrk") is None:
        problems.append("wrk is not installed (Debian: apt-get install -y wrk; make bench installs it)")
    return problems


def redis_version() -> str:
    try:
        django_setup()
        from django.conf import settings

        if not settings.CACHES.get("default", {}).get("BACKEND", "").startswith("django_redis"):
            return "not configured"
        from django_redis import get_redis_connection

        return f"Redis {get_redis_connection('default').info('server')['redis_version']}"
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        with lt.terminate_on_sigterm():
            return run(options)
    except KeyboardInterrupt:
        print("report: interrupted; everything it started was stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
