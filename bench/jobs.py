"""The jobs benchmark (``make bench-jobs``): recalculation and import jobs on N stored emissions, and workers killed.

``python -m bench.jobs --activities 1000000 --out docs/benchmarks/jobs.md`` runs, against the configured database
and Redis, each phase printed as it runs:

1. seed organization ``jobs-bench`` with ``seed_demo`` (COPY), timed: the seeding rate;
2. a new version of each factor dataset the seeded emissions use, every ``co2e_per_unit`` x 1.05 (every emission
   changes: the worst case), copied with ``INSERT ... SELECT``;
3. one recalculation job per dataset on a Celery worker of 1 process (original -> new versions), then of 2
   processes (back): rows/s, the second process's speed-up, the time as a ratio of seeding as many rows;
4. the seeded activities exported as an import CSV, imported into an organization with the same suppliers through
   ``POST /api/v1/imports/`` (gunicorn and a worker of 2 processes) and into another with ``import_activities``;
5. the same recalculation and the same API import again, with the worker's pool processes SIGKILLed once a chunk
   runs: totals, row counts and audit-log entries compared with the undisturbed runs.

The report goes to ``--out`` (markdown) and the raw figures to ``<--results>/summary.json``. Exit status 1 when a
run with a kill differs from the undisturbed one, 2 when the run itself fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil

from bench import loadtest
from bench.loadtest import ROOT, Process, RunError, child_env, manage, say, token_from

DEFAULT_ACTIVITIES = 1_000_000
DEFAULT_OUT = "docs/benchmarks/jobs.md"
DEFAULT_RESULTS = "loadtest-results/jobs"
DEFAULT_BIND = "127.0.0.1:8767"
ORG = "jobs-bench"
# The organizations the CSV is imported into: through the API, with the command, through the API with a kill.
API_ORG, CLI_ORG, KILL_ORG = f"{ORG}-api", f"{ORG}-cli", f"{ORG}-kill"
BENCH_VERSION_SUFFIX = "-bench"
FACTOR_SCALE = "1.05"
SEEDING_GOAL_RATIO = 2.0
JOB_TIMEOUT = 6 * 3600.0
POLL_SECONDS = 0.2
UPLOAD_BLOCK = 1 << 20


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.jobs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--activities", type=int, default=DEFAULT_ACTIVITIES, help="Activities (emissions) seeded")
    parser.add_argument("--out", default=DEFAULT_OUT, help="The markdown report")
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="Folder of summary.json, the CSV and the logs")
    parser.add_argument("--bind", default=DEFAULT_BIND, help="gunicorn's address for the API import")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the organizations and the x1.05 dataset versions after the run (by default they are deleted: "
        "as the newest versions, the latter would be what every later calculation in this database resolves to)",
    )
    return parser


# -- pure helpers (tested) -----------------------------------------------------------------------------------------


def rate(rows: int, seconds: float) -> float:
    """Rows per second; 0 for no time."""
    return rows / seconds if seconds > 0 else 0.0


def seeding_ratio(*, job_seconds: float, job_rows: int, seed_seconds: float, seed_rows: int) -> float | None:
    """A job's time over the seeding time of as many rows (the seeding time scaled by rows); None without data."""
    if seed_rows <= 0 or seed_seconds <= 0 or job_rows <= 0:
        return None
    return job_seconds / (seed_seconds * job_rows / seed_rows)


def differences(undisturbed: dict[str, Any], killed: dict[str, Any]) -> list[str]:
    """The keys whose values differ between two runs' figures, as ``key: a != b`` lines (empty: equal)."""
    return [
        f"{key}: {undisturbed.get(key)!r} != {killed.get(key)!r}"
        for key in sorted(set(undisturbed) | set(killed))
        if undisturbed.get(key) != killed.get(key)
    ]


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(summary: dict[str, Any]) -> str:
    """The markdown report of a run's ``summary`` (the dict saved as summary.json)."""
    seed, recalc, imp, kills = summary["seed"], summary["recalculation"], summary["import"], summary["kills"]
    goal = recalc["goal_ratio"]
    lines = [
        "# Jobs benchmark: recalculation and import at scale, workers killed",
        "",
        f"Run {summary['date']} on {summary['machine']['cores']} CPU cores ({summary['machine']['cpu']}), "
        f"{summary['activities']:,} stored emissions (organization `{ORG}`, `seed_demo`).",
        "",
        "## Seeding (COPY)",
        "",
        "| rows | seconds | rows/s |",
        "|---:|---:|---:|",
        f"| {seed['rows']:,} | {_n(seed['seconds'], 1)} | {_n(seed['rows_per_s'])} |",
        "",
        f"## Recalculation against a new dataset version (every factor x {FACTOR_SCALE})",
        "",
        "One job per factor dataset the emissions use, submitted together; time from the first submit to the last "
        "job's end.",
        "",
        "| worker processes | transition | jobs | emissions recomputed | seconds | rows/s | time / seeding time |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in recalc["runs"]:
        lines.append(
            f"| {run['concurrency']} | {run['transition']} | {len(run['jobs'])} | {run['rows']:,} | "
            f"{_n(run['seconds'], 1)} | {_n(run['rows_per_s'])} | {_n(run['seeding_ratio'], 2)}x |"
        )
    lines += [
        "",
        f"Speed-up from the second worker process: **{_n(recalc['speedup'], 2)}x**. "
        f"Time as a ratio of seeding (goal <= {goal:g}x): 1 process {_n(recalc['runs'][0]['seeding_ratio'], 2)}x, "
        f"2 processes {_n(recalc['runs'][1]['seeding_ratio'], 2)}x: "
        + ("**met**." if recalc["goal_met"] else "**missed**."),
        "",
        "## Import of the same rows as a CSV",
        "",
        f"A {imp['csv_mb']:,.1f} MB file of {imp['rows']:,} rows (the columns of `import_activities`).",
        "",
        "| how | rows imported | seconds | rows/s |",
        "|---|---:|---:|---:|",
        f"| `POST /api/v1/imports/` (upload to job end, worker of 2 processes) | {imp['api']['rows']:,} | "
        f"{_n(imp['api']['seconds'], 1)} | {_n(imp['api']['rows_per_s'])} |",
        f"| `manage.py import_activities` (in one process) | {imp['command']['rows']:,} | "
        f"{_n(imp['command']['seconds'], 1)} | {_n(imp['command']['rows_per_s'])} |",
        "",
        f"The API job's rate is {_n(imp['api_to_command'], 2)}x the command's.",
        "",
        "## Workers killed (SIGKILL of every pool process while a chunk runs)",
        "",
        "| job | processes killed | most starts of a chunk | killed run ended | compared with the undisturbed run |",
        "|---|---:|---:|---|---|",
    ]
    for name, kill in kills.items():
        verdict = "equal" if not kill["differences"] else "**not equal**: " + "; ".join(kill["differences"])
        lines.append(f"| {name} | {kill['killed']} | {kill['attempts']} | {kill['state']} | {verdict} |")
    for name, kill in kills.items():
        lines += ["", f"Figures of the {name} (undisturbed / killed):", ""]
        lines += ["| figure | undisturbed | killed |", "|---|---|---|"]
        for key in sorted(kill["undisturbed"]):
            lines.append(f"| {key} | {kill['undisturbed'][key]} | {kill['killed_run'].get(key)} |")
    lines += [
        "",
        "## What the figures mean",
        "",
        f"A recalculation recomputes every stored emission of a source from its activity at "
        f"{_n(recalc['runs'][0]['rows_per_s'])} rows/s on one worker process and {_n(recalc['runs'][1]['rows_per_s'])} "
        f"on two ({_n(recalc['speedup'], 2)}x on {summary['machine']['cores']} cores, which the database shares), "
        f"{_n(recalc['runs'][1]['seeding_ratio'], 2)}x the time of writing the same rows with COPY. An import runs "
        f"at {_n(imp['api']['rows_per_s'])} rows/s through the API. A worker killed mid-chunk loses only its "
        "uncommitted chunk, which runs again: "
        + (
            "the killed runs ended with the same totals, rows and audit entries as the undisturbed ones."
            if summary["kills_equal"]
            else "**a killed run differed from the undisturbed one** (see above)."
        ),
        "",
        "## Reproduce",
        "",
        "```sh",
        summary["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


# -- database helpers (Django, set up in main) ---------------------------------------------------------------------


def _sql(query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def _table(model: Any) -> str:
    return str(model._meta.db_table)


def _columns(model: Any) -> list[str]:
    return [field.column for field in model._meta.concrete_fields if not field.primary_key]


def orgs_drop(prefix: str) -> None:
    """Delete the organizations ``prefix`` and ``prefix-*`` of an earlier run (their restatements, jobs, activities,
    suppliers), set-based where rows may be millions, then the bench dataset versions."""
    from django.contrib.auth import get_user_model

    from emissions.cache import catalogue_changed
    from emissions.models import (
        EmissionFactor,
        FactorDataset,
        Job,
        Organization,
        Restatement,
        RestatementLine,
    )
    from emissions.services.bulk import STAGING_TABLES, activities_delete_for_org

    for organization in Organization.objects.filter(slug__regex=rf"^{prefix}(-.*)?$"):
        say(f"delete the earlier run's organization {organization.slug}")
        jobs = f"SELECT id FROM {_table(Job)} WHERE organization_id = %s"
        _sql(f"DELETE FROM {_table(RestatementLine)} WHERE restatement_id IN ({jobs})", [organization.pk])
        _sql(f"DELETE FROM {_table(Restatement)} WHERE organization_id = %s", [organization.pk])
        for staged in STAGING_TABLES.values():
            _sql(f"DELETE FROM {staged} WHERE job_id IN ({jobs})", [organization.pk])
        activities_delete_for_org(organization=organization)
        # The run's API users (org_with_token) would otherwise outlive their organization, and be refused next time.
        get_user_model().objects.filter(username=f"{organization.slug}-client").delete()
        organization.delete()
    bench = FactorDataset.objects.filter(organization=None, version__endswith=BENCH_VERSION_SUFFIX)
    ids = list(bench.values_list("pk", flat=True))
    if ids:
        _sql(f"DELETE FROM {_table(EmissionFactor)} WHERE dataset_id = ANY(%s)", [ids])
        bench.delete()
        catalogue_changed()


def datasets_used(org_id: int) -> list[int]:
    """The public factor datasets the organization's emissions use."""
    from emissions.models import Emission, EmissionFactor

    rows = _sql(
        f"SELECT DISTINCT f.dataset_id FROM {_table(Emission)} e JOIN {_table(EmissionFactor)} f "
        "ON f.id = e.factor_id WHERE e.organization_id = %s ORDER BY 1",
        [org_id],
    )
    return [row[0] for row in rows]


def dataset_scaled_copy(dataset_id: int) -> int:
    """A new version (``<version>-bench``) of a public dataset, each factor's co2e_per_unit x FACTOR_SCALE."""
    from emissions.models import EmissionFactor, FactorDataset

    columns = _columns(FactorDataset)
    values = [
        {"version": f"version || '{BENCH_VERSION_SUFFIX}'", "imported_at": "now()"}.get(column, column)
        for column in columns
    ]
    [(new_id,)] = _sql(
        f"INSERT INTO {_table(FactorDataset)} ({', '.join(columns)}) SELECT {', '.join(values)} "
        f"FROM {_table(FactorDataset)} WHERE id = %s RETURNING id",
        [dataset_id],
    )
    columns = _columns(EmissionFactor)
    values = [
        {"dataset_id": "%s", "co2e_per_unit": f"co2e_per_unit * {FACTOR_SCALE}"}.get(column, column)
        for column in columns
    ]
    _sql(
        f"INSERT INTO {_table(EmissionFactor)} ({', '.join(columns)}) SELECT {', '.join(values)} "
        f"FROM {_table(EmissionFactor)} WHERE dataset_id = %s",
        [new_id, dataset_id],
    )
    return int(new_id)


def suppliers_copy(source_org: int, target_org: int) -> None:
    """The source organization's suppliers, the same external ids, into the target organization."""
    from emissions.models import Supplier

    columns = _columns(Supplier)
    values = ["%s" if column == "organization_id" else column for column in columns]
    _sql(
        f"INSERT INTO {_table(Supplier)} ({', '.join(columns)}) SELECT {', '.join(values)} "
        f"FROM {_table(Supplier)} WHERE organization_id = %s",
        [target_org, source_org],
    )


def activities_csv(org_id: int, path: Path) -> int:
    """The organization's activities as an import CSV (``emissions.imports.COLUMNS``), by COPY; bytes written."""
    from django.db import connection

    from emissions.imports import COLUMNS, SUPPLIER_COLUMN
    from emissions.models import ActivityRecord, Supplier

    select = ", ".join("s.external_id" if column == SUPPLIER_COLUMN else f"a.{column}" for column in COLUMNS)
    query = (
        f"COPY (SELECT {select} FROM {_table(ActivityRecord)} a LEFT JOIN {_table(Supplier)} s "
        f"ON s.id = a.supplier_id WHERE a.organization_id = {int(org_id)} ORDER BY a.id) TO STDOUT WITH (FORMAT csv)"
    )
    written = 0
    with path.open("wb") as out, connection.cursor() as cursor:
        written += out.write((",".join(COLUMNS) + "\n").encode())
        with cursor.cursor.copy(query) as copy:
            for block in copy:
                written += out.write(block)
    return written


def org_figures(org_id: int) -> dict[str, Any]:
    """Activities, emissions and their kg CO2e total."""
    from emissions.models import ActivityRecord, Emission

    [(activities,)] = _sql(f"SELECT count(*) FROM {_table(ActivityRecord)} WHERE organization_id = %s", [org_id])
    [(emissions, total)] = _sql(
        f"SELECT count(*), coalesce(sum(co2e_kg), 0) FROM {_table(Emission)} WHERE organization_id = %s", [org_id]
    )
    return {"activities": activities, "emissions": emissions, "co2e_kg": str(total)}


def audit_entries(job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Audit-log entries per job, per ``table action``."""
    from emissions.models import AuditEvent

    found: dict[int, dict[str, int]] = {job_id: {} for job_id in job_ids}
    rows = _sql(
        f"SELECT job_id, table_name, action, count(*) FROM {_table(AuditEvent)} WHERE job_id = ANY(%s) "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        [list(job_ids)],
    )
    for job_id, table, action, count in rows:
        found[job_id][f"{table} {action}"] = count
    return found


def wait_jobs(job_ids: Sequence[int], timeout: float = JOB_TIMEOUT) -> list[Any]:
    """The jobs once all have finished (any final state)."""
    from emissions.models import Job

    final = {Job.State.SUCCEEDED, Job.State.FAILED, Job.State.CANCELLED}
    deadline = time.monotonic() + timeout
    while True:
        jobs = list(Job.objects.filter(pk__in=job_ids).order_by("pk"))
        if all(job.state in final for job in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise RunError(f"jobs {list(job_ids)} did not finish in {timeout:g} s")
        time.sleep(POLL_SECONDS)


def max_attempts(job_ids: Sequence[int]) -> int:
    """The most times one chunk of the jobs was started (2 or more: a chunk ran again after the kill)."""
    from django.db.models import Max

    from emissions.models import JobChunk

    return int(JobChunk.objects.filter(job_id__in=job_ids).aggregate(most=Max("attempts"))["most"] or 0)


def chunk_running(job_ids: Callable[[], Sequence[int]]) -> Callable[[], bool]:
    """Whether a chunk of the jobs has started and not committed (the moment to kill)."""
    from emissions.models import JobChunk

    return lambda: JobChunk.objects.filter(job_id__in=job_ids(), state="pending", attempts__gte=1).exists()


# -- processes -----------------------------------------------------------------------------------------------------


class Worker:
    """``celery -A vcci worker --pool prefork`` as ``make worker`` runs it, on this run's queue."""

    def __init__(self, concurrency: int, results: Path) -> None:
        self.concurrency = concurrency
        command = [
            sys.executable, "-m", "celery", "-A", "vcci", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        log = results / f"worker-{concurrency}-{int(time.time())}.log"
        self.process = Process(f"worker ({concurrency})", command, log, child_env({"DB_POOL": "false"}))
        deadline = time.monotonic() + loadtest.READY_TIMEOUT
        while " ready." not in log.read_text(errors="replace"):
            if not self.process.running() or time.monotonic() > deadline:
                self.process.stop(5)
                raise RunError("The Celery worker did not start:\n" + self.process.tail())
            time.sleep(0.1)

    def kill_pool(self, predicate: Callable[[], bool], timeout: float = 600.0) -> int:
        """Once ``predicate()`` holds, SIGKILL every pool process; how many were killed."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RunError("No chunk started to kill a worker in:\n" + self.process.tail())
            time.sleep(0.02)
        children = psutil.Process(self.process.popen.pid).children()
        for child in children:
            child.kill()
        return len(children)

    def stop(self) -> None:
        self.process.stop(60)


@contextmanager
def worker(concurrency: int, results: Path) -> Iterator[Worker]:
    say(f"celery worker, {concurrency} process(es), queue {os.environ.get('CELERY_QUEUE', 'vcci')}")
    started = Worker(concurrency, results)
    try:
        yield started
    finally:
        started.stop()


# -- phases --------------------------------------------------------------------------------------------------------


def recalculate(org: Any, targets: Sequence[int]) -> tuple[list[int], float]:
    """Submit one recalculation per target dataset; (job ids, wall time from submit to submit... finish)."""
    from emissions.services.recalculations import recalculation_submit

    started = time.time()
    ids = [recalculation_submit(organization=org, requested_by=None, target_dataset_id=pk).pk for pk in targets]
    return ids, started


def recalculation_figures(job_ids: Sequence[int], started: float) -> dict[str, Any]:
    from emissions.models import Restatement

    jobs = wait_jobs(job_ids)
    failed = [f"job {job.pk} {job.state}: {job.errors[:3]}" for job in jobs if job.state != "succeeded"]
    if failed:
        raise RunError("recalculation failed: " + "; ".join(failed))
    seconds = max(job.finished_at.timestamp() for job in jobs) - started
    restatements = Restatement.objects.filter(pk__in=job_ids)
    rows = sum(r.emissions_recalculated for r in restatements)
    return {"jobs": list(job_ids), "rows": rows, "seconds": seconds, "rows_per_s": rate(rows, seconds)}


def restatement_figures(org_id: int, job_ids: Sequence[int]) -> dict[str, Any]:
    """The organization's emissions and total after the jobs; per target dataset the change of the total and of each
    category (after - before: the jobs' finishes run one at a time in either order, so "before" depends on which
    came first), the emissions changed, the restatement lines, and the audit entries of the job."""
    from emissions.models import Restatement, RestatementLine

    audit = audit_entries(job_ids)
    figures: dict[str, Any] = {f"organization {key}": value for key, value in org_figures(org_id).items()}
    for restatement in Restatement.objects.filter(pk__in=job_ids).select_related("target_dataset"):
        key = f"{restatement.target_dataset.source}:{restatement.target_dataset.version}"
        figures[f"{key} change kg"] = str(restatement.total_after_kg - restatement.total_before_kg)
        per_category = {
            category: str(Decimal(values["after"]) - Decimal(values["before"]))
            for category, values in sorted(restatement.per_category.items(), key=lambda item: int(item[0]))
            if values["after"] != values["before"]
        }
        figures[f"{key} change kg per category"] = json.dumps(per_category)
        figures[f"{key} emissions changed"] = restatement.emissions_changed
        figures[f"{key} lines"] = RestatementLine.objects.filter(restatement_id=restatement.pk).count()
        figures[f"{key} audit entries"] = json.dumps(audit[restatement.pk], sort_keys=True)
    return figures


def upload(url: str, token: str, path: Path, org_slug: str) -> int:
    """POST the CSV to /api/v1/imports/, streamed from disk; the job id."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=3600, blocksize=UPLOAD_BLOCK)
    headers = {
        "Authorization": f"Token {token}",
        "Content-Type": "text/csv",
        "Content-Length": str(path.stat().st_size),
        "Accept": "application/json",
    }
    with path.open("rb") as body:
        connection.request("POST", "/api/v1/imports/", body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
    connection.close()
    if response.status != 202:
        raise RunError(f"POST /api/v1/imports/ for {org_slug} answered {response.status}: {text[:500]}")
    return int(json.loads(text)["id"])


def import_figures(org_id: int, job_id: int | None) -> dict[str, Any]:
    figures = org_figures(org_id)
    if job_id is not None:
        figures["audit entries"] = json.dumps(audit_entries([job_id])[job_id], sort_keys=True)
    return figures


def org_with_token(slug: str) -> tuple[Any, str]:
    from emissions.models import Organization

    token = token_from(manage("create_org_user", "--org", slug, "--username", f"{slug}-client", capture=True))
    return Organization.objects.get(slug=slug), token


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1)}


def reproduce(options: argparse.Namespace) -> str:
    parts = ["make", "bench-jobs", f"JOBS_ACTIVITIES={options.activities}"]
    return " ".join(shlex.quote(part) for part in parts)


def run(options: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from emissions.cache import catalogue_changed
    from emissions.models import FactorDataset, Organization

    results = Path(options.results)
    results.mkdir(parents=True, exist_ok=True)
    n = options.activities
    summary: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "activities": n,
        "command": reproduce(options),
        "queue": settings.CELERY_TASK_DEFAULT_QUEUE,
    }
    orgs_drop(ORG)

    say(f"phase 1: seed_demo --org {ORG} --activities {n:,}")
    started = time.perf_counter()
    manage("seed_demo", "--org", ORG, "--activities", str(n))
    seconds = time.perf_counter() - started
    org = Organization.objects.get(slug=ORG)
    seeded = org_figures(org.pk)
    summary["seed"] = {
        "rows": seeded["emissions"],
        "seconds": seconds,
        "rows_per_s": rate(seeded["emissions"], seconds),
    }
    say(f"seeded {seeded['emissions']:,} emissions in {seconds:.1f} s")

    say(f"phase 2: new dataset versions, every factor x {FACTOR_SCALE}")
    originals = datasets_used(org.pk)
    modified = [dataset_scaled_copy(pk) for pk in originals]
    catalogue_changed()  # SQL writes send no signals: the cached factor resolution must see the new versions
    names = {ds.pk: f"{ds.source}:{ds.version}" for ds in FactorDataset.objects.filter(pk__in=originals + modified)}
    summary["datasets"] = [{"original": names[a], "bench": names[b]} for a, b in zip(originals, modified, strict=True)]

    runs = []
    for concurrency, targets, transition in ((1, modified, "original -> x1.05"), (2, originals, "x1.05 -> original")):
        with worker(concurrency, results):
            say(f"phase 3: recalculation, {concurrency} worker process(es), {transition}")
            ids, submitted = recalculate(org, targets)
            figures = recalculation_figures(ids, submitted)
            if concurrency == 1:  # the transition the run with a kill repeats
                undisturbed_recalc = restatement_figures(org.pk, ids)
        figures.update(concurrency=concurrency, transition=transition)
        figures["seeding_ratio"] = seeding_ratio(
            job_seconds=figures["seconds"],
            job_rows=figures["rows"],
            seed_seconds=seconds,
            seed_rows=seeded["emissions"],
        )
        say(f"{figures['rows']:,} emissions in {figures['seconds']:.1f} s: {figures['rows_per_s']:,.0f} rows/s")
        runs.append(figures)
    speedup = runs[1]["rows_per_s"] / runs[0]["rows_per_s"] if runs[0]["rows_per_s"] else None
    ratios = [run["seeding_ratio"] for run in runs]
    summary["recalculation"] = {
        "runs": runs,
        "speedup": speedup,
        "goal_ratio": SEEDING_GOAL_RATIO,
        "goal_met": all(ratio is not None and ratio <= SEEDING_GOAL_RATIO for ratio in ratios),
    }

    say("phase 4: the activities as an import CSV")
    csv_path = results / "activities.csv"
    size = activities_csv(org.pk, csv_path)
    import_orgs = {slug: org_with_token(slug) for slug in (API_ORG, CLI_ORG, KILL_ORG)}
    for target, _ in import_orgs.values():
        suppliers_copy(org.pk, target.pk)
    connection.close()  # no idle connection held across the long waits below
    if not (ROOT / loadtest.STATIC_MANIFEST).is_file():
        manage("collectstatic", "--no-input", "-v0")
    if loadtest.port_in_use(options.bind):
        raise RunError(f"something already listens on {options.bind}")
    server_options = SimpleNamespace(bind=options.bind, workers=None, worker_class=None, worker_connections=None)
    server = loadtest.start_server(server_options, results)  # type: ignore[arg-type]
    url = loadtest.base_url(options.bind)
    kills: dict[str, Any] = {}
    try:
        loadtest.wait_until_ready(server, url, loadtest.READY_TIMEOUT)
        with worker(2, results) as pool:
            api_org, api_token = import_orgs[API_ORG]
            say(f"phase 4a: POST /api/v1/imports/ ({size / 1e6:,.1f} MB) into {API_ORG}")
            started = time.time()
            api_job = upload(url, api_token, csv_path, API_ORG)
            [job] = wait_jobs([api_job])
            if job.state != "succeeded":
                raise RunError(f"import job {api_job} {job.state}: {job.errors[:5]}")
            api_seconds = job.finished_at.timestamp() - started
            api = import_figures(api_org.pk, api_job)
            say(f"{api['activities']:,} rows in {api_seconds:.1f} s")

            say("phase 5a: recalculation (original -> x1.05), pool processes SIGKILLed once a chunk runs")
            submitted_ids: list[int] = []
            killer = chunk_running(lambda: submitted_ids)
            ids, _ = recalculate(org, modified)
            submitted_ids.extend(ids)
            killed = pool.kill_pool(killer)
            jobs = wait_jobs(ids)
            kills["recalculation"] = {
                "killed": killed,
                "attempts": max_attempts(ids),
                "state": ", ".join(sorted({job.state for job in jobs})),
                "undisturbed": undisturbed_recalc,
                "killed_run": restatement_figures(org.pk, ids),
            }

            kill_org, kill_token = import_orgs[KILL_ORG]
            say(f"phase 5b: POST /api/v1/imports/ into {KILL_ORG}, pool processes SIGKILLed once a chunk runs")
            kill_job = upload(url, kill_token, csv_path, KILL_ORG)
            killed = pool.kill_pool(chunk_running(lambda: [kill_job]))
            [job] = wait_jobs([kill_job])
            kills["import"] = {
                "killed": killed,
                "attempts": max_attempts([kill_job]),
                "state": job.state,
                "undisturbed": api,
                "killed_run": import_figures(kill_org.pk, kill_job),
            }
    finally:
        server.stop(loadtest.SERVER_STOP_TIMEOUT)

    say(f"phase 4b: manage.py import_activities into {CLI_ORG}")
    started = time.perf_counter()
    manage("import_activities", str(csv_path), "--org", CLI_ORG, "--no-progress")
    cli_seconds = time.perf_counter() - started
    cli = org_figures(import_orgs[CLI_ORG][0].pk)
    say(f"{cli['activities']:,} rows in {cli_seconds:.1f} s")
    api_rate, cli_rate = rate(api["activities"], api_seconds), rate(cli["activities"], cli_seconds)
    summary["import"] = {
        "rows": seeded["activities"],
        "csv_mb": size / 1e6,
        "api": {"rows": api["activities"], "seconds": api_seconds, "rows_per_s": api_rate, "job": api_job},
        "command": {"rows": cli["activities"], "seconds": cli_seconds, "rows_per_s": cli_rate},
        "api_to_command": api_rate / cli_rate if cli_rate else None,
    }
    for kill in kills.values():
        kill["differences"] = differences(kill["undisturbed"], kill["killed_run"])
        if kill["state"] != "succeeded":
            kill["differences"].insert(0, f"the killed run ended {kill['state']}")
    summary["kills"] = kills
    summary["kills_equal"] = not any(kill["differences"] for kill in kills.values())
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    options = parser().parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vcci.settings_dev")
    import django

    django.setup()
    try:
        with loadtest.terminate_on_sigterm():
            try:
                summary = run(options)
            finally:
                if not options.keep:
                    orgs_drop(ORG)
    except (RunError, KeyboardInterrupt) as exc:
        say(f"failed: {exc}")
        return 2
    results = Path(options.results)
    (results / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(summary))
    say(f"wrote {out} and {results / 'summary.json'}")
    if not summary["kills_equal"]:
        say("a run with a killed worker differs from the undisturbed one")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
