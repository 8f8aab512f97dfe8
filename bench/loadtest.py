"""``python -m bench.loadtest``: one load test end to end (``make loadtest``).

Steps, each printed as it starts:

1. seed: ``--orgs`` organizations (``loadtest-a``, ``loadtest-b``, ...) get ``--activities`` activities each
   with ``manage.py seed_demo --if-empty`` (nothing happens when they already have data), and an API user
   each with ``manage.py create_org_user``, whose printed token the simulated users authenticate with;
2. ``manage.py collectstatic`` (as ``make serve``; only when never run before, as it takes half a minute)
   and, unless ``--no-warm``, ``manage.py warm_cache`` for those organizations with the Host header locust
   will send, so the run starts as a warmed server would;
3. gunicorn (``vcci/gunicorn.conf.py``, in its own process group; ``--workers``, ``--worker-class`` and
   ``--worker-connections`` become ``GUNICORN_*``, else the environment's or the config's defaults), then
   ``/healthz`` is polled until it answers 200 and ``/readyz`` until DB and Redis are reachable;
4. the payload catalogue (``python locustfile.py --catalogue``: real factors and suppliers read through the
   API, each factor/unit combination probed once), a scrape of ``/metrics`` (before), locust headless on
   ``locustfile.py`` (``--users``, ``--spawn-rate``, ``--duration``), a scrape of ``/metrics`` (after):
   the cache counters' difference is the run's own traffic, without seeding, warm-up and catalogue;
5. gunicorn and locust are stopped, always (also on Ctrl-C, SIGTERM or an error): SIGTERM to the process
   group, then SIGKILL if it has not exited in time;
6. the report: ``<out>/report.html`` (locust), ``<out>/locust_stats.csv`` and the other CSVs,
   ``<out>/summary.json`` (per endpoint: requests, failures, p50/p95/p99 ms, req/s; in total: req/s and
   error rate; the cache hit rate, overall and per resource; the CPU of each part; how late the server's
   workers and locust's processes woke a ready greenlet, from ``vcci_event_loop_lag_seconds`` and from the
   locustfile's files in ``<out>/loop-lag``; the thresholds and which were broken; the machine), the server's
   and locust's logs, and a table on stdout.

Exit status: 0 when every threshold holds, 1 when one is broken (each is listed), 2 when the run itself
could not be made (seeding, a server that does not start, locust that does not run), 130 on Ctrl-C.

Thresholds: ``--max-error-rate`` (default 0: any failed request or locustfile exception breaks it),
``--min-cache-hit-rate`` (default 0.95; ``off`` to disable) and ``--max-p95-ms`` (all requests together;
default off). The hit rate is (L1 hits + L2 hits) / (L1 hits + L1 misses) of ``vcci_cache_events_total``
over all resources: the share of cache lookups answered without the database. When ``/metrics`` cannot
be read the rate is reported as unavailable, which breaks the threshold unless ``--no-require-metrics``.
``/metrics`` is read from 127.0.0.1 (allow-listed) or with ``Authorization: Bearer $METRICS_TOKEN``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import measure, profile, trace
from bench.measure import SETTINGS_MODULE
from perf.trace import TRACE_DIR_ENV

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfile.py"
GUNICORN_CONF = ROOT / "vcci" / "gunicorn.conf.py"
# The server under test runs the production settings, whatever this process and its manage.py children run with
# (the tooling's SETTINGS_MODULE adds the bench app, which a production server does not have).
SERVER_SETTINGS = "vcci.settings"

DEFAULT_USERS = 50
DEFAULT_SPAWN_RATE = 10.0
DEFAULT_DURATION = "60s"
DEFAULT_OUT = "loadtest-results"
DEFAULT_ORGS = 2
DEFAULT_ORG_PREFIX = "loadtest"
DEFAULT_ACTIVITIES = 20_000
DEFAULT_BIND = "127.0.0.1:8765"
DEFAULT_MIN_CACHE_HIT_RATE = 0.95
# collectstatic's manifest (settings.STATIC_ROOT, CompressedManifestStaticFilesStorage): present once collected.
STATIC_MANIFEST = Path("staticfiles") / "staticfiles.json"
CSV_PREFIX = "locust"  # locust writes <prefix>_stats.csv, _stats_history.csv, _failures.csv, _exceptions.csv
# Seconds a simulated user may take to finish its current task once the run time is over (locust --stop-timeout):
# without it, requests in flight are cut off at the end of the run.
STOP_TIMEOUT = 10
READY_TIMEOUT = 60.0
# Extra seconds locust may take beyond the run time (start-up, catalogue loading, stop, reports) before it is killed.
LOCUST_GRACE = 120.0
SERVER_STOP_TIMEOUT = 40.0  # above gunicorn's default graceful timeout (30 s)
CACHE_METRIC = "vcci_cache_events_total"
LOOP_LAG_METRIC = "vcci_event_loop_lag_seconds"
TRACE_DIR, TRACE_REPORT = "trace", "trace.md"  # in --out: both sides' records (--trace), and what they say
LOOP_LAG_DIR = "loop-lag"  # in --out: each locust process's own event loop lag (locustfile.LoopLag)
TOKEN_LINE = re.compile(r"^API token: (\S+)\s*$", re.MULTILINE)
TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


class RunError(Exception):
    """The run could not be made (exit status 2); the message says which step failed and why."""


# -- options -----------------------------------------------------------------------------------------------


def parse_duration(text: str) -> int:
    """Seconds in a locust time span: ``90``, ``90s``, ``2m``, ``1h30m``, ``1m30s``; ValueError otherwise."""
    match = TIMESPAN.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"not a duration such as 60s, 2m or 1h30m: {text!r}")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total < 1:
        raise ValueError(f"the duration must be at least 1 second: {text!r}")
    return total


def optional_float(text: str) -> float | None:
    """A number, or None for ``off`` / ``none`` / an empty string (a threshold that is not checked)."""
    if text.strip().lower() in ("", "off", "none"):
        return None
    return float(text)


def duration_arg(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text.strip()


def threshold_arg(text: str) -> float | None:
    try:
        value = optional_float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a number or 'off': {text!r}") from exc
    if value is not None and value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.loadtest",
        description="Seed, start gunicorn, run the locust scenarios headless, stop everything, report and check "
        "thresholds.",
    )
    load = p.add_argument_group("load")
    load.add_argument("--users", type=int, default=DEFAULT_USERS, help=f"Concurrent users (default {DEFAULT_USERS})")
    load.add_argument(
        "--spawn-rate",
        type=float,
        default=DEFAULT_SPAWN_RATE,
        help=f"Users started per second ({DEFAULT_SPAWN_RATE:g})",
    )
    load.add_argument(
        "--duration", type=duration_arg, default=DEFAULT_DURATION, help=f"Run time, e.g. 60s, 5m ({DEFAULT_DURATION})"
    )
    load.add_argument(
        "--wait-scale",
        type=float,
        default=None,
        help="Multiply every think time (VCCI_WAIT_SCALE; 0 = none, a capacity test); default 1",
    )
    load.add_argument(
        "--max-factors",
        type=int,
        default=None,
        help="Draw payloads from at most this many spend and average-data factors (default all, ~2,500; fewer "
        "build the catalogue faster, for smoke runs)",
    )
    load.add_argument(
        "--processes",
        type=int,
        default=None,
        help="Load-generator processes (locust --processes; default one): so that the generator is not the "
        "bottleneck it measures. Its CPU is reported next to the server's either way",
    )
    load.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="Sample the server's workers with py-spy for SECONDS once every user has started (bench.profile): "
        "pyspy-<pid>.txt and profile.md in --out (default 0: no profile)",
    )
    load.add_argument(
        "--trace",
        action="store_true",
        help="Record every request on both sides by its X-Request-ID and write where its time went (before the "
        "application, in it, after it; bench.trace) to trace.md in --out",
    )
    load.add_argument("--out", default=DEFAULT_OUT, help=f"Directory for the reports (default {DEFAULT_OUT})")

    data = p.add_argument_group("data")
    data.add_argument(
        "--orgs", type=int, default=DEFAULT_ORGS, help=f"Organizations to spread users over ({DEFAULT_ORGS})"
    )
    data.add_argument("--org-prefix", default=DEFAULT_ORG_PREFIX, help="Their slugs: <prefix>-a, <prefix>-b, ...")
    data.add_argument(
        "--activities",
        type=int,
        default=DEFAULT_ACTIVITIES,
        help=f"Activities seed_demo gives each organization that has none ({DEFAULT_ACTIVITIES:,})",
    )
    data.add_argument(
        "--no-seed", dest="seed", action="store_false", help="Do not run seed_demo (tokens are still made)"
    )
    data.add_argument("--no-warm", dest="warm", action="store_false", help="Start with the cache as it is")
    data.add_argument(
        "--collectstatic",
        choices=("auto", "always", "never"),
        default="auto",
        help="As make serve does: auto = only when never collected before (it takes half a minute); default auto",
    )

    server = p.add_argument_group("server")
    server.add_argument("--bind", default=DEFAULT_BIND, help=f"host:port gunicorn listens on ({DEFAULT_BIND})")
    server.add_argument("--workers", type=int, default=None, help="GUNICORN_WORKERS (default: environment, else 2)")
    server.add_argument(
        "--worker-class", default=None, help="GUNICORN_WORKER_CLASS (default: environment, else gevent)"
    )
    server.add_argument(
        "--worker-connections",
        type=int,
        default=None,
        help="GUNICORN_WORKER_CONNECTIONS (default: environment, else 100)",
    )
    server.add_argument(
        "--ready-timeout", type=float, default=READY_TIMEOUT, help=f"Seconds to wait for /healthz ({READY_TIMEOUT:g})"
    )

    limits = p.add_argument_group("thresholds (exit status 1 when one is broken)")
    limits.add_argument(
        "--max-error-rate",
        type=threshold_arg,
        default=0.0,
        help="Largest share of failed requests (+ locustfile exceptions), 0-1 (default 0); 'off' to skip",
    )
    limits.add_argument(
        "--min-cache-hit-rate",
        type=threshold_arg,
        default=DEFAULT_MIN_CACHE_HIT_RATE,
        help=f"Smallest cache hit rate from /metrics, 0-1 (default {DEFAULT_MIN_CACHE_HIT_RATE}); 'off' to skip",
    )
    limits.add_argument(
        "--max-p95-ms", type=threshold_arg, default=None, help="Largest p95 of all requests together (default off)"
    )
    limits.add_argument(
        "--require-metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Count an unreadable /metrics as a broken hit-rate threshold (default: yes)",
    )
    return p


def check_options(options: argparse.Namespace) -> None:
    """RunError for option values argparse's types cannot reject on their own."""
    problems = []
    if options.users < 1:
        problems.append(f"--users must be at least 1; got {options.users}")
    if options.spawn_rate <= 0:
        problems.append(f"--spawn-rate must be positive; got {options.spawn_rate:g}")
    if options.orgs < 1:
        problems.append(f"--orgs must be at least 1; got {options.orgs}")
    if options.activities < 1:
        problems.append(f"--activities must be at least 1; got {options.activities}")
    if options.profile < 0:
        problems.append(f"--profile must not be negative; got {options.profile}")
    if options.processes is not None and options.processes < 1:
        problems.append(f"--processes must be at least 1; got {options.processes}")
    if options.max_factors is not None and options.max_factors < 1:
        problems.append(f"--max-factors must be at least 1; got {options.max_factors}")
    if options.wait_scale is not None and options.wait_scale < 0:
        problems.append(f"--wait-scale must not be negative; got {options.wait_scale:g}")
    if ":" not in options.bind:
        problems.append(f"--bind must be host:port; got {options.bind!r}")
    if problems:
        raise RunError("; ".join(problems) + ".")


def org_slugs(prefix: str, count: int) -> list[str]:
    """``loadtest-a``, ``loadtest-b``, ... (``loadtest-27`` onwards past z)."""
    return [f"{prefix}-{chr(ord('a') + i)}" if i < 26 else f"{prefix}-{i + 1}" for i in range(count)]


def base_url(bind: str) -> str:
    """The URL clients use for a gunicorn bind address (a wildcard host is reached on the loopback)."""
    host, _, port = bind.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


# -- locust statistics ---------------------------------------------------------------------------------------


@dataclass
class EndpointStats:
    """One row of locust's ``_stats.csv``: an endpoint (method + name), or the aggregate of all."""

    method: str
    name: str
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    max_ms: float | None
    rps: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _number(text: str | None) -> float | None:
    """A CSV cell as a number; None for locust's ``N/A`` or an empty cell."""
    if text is None or text.strip() in ("", "N/A"):
        return None
    return float(text)


def read_stats(path: Path) -> tuple[list[EndpointStats], EndpointStats]:
    """(endpoints, aggregate) from locust's ``_stats.csv``; RunError when it is missing or has no aggregate."""
    if not path.is_file():
        raise RunError(f"locust wrote no statistics ({path.name} is missing); see locust.log.")
    endpoints: list[EndpointStats] = []
    aggregate: EndpointStats | None = None
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            stats = EndpointStats(
                method=row["Type"],
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50_ms=_number(row.get("50%")),
                p95_ms=_number(row.get("95%")),
                p99_ms=_number(row.get("99%")),
                avg_ms=_number(row.get("Average Response Time")),
                max_ms=_number(row.get("Max Response Time")),
                rps=_number(row.get("Requests/s")) or 0.0,
            )
            if row["Name"] == "Aggregated" and not row["Type"]:
                aggregate = stats
            else:
                endpoints.append(stats)
    if aggregate is None:
        raise RunError(f"{path.name} has no Aggregated row; is it locust's _stats.csv?")
    return endpoints, aggregate


def read_exceptions(path: Path) -> list[dict[str, Any]]:
    """Exceptions raised in the locustfile (``_exceptions.csv``): count and message of each; none if no file."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{"count": int(row["Count"]), "message": row["Message"]} for row in csv.DictReader(handle)]


def read_failures(path: Path, limit: int | None = 10) -> list[dict[str, Any]]:
    """The most frequent failures (``_failures.csv``): method, name, occurrences and error message."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [
            {
                "method": row["Method"],
                "name": row["Name"],
                "occurrences": int(row["Occurrences"]),
                "error": row["Error"],
            }
            for row in csv.DictReader(handle)
        ]
    return sorted(rows, key=lambda row: -int(row["occurrences"]))[:limit]


# The locustfile records a refusal (429/503 with Retry-After) under the request's name plus this suffix.
REFUSED_SUFFIX = " (refused)"
# How a client timeout reads in locust's failures (FastHttpUser: the socket read timed out).
TIMEOUT_MARK = "timed out"


def outcomes(endpoints: Sequence[EndpointStats], failures: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Refusals, timeouts and served requests, each counted apart from the others.

    ``refused``: requests admission control refused (they are not failures: the client was told when to
    retry), in total and per endpoint; ``timeouts``: failures where the client gave up waiting;
    ``served``: requests that got the expected answer; ``served_rps``: those per second.
    """
    refused = {
        f"{e.method} {e.name.removesuffix(REFUSED_SUFFIX)}": e.requests
        for e in endpoints
        if e.name.endswith(REFUSED_SUFFIX)
    }
    total = sum(e.requests for e in endpoints)
    failed = sum(e.failures for e in endpoints)
    refused_total = sum(refused.values())
    rps = sum(e.rps for e in endpoints)
    served = total - failed - refused_total
    return {
        "requests": total,
        "served": served,
        "served_rps": round(rps * served / total, 2) if total else 0.0,
        "refused": refused_total,
        "refused_rate": refused_total / total if total else 0.0,
        "refused_by_endpoint": refused,
        "failed": failed,
        "timeouts": sum(int(f["occurrences"]) for f in failures if TIMEOUT_MARK in f["error"]),
        "max_ms": max((e.max_ms or 0.0 for e in endpoints), default=0.0),
    }


# -- cache hit rate from /metrics -----------------------------------------------------------------------------

EventCounts = dict[tuple[str, str, str], float]


def cache_events(text: str, *, required: bool = True) -> EventCounts:
    """``vcci_cache_events_total`` samples of a Prometheus text exposition, by (tier, resource, event).

    ValueError when the text does not parse, or, if ``required``, has no such sample. A server that has
    not counted a cache event yet exposes none, so the scrape before a run may legitimately have none.
    """
    from prometheus_client.parser import text_string_to_metric_families

    counts: EventCounts = defaultdict(float)
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != CACHE_METRIC:
                continue
            found = True
            labels = sample.labels
            counts[(labels.get("tier", ""), labels.get("resource", ""), labels.get("event", ""))] += sample.value
    if required and not found:
        raise ValueError(f"no {CACHE_METRIC} samples")
    return dict(counts)


@dataclass
class HitRate:
    """Cache lookups during the run: L1 hits, L2 hits (L1 misses that Redis answered), L1 misses."""

    l1_hits: float = 0.0
    l2_hits: float = 0.0
    l1_misses: float = 0.0

    @property
    def lookups(self) -> float:
        return self.l1_hits + self.l1_misses

    @property
    def rate(self) -> float | None:
        """(L1 hits + L2 hits) / lookups: the share answered without the database; None without lookups."""
        return (self.l1_hits + self.l2_hits) / self.lookups if self.lookups else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "hit_rate": self.rate,
            "l1_hits": self.l1_hits,
            "l2_hits": self.l2_hits,
            "l1_misses": self.l1_misses,
            "db_computes": self.l1_misses - self.l2_hits,
        }


@dataclass
class CacheReport:
    """The run's cache hit rate, or why it is unavailable."""

    available: bool
    reason: str = ""
    overall: HitRate = field(default_factory=HitRate)
    per_resource: dict[str, HitRate] = field(default_factory=dict)
    counter_resets: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.overall.rate if self.available else None

    def as_dict(self) -> dict[str, Any]:
        if not self.available:
            return {"status": "unavailable", "reason": self.reason, "hit_rate": None}
        return {
            "status": "ok",
            "source": f"/metrics {CACHE_METRIC}, after - before the locust run",
            "definition": "(l1 hit + l2 hit) / (l1 hit + l1 miss)",
            **self.overall.as_dict(),
            "per_resource": {name: rate.as_dict() for name, rate in sorted(self.per_resource.items())},
            "counter_resets": self.counter_resets,
        }


def hit_rate(before: EventCounts, after: EventCounts) -> CacheReport:
    """The hit rate of the traffic between two scrapes, overall and per resource.

    A counter lower after than before was reset (a restarted server without multiprocess totals): its
    after-value is taken as the delta, and the series is listed in ``counter_resets``.
    """
    report = CacheReport(available=True)
    for key in sorted(set(before) | set(after)):
        tier, resource, event = key
        if tier not in ("l1", "l2") or event not in ("hit", "miss"):
            continue
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        if delta < 0:
            report.counter_resets.append(f"{tier}/{resource}/{event}")
            delta = after.get(key, 0.0)
        rate = report.per_resource.setdefault(resource, HitRate())
        for target in (rate, report.overall):
            if tier == "l1" and event == "hit":
                target.l1_hits += delta
            elif tier == "l1":
                target.l1_misses += delta
            elif event == "hit":
                target.l2_hits += delta
    report.per_resource = {name: rate for name, rate in report.per_resource.items() if rate.lookups}
    return report


def cache_report(before: str | None, after: str | None, unavailable: str = "") -> CacheReport:
    """The hit rate from two scrapes (the exposition texts), or an unavailable report saying why."""
    if before is None or after is None:
        return CacheReport(available=False, reason=unavailable or "/metrics was not scraped")
    try:
        return hit_rate(cache_events(before, required=False), cache_events(after))
    except ValueError as exc:
        return CacheReport(available=False, reason=f"/metrics has no usable cache counters: {exc}")


# -- thresholds -----------------------------------------------------------------------------------------------


@dataclass
class Thresholds:
    max_error_rate: float | None = 0.0
    min_cache_hit_rate: float | None = DEFAULT_MIN_CACHE_HIT_RATE
    max_p95_ms: float | None = None
    require_metrics: bool = True


@dataclass
class Check:
    """One threshold's verdict: ``ok`` True/False, or None when it was skipped (with why)."""

    name: str
    ok: bool | None
    detail: str


def error_rate(aggregate: EndpointStats, exceptions: int) -> float:
    """(failed requests + locustfile exceptions) / requests; 1.0 when nothing was requested at all."""
    if not aggregate.requests:
        return 1.0
    return (aggregate.failures + exceptions) / aggregate.requests


def check_thresholds(
    aggregate: EndpointStats, exceptions: int, cache: CacheReport, thresholds: Thresholds
) -> list[Check]:
    """Every threshold's verdict, in a fixed order."""
    checks: list[Check] = []
    rate = error_rate(aggregate, exceptions)
    errors = f"{aggregate.failures} failed of {aggregate.requests:,} requests, {exceptions} exceptions"
    if thresholds.max_error_rate is None:
        checks.append(Check("error rate", None, f"{_pct(rate)} ({errors}); not checked"))
    elif not aggregate.requests:
        checks.append(Check("error rate", False, "no request was made"))
    else:
        ok = rate <= thresholds.max_error_rate
        checks.append(
            Check("error rate", ok, f"{_pct(rate)} {'<=' if ok else '>'} {_pct(thresholds.max_error_rate)} ({errors})")
        )

    hit = cache.rate
    if thresholds.min_cache_hit_rate is None:
        detail = "not checked" if hit is None else f"{_pct(hit)}; not checked"
        checks.append(Check("cache hit rate", None, detail))
    elif not cache.available:
        verdict = False if thresholds.require_metrics else None
        suffix = "" if thresholds.require_metrics else " (not required: --no-require-metrics)"
        checks.append(Check("cache hit rate", verdict, f"unavailable: {cache.reason}{suffix}"))
    elif hit is None:
        checks.append(Check("cache hit rate", False, "no cache lookups were counted during the run"))
    else:
        ok = hit >= thresholds.min_cache_hit_rate
        checks.append(
            Check("cache hit rate", ok, f"{_pct(hit)} {'>=' if ok else '<'} {_pct(thresholds.min_cache_hit_rate)}")
        )

    if thresholds.max_p95_ms is not None:
        p95 = aggregate.p95_ms
        if p95 is None:
            checks.append(Check("p95", False, "no response times were recorded"))
        else:
            ok = p95 <= thresholds.max_p95_ms
            checks.append(Check("p95", ok, f"{p95:,.0f} ms {'<=' if ok else '>'} {thresholds.max_p95_ms:,.0f} ms"))
    return checks


def broken(checks: Sequence[Check]) -> list[str]:
    """``"<name>: <detail>"`` of every broken threshold."""
    return [f"{check.name}: {check.detail}" for check in checks if check.ok is False]


def _pct(value: float) -> str:
    return f"{value * 100:.2f} %"


# -- CPU of the server, the load generator and the services ----------------------------------------------------


@dataclass
class CpuSample:
    """CPU seconds used so far: the server's process tree, the load generator, PostgreSQL, Redis, and the whole
    machine (busy and total, over all cores)."""

    at: float
    server: float
    load_generator: float
    # Of ``server``: the bulk pool's processes (vcci/gunicorn.conf.py starts it; 0 without one).
    bulk_pool: float
    postgres: dict[int, float]
    redis: dict[int, float]
    machine_busy: float
    machine_total: float


def _tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and each of its descendants, by pid (none when ``pid`` is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    used: dict[int, float] = {}
    for process in processes:
        with suppress(psutil.Error):
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
    return used


def _bulk_pool_pids(pid: int) -> set[int]:
    """The bulk pool's processes among ``pid``'s descendants: those started with ``VCCI_SERVER_ROLE=bulk``."""
    import psutil

    found: set[int] = set()
    with suppress(psutil.Error):
        for process in psutil.Process(pid).children(recursive=True):
            with suppress(psutil.Error):
                if process.environ().get("VCCI_SERVER_ROLE") == "bulk":
                    found.add(process.pid)
    return found


def _named_cpu(name: str) -> dict[int, float]:
    """CPU seconds of each running process called ``name``, by pid."""
    import psutil

    used: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info.get("cpu_times")
        if process.info.get("name") == name and times is not None:
            used[process.pid] = times.user + times.system
    return used


def _used_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the processes alive at ``after`` used since ``before`` (a process started in between: all of its own).
    One that exited in between is not seen; PostgreSQL's backends live as long as the server's pooled connections."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class TreeWatch:
    """The CPU a process and all its descendants used while watched, read every ``interval`` seconds.

    A child that exits between two reads loses at most one interval; reading at the end only would lose all
    of it (locust's worker processes exit with the run, before their parent's CPU can be read).
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        import threading

        self.pid, self.interval = pid, interval
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"cpu-watch-{pid}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.seen.update(_tree_cpu(self.pid))

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def stop(self) -> float:
        """Stop watching; the CPU seconds used by the tree (each process's last reading)."""
        self._read()
        self._stop.set()
        self._thread.join(timeout=5)
        return sum(self.seen.values())


def cpu_sample(server_pid: int, load_generator: float = 0.0) -> CpuSample:
    """A snapshot; the difference of two is what each part used in between (``cpu_report``).
    ``load_generator``: the CPU seconds the load generator has used so far (a ``TreeWatch``'s)."""
    import psutil

    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    total = sum(machine)
    server = _tree_cpu(server_pid)
    bulk = _bulk_pool_pids(server_pid)
    return CpuSample(
        at=time.monotonic(),
        server=sum(server.values()),
        load_generator=load_generator,
        bulk_pool=sum(seconds for pid, seconds in server.items() if pid in bulk),
        postgres=_named_cpu("postgres"),
        redis=_named_cpu("redis-server"),
        machine_busy=total - idle,
        machine_total=total,
    )


def cpu_report(before: CpuSample, after: CpuSample) -> dict[str, Any]:
    """Average cores each part kept busy between the samples (1.0 = one core all the time).

    ``load_generator`` is the CPU of locust and its worker processes (``TreeWatch``; nothing else is started
    during the measured run). PostgreSQL's and Redis's are their
    processes' on this machine, whoever they served.
    """
    import psutil

    seconds = max(after.at - before.at, 1e-9)
    cores = psutil.cpu_count() or 1

    def per_second(value: float) -> float:
        return round(value / seconds, 3)

    machine_span = max(after.machine_total - before.machine_total, 1e-9)
    return {
        "seconds": round(seconds, 1),
        "machine_cores": cores,
        "server": per_second(after.server - before.server),
        "bulk_pool": per_second(after.bulk_pool - before.bulk_pool),
        "load_generator": per_second(after.load_generator - before.load_generator),
        "postgres": per_second(_used_between(before.postgres, after.postgres)),
        "redis": per_second(_used_between(before.redis, after.redis)),
        "machine_busy": round(cores * (after.machine_busy - before.machine_busy) / machine_span, 3),
    }


# -- event loop lag: the server's workers and the load generator's processes -----------------------------------


def lag_summary(bounds_ms: Sequence[float], counts: Sequence[float], max_ms: float | None = None) -> dict[str, Any]:
    """Measurements counted per range (``counts[i]``: at most ``bounds_ms[i]`` and above the previous bound; one more
    count for above the last): how many, the bound the median and the 99th percentile fall under (None: above the
    last bound), the share over 100 ms, and the worst when it is known. Precondition: 100 is one of the bounds (both
    the server's buckets and the locustfile's ranges have it)."""
    ticks = sum(counts)

    def under(quantile: float) -> float | None:
        seen = 0.0
        for bound, count in zip(bounds_ms, counts, strict=False):
            seen += count
            if seen >= quantile * ticks:
                return bound
        return None

    over = sum(count for i, count in enumerate(counts) if i >= len(bounds_ms) or bounds_ms[i] > 100)
    return {
        "ticks": int(ticks),
        "p50_ms": under(0.5) if ticks else None,
        "p99_ms": under(0.99) if ticks else None,
        "over_100ms": over / ticks if ticks else None,
        "max_ms": max_ms,
        "last_bound_ms": bounds_ms[-1] if bounds_ms else None,
    }


def server_loop_lag(before: str | None, after: str | None) -> dict[str, dict[str, Any]]:
    """``vcci_event_loop_lag_seconds`` between two scrapes, by role (``main``: the workers, ``bulk``: the bulk pool);
    empty when a scrape is missing or has none."""
    if before is None or after is None:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    def cumulative(text: str) -> dict[str, dict[float, float]]:
        found: dict[str, dict[float, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LOOP_LAG_METRIC}_bucket":
                    found[sample.labels.get("role", "")][float(sample.labels["le"])] = sample.value
        return found

    earlier, later = cumulative(before), cumulative(after)
    report = {}
    for role, buckets in sorted(later.items()):
        bounds = sorted(buckets)
        totals = [buckets[le] - earlier.get(role, {}).get(le, 0.0) for le in bounds]
        counts = [total - previous for total, previous in zip(totals, [0.0, *totals[:-1]], strict=True)]
        finite = [le * 1000 for le in bounds if le != float("inf")]
        if sum(counts):
            report[role] = lag_summary(finite, counts)
    return report


def load_generator_loop_lag(directory: Path) -> dict[str, Any] | None:
    """The locust processes' own measurements (``locustfile.LoopLag``'s files) merged; None when none was written."""
    bounds: list[float] | None = None
    counts: list[float] = []
    worst = 0.0
    files = sorted(directory.glob("locust-*.json")) if directory.is_dir() else []
    for path in files:
        document = json.loads(path.read_text(encoding="utf-8"))
        if bounds is None:
            bounds, counts = list(document["bounds_ms"]), [0.0] * len(document["counts"])
        elif list(document["bounds_ms"]) != bounds:
            raise RunError(f"{path}: its ranges differ from the other locust processes'")
        counts = [total + count for total, count in zip(counts, document["counts"], strict=True)]
        worst = max(worst, float(document["max_ms"]))
    if bounds is None:
        return None
    return {**lag_summary(bounds, counts, worst), "processes": len(files)}


def lag_bound(lag: dict[str, Any], value: float | None) -> str:
    """A percentile of ``lag_summary`` as the bucket it falls under: ``<= 25``, or ``> 5,000`` above the last."""
    return f"<= {value:,g}" if value is not None else f"> {lag['last_bound_ms']:,g}"


def _lag_text(lag: dict[str, Any]) -> str:
    if not lag["ticks"]:
        return "no measurement"
    text = f"p50 {lag_bound(lag, lag['p50_ms'])} / p99 {lag_bound(lag, lag['p99_ms'])} ms"
    if lag.get("max_ms") is not None:
        text += f", worst {ms_number(lag['max_ms'])} ms"
    return text + f", {_pct(lag['over_100ms'])} over 100 ms"


# -- summary --------------------------------------------------------------------------------------------------


def endpoint_dict(stats: EndpointStats) -> dict[str, Any]:
    return {
        "method": stats.method,
        "name": stats.name,
        "requests": stats.requests,
        "failures": stats.failures,
        "failure_rate": stats.failure_rate,
        "p50_ms": stats.p50_ms,
        "p95_ms": stats.p95_ms,
        "p99_ms": stats.p99_ms,
        "avg_ms": stats.avg_ms,
        "max_ms": stats.max_ms,
        "rps": stats.rps,
    }


def build_summary(
    *,
    outcomes: dict[str, Any],
    endpoints: list[EndpointStats],
    aggregate: EndpointStats,
    exceptions: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    cache: CacheReport,
    checks: list[Check],
    run: dict[str, Any],
    machine: dict[str, str],
    files: dict[str, str],
) -> dict[str, Any]:
    """The ``summary.json`` document."""
    exception_count = sum(item["count"] for item in exceptions)
    return {
        "run": run,
        "endpoints": [endpoint_dict(stats) for stats in endpoints],
        "aggregated": {
            **endpoint_dict(aggregate),
            "exceptions": exception_count,
            "error_rate": error_rate(aggregate, exception_count),
        },
        "outcomes": outcomes,
        "cache": cache.as_dict(),
        "thresholds": [asdict(check) for check in checks],
        "broken": broken(checks),
        "passed": not broken(checks),
        "top_failures": failures,
        "exceptions": exceptions,
        "machine": machine,
        "files": files,
    }


def ms_number(value: float | None) -> str:
    """Milliseconds as a whole number, without a unit (the column or the text after it names it)."""
    return "—" if value is None else f"{value:,.0f}"


def render_table(summary: dict[str, Any]) -> str:
    """The summary as plain text: one line per endpoint, the totals, the cache hit rate, the thresholds."""
    rows = [(e["method"], e["name"], e) for e in summary["endpoints"]]
    rows.append(("", "all requests", summary["aggregated"]))
    width = max(len(f"{method} {name}".strip()) for method, name, _ in rows)
    columns = f"{'requests':>8}  {'fail':>5}  {'p50 ms':>7}  {'p95 ms':>7}  {'p99 ms':>7}  {'req/s':>7}"
    header = f"{'endpoint':<{width}}  {columns}"
    lines = [header, "-" * len(header)]
    for index, (method, name, e) in enumerate(rows):
        if index == len(rows) - 1:
            lines.append("-" * len(header))
        lines.append(
            f"{f'{method} {name}'.strip():<{width}}  {e['requests']:>8,}  {e['failures']:>5,}  "
            f"{ms_number(e['p50_ms']):>7}  {ms_number(e['p95_ms']):>7}  {ms_number(e['p99_ms']):>7}  {e['rps']:>7,.1f}"
        )
    aggregated = summary["aggregated"]
    lines.append(
        f"error rate {_pct(aggregated['error_rate'])} ({aggregated['failures']} failed requests, "
        f"{aggregated['exceptions']} exceptions)"
    )
    counted = summary["outcomes"]
    lines.append(
        f"refused {counted['refused']:,} ({_pct(counted['refused_rate'])}, 503/429 with Retry-After), timeouts "
        f"{counted['timeouts']:,}, longest {ms_number(counted['max_ms'])} ms, served {counted['served']:,} "
        f"({counted['served_rps']:,.1f}/s)"
    )
    cpu = summary["run"].get("cpu")
    if cpu:
        lines.append(
            f"CPU (cores of {cpu['machine_cores']}): server {cpu['server']:.2f} (bulk pool "
            f"{cpu.get('bulk_pool', 0.0):.2f}), load generator "
            f"{cpu['load_generator']:.2f} ({summary['run']['load_generator_processes']} process(es)), PostgreSQL "
            f"{cpu['postgres']:.2f}, Redis {cpu['redis']:.2f}; machine busy {cpu['machine_busy']:.2f}"
        )
    lag = summary["run"].get("event_loop_lag")
    if lag:
        parts = [
            f"{label} {_lag_text(lag['server'][role])}"
            for role, label in (("main", "server workers"), ("bulk", "bulk pool"))
            if role in lag["server"]
        ]
        if lag["load_generator"]:
            parts.append(f"load generator {_lag_text(lag['load_generator'])}")
        lines.append("event loop lag (how late a ready greenlet ran): " + ("; ".join(parts) or "not measured"))
    cache = summary["cache"]
    if cache["status"] == "ok" and cache["hit_rate"] is not None:
        per = ", ".join(
            f"{name} {_pct(r['hit_rate'])}" for name, r in cache["per_resource"].items() if r["hit_rate"] is not None
        )
        lines.append(
            f"cache hit rate {_pct(cache['hit_rate'])} (L1 hits {cache['l1_hits']:,.0f}, L2 hits "
            f"{cache['l2_hits']:,.0f}, L1 misses {cache['l1_misses']:,.0f}); per resource: {per}"
        )
    else:
        lines.append(f"cache hit rate unavailable: {cache.get('reason') or 'no lookups counted'}")
    for check in summary["thresholds"]:
        verdict = {True: "ok", False: "BROKEN", None: "skipped"}[check["ok"]]
        lines.append(f"threshold {check['name']}: {verdict} - {check['detail']}")
    return "\n".join(lines)


def machine_description(slugs: Sequence[str]) -> dict[str, str]:
    """``bench.measure.machine_description`` (CPU, cores, RAM, OS, Python, PostgreSQL, row counts) for the orgs.

    Reads the database through Django in this process; without it (no settings, database down) the
    description says so and lists what it can without a database.
    """
    try:
        import django
        from django.apps import apps

        set_up_here = not apps.ready
        if set_up_here:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
            django.setup()
        from django.db import connections

        from emissions.models import ActivityRecord, Emission

        try:
            counts: dict[str, int] = {}
            for slug in slugs:
                counts[f"organization '{slug}' activities"] = ActivityRecord.objects.filter(
                    organization__slug=slug
                ).count()
                counts[f"organization '{slug}' emissions"] = Emission.objects.filter(organization__slug=slug).count()
            return measure.machine_description(counts)
        finally:
            if set_up_here:  # a caller with Django of its own (a test) keeps its connections
                connections.close_all()
    except Exception as exc:
        return {
            "CPU": platform.processor() or platform.machine() or "unknown",
            "Cores": str(os.cpu_count() or "unknown"),
            "OS": f"{platform.system()} {platform.release()}",
            "Python": platform.python_version(),
            "Database": f"unknown ({type(exc).__name__}: {exc})",
        }


# -- processes ------------------------------------------------------------------------------------------------


_STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line, with the seconds since the run started."""
    print(f"==> [{time.monotonic() - _STARTED:5.1f} s] {message}", flush=True)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child, plus ``extra``.

    ``LOCUST_SKIP_MONKEY_PATCH`` is dropped: the test suite sets it to import the locustfile without gevent's
    patching, and a locust run without it would block on every socket.
    """
    env = {key: value for key, value in os.environ.items() if key != "LOCUST_SKIP_MONKEY_PATCH"}
    env.update(extra or {})
    return env


def manage(*args: str, capture: bool = False, env: dict[str, str] | None = None) -> str:
    """Run ``manage.py <args>`` from the project root; its output (captured or shown); RunError if it fails."""
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    result = subprocess.run(command, cwd=ROOT, env=env or child_env(), text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or "")).strip()
        raise RunError(
            f"manage.py {' '.join(args)} failed (exit {result.returncode})" + (f":\n{output}" if output else "")
        )
    return result.stdout or ""


def token_from(output: str) -> str:
    """The token ``create_org_user`` printed (``API token: <key>``); RunError when there is none."""
    match = TOKEN_LINE.search(output)
    if match is None:
        raise RunError(f"create_org_user printed no 'API token:' line:\n{output.strip()}")
    return match.group(1)


def prepare_orgs(slugs: Sequence[str], *, activities: int, seed: bool) -> list[str]:
    """Seed each organization when it has no activities yet and return one API token per organization."""
    found: list[str] = []
    for index, slug in enumerate(slugs):
        if seed:
            say(f"seed_demo --org {slug} --activities {activities:,} --if-empty")
            name = f"Load test {slug.rsplit('-', 1)[-1].upper()}"
            # A different RNG seed per organization, so the tenants' data differ as real tenants' do.
            manage(
                "seed_demo", "--org", slug, "--org-name", name, "--activities", str(activities),
                "--seed", str(42 + index), "--if-empty",
            )  # fmt: skip
        output = manage("create_org_user", "--org", slug, "--username", f"{slug}-client", capture=True)
        found.append(token_from(output))
    return found


def port_in_use(bind: str) -> bool:
    """Whether something already accepts connections at ``bind`` (then this run would test it, not ours)."""
    host, _, port = base_url(bind).removeprefix("http://").rpartition(":")
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host.strip("[]"), int(port))) == 0


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 with the error as body when there was no HTTP answer."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc)


def metrics_headers() -> dict[str, str]:
    """``Authorization: Bearer $METRICS_TOKEN`` when set (needed only when not scraping from 127.0.0.1)."""
    token = os.environ.get("METRICS_TOKEN", "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def scrape_metrics(url: str) -> tuple[str | None, str]:
    """(exposition text, "") or (None, why it is unavailable)."""
    status, body = http_get(f"{url}/metrics", metrics_headers(), timeout=10.0)
    if status == 200:
        return body, ""
    if status == 0:
        return None, f"GET /metrics failed: {body}"
    return None, f"GET /metrics answered {status}"


class Process:
    """A child in its own process group (so it and its own children are stopped together), logging to a file."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._handle: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float) -> None:
        """SIGTERM to the process group, then SIGKILL if it is still there after ``timeout`` seconds."""
        try:
            if self.running():
                with suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGTERM)
                if self.wait(timeout) is None:
                    say(f"{self.name} did not stop within {timeout:g} s: SIGKILL")
                    with suppress(ProcessLookupError):
                        os.killpg(self.popen.pid, signal.SIGKILL)
                    self.popen.wait()
            # Workers or greenlet helpers may outlive a master that exited on its own: sweep the group.
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        finally:
            self._handle.close()

    def tail(self, lines: int = 30) -> str:
        self._handle.flush()
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_server(options: argparse.Namespace, out: Path) -> Process:
    """gunicorn as ``make serve`` runs it (``SERVER_SETTINGS``), on ``--bind``, with the ``GUNICORN_*`` options."""
    extra = {"GUNICORN_BIND": options.bind, "DJANGO_SETTINGS_MODULE": SERVER_SETTINGS}
    # Hundreds of simulated users share one token per organization: the per-token and per-organization limits
    # (README, "Limits") would refuse most of them. The environment may still set them (setdefault).
    for variable in ("THROTTLE_RATE_USER", "THROTTLE_RATE_ORG", "THROTTLE_RATE_BULK"):
        extra[variable] = os.environ.get(variable, "off")
    for option, variable in (
        ("workers", "GUNICORN_WORKERS"),
        ("worker_class", "GUNICORN_WORKER_CLASS"),
        ("worker_connections", "GUNICORN_WORKER_CONNECTIONS"),
    ):
        value = getattr(options, option)
        if value is not None:
            extra[variable] = str(value)
    if options.trace:
        extra[TRACE_DIR_ENV] = str((out / TRACE_DIR).resolve())
    # --no-control-socket: gunicorn's control socket path is one per user, shared with any other server running
    # (a `make run` beside the load test); the load test's server must not take it over.
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--no-control-socket", "vcci.wsgi"]
    return Process("gunicorn", command, out / "gunicorn.log", child_env(extra))


def wait_until_ready(server: Process, url: str, timeout: float) -> list[str]:
    """Poll ``/healthz`` (process up) then ``/readyz`` (DB and Redis reachable) until 200; notes for the report.

    A 404 means the server predates those endpoints: it answered, so it is up (noted). RunError when the
    server exits or does not become ready within ``timeout`` seconds.
    """
    notes: list[str] = []
    deadline = time.monotonic() + timeout
    for path in ("/healthz", "/readyz"):
        last = ""
        while True:
            if not server.running():
                raise RunError(
                    f"gunicorn exited (status {server.popen.returncode}) before it was ready:\n{server.tail()}"
                )
            status, body = http_get(f"{url}{path}", timeout=2.0)
            if status == 200:
                break
            if status == 404:
                notes.append(f"{path} answered 404 (not served by this version); taken as up")
                break
            last = f"{status}: {body[:200]}" if status else body
            if time.monotonic() > deadline:
                raise RunError(f"{url}{path} did not answer 200 within {timeout:g} s (last: {last}):\n{server.tail()}")
            time.sleep(0.25)
    return notes


def build_catalogue(url: str, tokens: list[str], path: Path, max_factors: int | None = None) -> str:
    """``python locustfile.py --catalogue``: the payload catalogue, read from the server before the measured run.

    Its factor reads and probe calculations (about 1,500 factor/unit combinations) would otherwise be part of
    the run's statistics and cache counters, and they are set-up, not traffic. Returns the line it printed.
    """
    command = [sys.executable, str(LOCUSTFILE), "--catalogue", str(path), "--host", url]
    if max_factors:
        command += ["--max-factors", str(max_factors)]
    result = subprocess.run(
        command, cwd=ROOT, env=child_env({"VCCI_TOKENS": ",".join(tokens)}), capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RunError(f"building the payload catalogue failed:\n{(result.stdout + result.stderr).strip()}")
    return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""


def run_locust(
    options: argparse.Namespace,
    url: str,
    tokens: list[str],
    out: Path,
    catalogue: Path,
    server_pid: int,
    cpu: dict[str, float] | None = None,
) -> int:
    """Run locust headless to completion (killed after the run time plus a grace period); its exit status.

    With ``--profile``, the server's workers are sampled once every user has started (``bench.profile``).
    ``cpu["seconds"]`` is set to the CPU locust and its worker processes used.
    """
    lag_dir = out / LOOP_LAG_DIR
    lag_dir.mkdir(exist_ok=True)
    for stale in lag_dir.glob("locust-*.json"):
        stale.unlink()
    env = {"VCCI_TOKENS": ",".join(tokens), "VCCI_CATALOGUE": str(catalogue), "VCCI_LOOP_LAG_DIR": str(lag_dir)}
    if options.wait_scale is not None:
        env["VCCI_WAIT_SCALE"] = f"{options.wait_scale:g}"
    if options.trace:
        env["VCCI_TRACE_DIR"] = str((out / TRACE_DIR).resolve())
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(options.users), "--spawn-rate", f"{options.spawn_rate:g}", "--run-time", options.duration,
        "--host", url, "--csv", str(out / CSV_PREFIX), "--html", str(out / "report.html"),
        "--only-summary", "--stop-timeout", str(STOP_TIMEOUT),
    ]  # fmt: skip
    if options.processes and options.processes > 1:
        command += ["--processes", str(options.processes)]
    locust = Process("locust", command, out / "locust.log", child_env(env))
    watch = TreeWatch(locust.popen.pid)
    profiler = None
    try:
        if options.profile:
            # Once the last user has started (plus locust's own start-up), while the run still has the time.
            delay = min(
                options.users / options.spawn_rate + 10, max(parse_duration(options.duration) - options.profile, 0)
            )
            if locust.wait(delay) is None:
                say(f"profiling the workers for {options.profile} s (py-spy)")
                try:
                    profiler = profile.start(server_pid, options.profile, out)
                except RuntimeError as exc:
                    raise RunError(str(exc)) from exc
        status = locust.wait(parse_duration(options.duration) + STOP_TIMEOUT + LOCUST_GRACE)
        if status is None:
            raise RunError(f"locust did not finish in time and was stopped:\n{locust.tail()}")
        return status
    finally:
        used = watch.stop()
        if cpu is not None:
            cpu["seconds"] = used
        locust.stop(10.0)
        if profiler is not None:
            files = profiler.wait(options.profile + 30)
            (out / "profile.md").write_text(profile.render(files, options.profile), encoding="utf-8")


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt for the duration, so ``finally`` blocks stop what was started."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def reproduce(options: argparse.Namespace) -> str:
    """The make command line that repeats this run (no machine paths, no credentials)."""
    parts = [
        "make",
        "loadtest",
        f"LOAD_USERS={options.users}",
        f"LOAD_SPAWN_RATE={options.spawn_rate:g}",
        f"LOAD_DURATION={options.duration}",
    ]
    if options.wait_scale is not None and options.wait_scale != 1:
        parts.append(f"LOAD_WAIT_SCALE={options.wait_scale:g}")
    extra = []
    if options.processes and options.processes > 1:
        extra += ["--processes", str(options.processes)]
    if options.trace:
        extra.append("--trace")
    if extra:
        parts.append(f"LOAD_ARGS={' '.join(extra)}")
    if options.orgs != DEFAULT_ORGS:
        parts.append(f"LOAD_ORGS={options.orgs}")
    if options.activities != DEFAULT_ACTIVITIES:
        parts.append(f"LOAD_ACTIVITIES={options.activities}")
    for option, variable in (
        ("workers", "GUNICORN_WORKERS"),
        ("worker_class", "GUNICORN_WORKER_CLASS"),
        ("worker_connections", "GUNICORN_WORKER_CONNECTIONS"),
    ):
        value = getattr(options, option) or os.environ.get(variable)
        if value:
            parts.append(f"{variable}={value}")
    return " ".join(shlex.quote(part) for part in parts)


def trace_report(options: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The run's request trace (``--trace``) joined and summarized (``bench.trace``), written to ``TRACE_REPORT``."""
    try:
        records = trace.read(out / TRACE_DIR)
        figures = trace.summarize(records, ramp_seconds=options.users / options.spawn_rate)
    except trace.TraceError as exc:
        raise RunError(f"request trace: {exc}") from exc
    (out / TRACE_REPORT).write_text(trace.render(figures, reproduce(options)), encoding="utf-8")
    steady = figures["groups"]["steady: all requests"]
    share = steady["before_share"]
    before, inside = trace.ms(steady["before"], "p50", "p95", "p99"), trace.ms(steady["in_app"], "p50", "p95", "p99")
    say(
        f"request trace ({out / TRACE_REPORT}): steady state, before the application p50/p95/p99 {before} ms, in it "
        f"{inside} ms ({'-' if share is None else f'{share * 100:.0f} %'} of locust's time before it)"
    )
    return figures


def run(options: argparse.Namespace) -> int:
    """One load test as the module docstring describes; the exit status."""
    check_options(options)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [
        *out.glob(f"{CSV_PREFIX}_*.csv"),
        *out.glob("metrics_*.txt"),
        *out.glob("pyspy-*.txt"),
        out / "profile.md",
        out / "report.html",
        out / "summary.json",
        out / TRACE_REPORT,
        *(out / TRACE_DIR).glob("*.tsv"),
    ]:
        stale.unlink(missing_ok=True)  # a failed run must not leave the previous run's reports looking current
    if options.trace:
        (out / TRACE_DIR).mkdir(exist_ok=True)
    url = base_url(options.bind)
    slugs = org_slugs(options.org_prefix, options.orgs)
    thresholds = Thresholds(
        max_error_rate=options.max_error_rate,
        min_cache_hit_rate=options.min_cache_hit_rate,
        max_p95_ms=options.max_p95_ms,
        require_metrics=options.require_metrics,
    )

    tokens = prepare_orgs(slugs, activities=options.activities, seed=options.seed)
    if options.collectstatic == "always" or (
        options.collectstatic == "auto" and not (ROOT / STATIC_MANIFEST).is_file()
    ):
        # As `make serve`; the API needs no static files, and collecting takes half a minute, so only once.
        say("collectstatic")
        manage("collectstatic", "--no-input", "-v0")
    if options.warm:
        host = url.removeprefix("http://")
        say(f"warm_cache for {', '.join(slugs)} (Host {host})")
        manage("warm_cache", *[arg for slug in slugs for arg in ("--org", slug)], "--host", host, "--no-progress")

    if port_in_use(options.bind):
        raise RunError(f"Something already listens on {options.bind}: stop it or choose another --bind.")
    say(f"gunicorn on {options.bind} (log: {out / 'gunicorn.log'})")
    started = dt.datetime.now(dt.UTC)
    server = start_server(options, out)
    try:
        notes = wait_until_ready(server, url, options.ready_timeout)
        say("payload catalogue: factors and suppliers from the API, each factor/unit probed once")
        catalogue = out / "catalogue.json"
        print(build_catalogue(url, tokens, catalogue, options.max_factors), flush=True)
        before, reason = scrape_metrics(url)
        say(
            f"locust: {options.users} users, spawn rate {options.spawn_rate:g}/s, {options.duration}, "
            f"{len(tokens)} organizations (log: {out / 'locust.log'})"
        )
        cpu_before = cpu_sample(server.popen.pid)
        generator: dict[str, float] = {}
        locust_status = run_locust(options, url, tokens, out, catalogue, server.popen.pid, cpu=generator)
        cpu = cpu_report(cpu_before, cpu_sample(server.popen.pid, load_generator=generator.get("seconds", 0.0)))
        after, after_reason = scrape_metrics(url) if before is not None else (None, reason)
    finally:
        say("stopping gunicorn")
        server.stop(SERVER_STOP_TIMEOUT)

    # Locust exits 1 when any request failed (the thresholds judge that); anything else is a broken run.
    if locust_status not in (0, 1):
        raise RunError(f"locust exited with status {locust_status}; see {out / 'locust.log'}.")
    endpoints, aggregate = read_stats(out / f"{CSV_PREFIX}_stats.csv")
    exceptions = read_exceptions(out / f"{CSV_PREFIX}_exceptions.csv")
    # Kept beside the report: the hit rate can be recomputed, and other counters read, from them.
    for label, text in (("before", before), ("after", after)):
        if text is not None:
            (out / f"metrics_{label}.txt").write_text(text, encoding="utf-8")
    cache = cache_report(before, after, after_reason or reason)
    checks = check_thresholds(aggregate, sum(e["count"] for e in exceptions), cache, thresholds)
    run_info = {
        "started_at": started.isoformat(timespec="seconds"),
        "users": options.users,
        "spawn_rate": options.spawn_rate,
        "duration": options.duration,
        "duration_s": parse_duration(options.duration),
        "wait_scale": options.wait_scale if options.wait_scale is not None else 1.0,
        "host": url,
        "organizations": slugs,
        "activities_seeded_per_org": options.activities if options.seed else None,
        "cache_warmed": options.warm,
        "max_factors": options.max_factors,
        "gunicorn": {
            "workers": options.workers or os.environ.get("GUNICORN_WORKERS") or "config default",
            "worker_class": options.worker_class or os.environ.get("GUNICORN_WORKER_CLASS") or "config default",
            "worker_connections": options.worker_connections
            or os.environ.get("GUNICORN_WORKER_CONNECTIONS")
            or "config default",
        },
        "load_generator_processes": options.processes or 1,
        "cpu": cpu,
        "event_loop_lag": {
            "server": server_loop_lag(before, after),
            "load_generator": load_generator_loop_lag(out / LOOP_LAG_DIR),
        },
        "locust_exit_status": locust_status,
        "notes": notes,
        "reproduce": reproduce(options),
    }
    files = {
        "html": "report.html",
        "stats_csv": f"{CSV_PREFIX}_stats.csv",
        "failures_csv": f"{CSV_PREFIX}_failures.csv",
        "exceptions_csv": f"{CSV_PREFIX}_exceptions.csv",
        "history_csv": f"{CSV_PREFIX}_stats_history.csv",
        "gunicorn_log": "gunicorn.log",
        "locust_log": "locust.log",
        "metrics_before": "metrics_before.txt",
        "metrics_after": "metrics_after.txt",
        "catalogue": "catalogue.json",
    }
    if options.trace:
        run_info["trace"] = trace_report(options, out)
        files["trace"] = TRACE_REPORT
    summary = build_summary(
        outcomes=outcomes(endpoints, read_failures(out / f"{CSV_PREFIX}_failures.csv", limit=None)),
        endpoints=endpoints,
        aggregate=aggregate,
        exceptions=exceptions,
        failures=read_failures(out / f"{CSV_PREFIX}_failures.csv"),
        cache=cache,
        checks=checks,
        run=run_info,
        machine=machine_description(slugs),
        files=files,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(render_table(summary))
    for failure in summary["top_failures"][:5]:
        print(f"failure x{failure['occurrences']}: {failure['method']} {failure['name']}: {failure['error'][:300]}")
    for exception in exceptions[:5]:
        print(f"exception x{exception['count']}: {exception['message'][:300]}")
    say(f"wrote {out / 'summary.json'}, {out / 'report.html'} and {out / CSV_PREFIX}_*.csv")
    problems = broken(checks)
    if problems:
        print("Broken thresholds:\n" + "\n".join(f"  - {problem}" for problem in problems), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        with terminate_on_sigterm():
            return run(options)
    except RunError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loadtest: interrupted; everything it started was stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
