"""Timing and report helpers for the benchmarks (bench.db, bench.cache): medians, query counts, rollbacks, reports.

Every benchmark row compares a naive and an optimized version of one database path on the same
data in the same run. Each side is run once to warm caches (PostgreSQL's buffers, Django's
compiled queries, the unit registry), then ``runs`` times; the median wall time is reported with
the number of SQL statements one run issued. Writes are measured inside ``rolled_back()`` so the
benchmark leaves the data as it found it; ``fingerprint()`` lets the caller prove that.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.test.utils import override_settings

try:  # The test suite runs with django-zeal; the naive paths are N+1 on purpose.
    from zeal import zeal_context as _zeal_context
    from zeal import zeal_ignore as _zeal_ignore
except ImportError:  # pragma: no cover - zeal is a test dependency
    _zeal_context = _zeal_ignore = None


# The settings the tooling runs with: production's plus the bench app, whose commands production does not install.
SETTINGS_MODULE = "vcci.settings_dev"


class BenchError(Exception):
    """A benchmark cannot run or its measurements cannot be trusted; the message says why."""


class Benchmark(Protocol):
    """What ``bench.db.DatabaseBenchmark`` and ``bench.cache.CacheBenchmark`` offer their commands."""

    markdown: str

    # Each returns its own result, which its tests read; the command only needs the report written.
    def run(self, out: Path) -> object: ...


def run_for_command(command: BaseCommand, benchmark: Benchmark, out: Path) -> None:
    """Run ``benchmark`` into ``out`` for a management command: a ``BenchError`` becomes its ``CommandError``,
    and the report and the file written go to the command's output."""
    try:
        benchmark.run(out)
    except BenchError as exc:
        raise CommandError(str(exc)) from exc
    command.stdout.write(benchmark.markdown)
    command.stdout.write(command.style.SUCCESS(f"Wrote {out}."))


def seeded_organization(slug: str, activities: int, stdout: Any) -> Any:
    """Organization ``slug``, seeded with ``activities`` activities by ``seed_demo`` when it has none (seed_demo
    creates it when missing and ends with VACUUM (ANALYZE) itself); progress goes to ``stdout``."""
    # Here, not at the top: bench.loadtest and bench.report import this module before Django is set up.
    from django.core.management import call_command

    from emissions.models import ActivityRecord, Organization

    org = Organization.objects.filter(slug=slug).first()
    if org is None or not ActivityRecord.objects.for_org(org).exists():
        stdout.write(f"Organization '{slug}' has no activities: seeding {activities:,} (seed_demo).\n")
        call_command("seed_demo", "--org", slug, "--activities", str(activities), stdout=stdout)
        org = Organization.objects.get(slug=slug)
    return org


def own_unit_of_work() -> AbstractContextManager[Any]:
    """A context that django-zeal checks on its own, as one command run: a benchmark that seeds two organizations
    runs two seeds, each loading its organization once, which is no N+1."""
    return _zeal_context() if _zeal_context is not None else nullcontext()


def n_plus_one_allowed() -> AbstractContextManager[Any]:
    """A context in which a deliberate N+1 (the naive side of a benchmark) is not reported by django-zeal."""
    return _zeal_ignore() if _zeal_ignore is not None else nullcontext()


class QueryCounter:
    """A ``connection.execute_wrapper`` that counts the statements it sees."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


# Below this many samples a 95th percentile is one of the few slowest requests, not a percentile.
P95_MIN_SAMPLES = 20


@dataclass
class Timing:
    """Wall times (seconds) of repeated requests: their median, and their 95th percentile when there are enough."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float | None:
        if len(self.samples) < P95_MIN_SAMPLES:
            return None
        return statistics.quantiles(self.samples, n=20, method="inclusive")[-1]


@dataclass
class Measurement:
    """The median wall time (seconds) of ``samples`` and the SQL statements one run issued."""

    samples: list[float]
    queries: int
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def measure(fn: Callable[[], Any], *, runs: int, warmup: bool = True) -> Measurement:
    """Run ``fn`` once to warm up (unless ``warmup`` is False), then ``runs`` times; time each run.

    Precondition: ``runs >= 1``. The query count is that of the first timed run; ``result`` is
    the last run's return value.
    """
    return measure_interleaved([fn], runs=runs, warmup=warmup)[0]


def measure_interleaved(fns: Sequence[Callable[[], Any]], *, runs: int, warmup: bool = True) -> list[Measurement]:
    """``measure`` for several functions at once, in rounds: each round runs every function once, in turn.

    For comparing functions of a few milliseconds with each other: a drift in the machine's
    state (caches, another process's load) then affects every function's samples alike,
    instead of whichever happened to be measured during it. Precondition: ``runs >= 1``.
    """
    if runs < 1:
        raise ValueError(f"runs must be at least 1; got {runs}.")
    if warmup:
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    queries = [0] * len(fns)
    results: list[Any] = [None] * len(fns)
    for i in range(runs):
        for j, fn in enumerate(fns):
            counter = QueryCounter()
            with connection.execute_wrapper(counter):
                started = time.perf_counter()
                results[j] = fn()
                samples[j].append(time.perf_counter() - started)
            if i == 0:
                queries[j] = counter.count
    return [Measurement(samples=s, queries=q, result=r) for s, q, r in zip(samples, queries, results, strict=True)]


@contextmanager
def rolled_back() -> Iterator[None]:
    """A transaction (a savepoint inside an outer one) that is always rolled back, whatever happens inside."""
    with transaction.atomic():
        try:
            yield
        finally:
            transaction.set_rollback(True)


def api_client_settings() -> override_settings:
    """Settings for an in-process API client (``APIClient``) sending thousands of requests with one token: its host
    ("testserver") allowed, and the per-user, per-organization and bulk request limits off."""
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "off", "org": "off", "bulk": "off"}
    return override_settings(
        ALLOWED_HOSTS=["testserver"], REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    )


def rolled_back_call(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` wrapped so that every call runs in its own rolled-back transaction."""

    def call() -> Any:
        with rolled_back():
            return fn()

    return call


@dataclass
class Row:
    """One line of the report: a benchmark, its two sides, and their ratio (naive / optimized)."""

    benchmark: str
    naive: Measurement | None
    optimized: Measurement
    naive_label: str = ""
    optimized_label: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.naive is None:
            return None
        return self.naive.median / max(self.optimized.median, 1e-9)


@dataclass
class Report:
    """Everything the database benchmark writes: rows, extra findings, the machine, the command, the date."""

    rows: list[Row] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    command: str = ""
    date: str = ""
    notes: list[str] = field(default_factory=list)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines: ``header``, then ``rows`` (a ``|`` in a cell escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def _side(measurement: Measurement | None, label: str) -> str:
    if measurement is None:
        return label or "—"
    text = _ms(measurement.median)
    return f"{text} ({label})" if label else text


def _queries(row: Row) -> str:
    naive = "—" if row.naive is None else f"{row.naive.queries:,}"
    return f"{naive} / {row.optimized.queries:,}"


def render_markdown(report: Report) -> str:
    """The report as Markdown: results table, findings, machine, reproduction command, notes."""
    lines = [
        "# Database benchmark: naive vs optimized",
        "",
        "Generated by `manage.py bench_db`; do not edit by hand. Each time is the median of the stated",
        "number of runs after one warm-up run; *ratio* is naive time / optimized time; *queries* is the",
        "number of SQL statements one run issued (naive / optimized). Writes ran in transactions that",
        "were rolled back, and the index drop of the summary benchmark was rolled back too: row counts",
        "and the index list were checked identical before and after the run.",
        "",
        "| benchmark | naive | optimized | ratio | queries |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:,.1f}x"
        benchmark = f"{row.benchmark}<br>{row.note}" if row.note else row.benchmark
        lines.append(
            f"| {benchmark} | {_side(row.naive, row.naive_label)} | {_side(row.optimized, row.optimized_label)} "
            f"| {ratio} | {_queries(row)} |"
        )
    if report.findings:
        lines += ["", "## What the numbers show", ""]
        lines += [f"- {finding}" for finding in report.findings]
    lines += ["", "## Machine", ""]
    lines += [f"- **{key}**: {value}" for key, value in report.machine.items()]
    lines += ["", "## Reproduce", "", "```sh", report.command, "```", ""]
    lines += [f"Run on {report.date}."]
    if report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
                    return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def machine_description(row_counts: dict[str, int]) -> dict[str, str]:
    """CPU model, cores, RAM, OS, Python, PostgreSQL version and the benchmarked row counts."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0]}"
        else:  # pragma: no cover - the benchmark needs PostgreSQL
            database = connection.vendor
    return {
        "CPU": _cpu_model(),
        "Cores": str(os.cpu_count() or "unknown"),
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Database": database,
        **{f"Rows: {name}": f"{count:,}" for name, count in row_counts.items()},
    }


def fingerprint(tables: list[str]) -> dict[str, Any]:
    """Exact row counts of ``tables`` and every index on them (name and definition), for before/after checks."""
    counts: dict[str, int] = {}
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {quote(table)}")
            counts[table] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%s) ORDER BY 1, 2", [tables]
        )
        indexes = [tuple(row) for row in cursor.fetchall()]
    return {"counts": counts, "indexes": indexes}


def scan_nodes(queryset: Any) -> str:
    """The scan nodes of ``queryset``'s plan (``EXPLAIN``, not executed), e.g. ``Index Only Scan using x``."""
    sql_text, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql_text}", params)
        raw = cursor.fetchone()[0]
    plan = raw if isinstance(raw, list) else json.loads(raw)
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if "Scan" in node.get("Node Type", ""):
            index = node.get("Index Name")
            found.append(f"{node['Node Type']}" + (f" using {index}" if index else f" on {node.get('Relation Name')}"))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return ", ".join(found) or "no scan node"
