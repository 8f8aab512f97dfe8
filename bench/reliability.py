"""``python -m bench.reliability`` (``make reliability``): faults injected under load, written to docs/reliability.md.

Everything the run breaks is its own: a PostgreSQL cluster (``initdb`` in a temporary directory, its own port) and a
Redis server started for the run and stopped after it, so the machine's services and anything else using them are
never touched. Against them it migrates, imports the factors, seeds the load test's organizations, starts gunicorn
as ``make serve`` does (``bench.loadtest.start_server``, production settings) and then runs each scenario under the
locustfile's mixed load (its default users and think times, ``make loadtest``'s defaults):

- **Redis killed** (SIGKILL) for 15 s, then started again, empty: failed requests;
- **PostgreSQL restarted** (``pg_ctl stop -m immediate``: a crash; 5 s down; started, recovering from its WAL)
  while a writer posts activity batches with ``Idempotency-Key`` headers, retrying each batch with its key until
  it is acknowledged: failed requests after PostgreSQL is back, seconds to recover, and from the database,
  acknowledged writes lost or duplicated;
- **a gunicorn worker killed** with SIGKILL: failed requests, seconds until the master has replaced it;
- **retries across a forced timeout**: batches sent with a client timeout shorter than the write, then retried
  with the same key: rows per batch in the database (must be exactly one set);
- **abuse**: random API tokens and wrong admin passwords from one address, while a legitimate client keeps
  working: what the attacker gets (401, 429, lockout) and what the client gets;
- **fuzzing**: schemathesis against the server's OpenAPI schema (``bench.fuzz``, every check) as a member of an
  organization of its own: cases run, 5xx answers, schema violations.

Failed requests are counted by locust (every request of the mixed load) and by the run's own clients (the writer, a
prober reading every 100 ms), with their times, so a failure can be placed before, during or after a fault.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from bench import fuzz, loadtest
from bench.loadtest import ROOT, Process, RunError, say

DEFAULT_OUT = "loadtest-results/reliability"
DEFAULT_DOC = "docs/reliability.md"
PG_PORT = 55432
REDIS_PORT = 56379
BIND = "127.0.0.1:8766"
ATTACKER_ADDRESS = "127.0.0.2"
# schemathesis examples per API operation and phase: a few thousand requests in all, a few minutes.
FUZZ_EXAMPLES = 25
PG_BIN = Path("/usr/lib/postgresql")
# Seconds of mixed load around each fault: before it (steady state), and after it (recovery).
LEAD_IN = 20.0
REDIS_DOWN = 15.0
# Seconds PostgreSQL stays down between its crash and its restart: long enough for requests to meet no server.
PG_DOWN = 5.0
TAIL = 30.0
WRITER_PREFIX = "rel"
# An activity every organization can calculate once the factors are imported (DESNZ 2025: UK electricity).
ACTIVITY = {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": "1", "unit": "MWh"}


# -- private services ------------------------------------------------------------------------------------------


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user when this process is root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _pg_tool(name: str) -> str:
    """The newest installed PostgreSQL's ``name`` (Debian keeps them under /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(PG_BIN.glob("*/bin"), key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0)
    if not versions:
        raise RunError(f"PostgreSQL's {name} was not found (install the PostgreSQL server package).")
    return str(versions[-1] / name)


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: trust authentication on 127.0.0.1:``port``, data in ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.log = root / "postgres.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(_as_postgres(list(args)), capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise RunError(f"{' '.join(args[:2])} failed:\n{(result.stdout + result.stderr).strip()}\n{self.tail()}")
        return result

    def tail(self) -> str:
        with suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        return ""

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_pg_tool("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N")
        # What the server must do to be worth testing: fsync on (an acknowledged write must survive a crash), room
        # for gunicorn's pools, and its socket in its own directory.
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=400"
        self.options = options

    def start(self) -> None:
        self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w", "start")

    def restart_immediate(self, down: float) -> None:
        """A crash, ``down`` seconds without a server, and a restart: no checkpoint, clients cut off, recovery
        from the WAL."""
        pg_ctl = _pg_tool("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "stop")
        time.sleep(down)
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w", "start")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_pg_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def url(self, database: str = "vcci") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"


class PrivateRedis:
    """A throwaway Redis (nothing on disk), as the machine's is configured."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.process: Process | None = None

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = Process("redis", command, self.root / "redis.log", loadtest.child_env())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if loadtest.port_in_use(f"127.0.0.1:{self.port}"):
                return
            time.sleep(0.05)
        raise RunError(f"redis-server did not start:\n{self.process.tail()}")

    def kill(self) -> None:
        if self.process is not None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.popen.pid, signal.SIGKILL)
            self.process.popen.wait()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5.0)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


# -- the run's own clients ------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One HTTP request of the run's own clients: when it started and ended, and its status (0: no answer)."""

    started: float
    ended: float
    status: int
    note: str = ""


@dataclass
class WriterReport:
    batches: int = 0
    acknowledged: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    replays: int = 0
    given_up: int = 0


class Writer(threading.Thread):
    """Posts batches of ``size`` activities, each with a new ``Idempotency-Key``, retrying a batch with the same
    key and body until it is acknowledged (201) or ``give_up_after`` seconds past ``stop()``. Each activity's
    ``external_ref`` is unique, so the database tells which were written, and how many times."""

    def __init__(self, url: str, token: str, prefix: str, *, size: int = 10, pause: float = 0.1) -> None:
        super().__init__(name=f"writer-{prefix}", daemon=True)
        self.url, self.prefix, self.size, self.pause = f"{url}/api/v1/activities/", prefix, size, pause
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", "Content-Type": "application/json"})
        self.report = WriterReport()
        self._halt = threading.Event()
        self._stopped = float("inf")
        self.give_up_after = 60.0

    def stop(self) -> None:
        self._stopped = time.time()
        self._halt.set()

    def batch(self, number: int) -> tuple[str, list[str]]:
        refs = [f"{self.prefix}-{number}-{index}" for index in range(self.size)]
        items = [
            {**ACTIVITY, "period_start": "2025-01-01", "period_end": "2025-01-31", "external_ref": ref} for ref in refs
        ]
        return json.dumps(items), refs

    def run(self) -> None:
        number = 0
        while not self._halt.is_set():
            body, refs = self.batch(number)
            number += 1
            self.report.batches += 1
            if self.send(body, str(uuid.uuid4())):
                self.report.acknowledged.extend(refs)
            else:
                self.report.given_up += 1
            self._halt.wait(self.pause)

    def send(self, body: str, key: str) -> bool:
        """Send until acknowledged; False when still unacknowledged ``give_up_after`` seconds after ``stop()``."""
        while True:
            started = time.time()
            try:
                response = self.session.post(self.url, data=body, headers={"Idempotency-Key": key}, timeout=10)
                status, note = response.status_code, ""
                if response.headers.get("Idempotent-Replayed") == "true":
                    self.report.replays += 1
            except requests.RequestException as exc:
                status, note = 0, type(exc).__name__
            self.report.attempts.append(Attempt(started, time.time(), status, note))
            if status == 201:
                return True
            if status in (400, 422):
                raise RunError(f"the writer's batch was refused ({status}): {response.text[:300]}")
            if time.time() > self._stopped + self.give_up_after:
                return False
            time.sleep(0.2)


class Prober(threading.Thread):
    """Reads the suppliers list's first page every ``interval`` seconds, noting each answer with its time."""

    def __init__(self, url: str, token: str, interval: float = 0.1) -> None:
        super().__init__(name="prober", daemon=True)
        self.url, self.interval = f"{url}/api/v1/suppliers/?limit=5", interval
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.attempts: list[Attempt] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            started = time.time()
            try:
                status, note = self.session.get(self.url, timeout=10).status_code, ""
            except requests.RequestException as exc:
                status, note = 0, type(exc).__name__
            self.attempts.append(Attempt(started, time.time(), status, note))


def failed(attempts: list[Attempt], start: float = 0.0, end: float = float("inf")) -> list[Attempt]:
    """The attempts started in [start, end) that got no 2xx."""
    return [a for a in attempts if start <= a.started < end and not 200 <= a.status < 300]


# -- locust -----------------------------------------------------------------------------------------------------


@dataclass
class LoadOutcome:
    requests: int
    failures: int
    history: list[tuple[float, int, int]]  # (unix time, total requests, total failures), cumulative, per second

    def failures_between(self, start: float, end: float) -> int:
        """Failures locust recorded between ``start`` and ``end`` (by its per-second cumulative history)."""
        before = [f for at, _, f in self.history if at <= start]
        upto = [f for at, _, f in self.history if at <= end]
        return (upto[-1] if upto else 0) - (before[-1] if before else 0)


def read_history(path: Path) -> list[tuple[float, int, int]]:
    rows: list[tuple[float, int, int]] = []
    with suppress(FileNotFoundError), path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("Name") == "Aggregated":
                rows.append((float(row["Timestamp"]), int(row["Total Request Count"]), int(row["Total Failure Count"])))
    return rows


class Context:
    """What every scenario shares: the services, the server, the tokens and the locust options."""

    def __init__(self, options: argparse.Namespace, out: Path, postgres: PrivatePostgres, redis: PrivateRedis) -> None:
        self.options, self.out, self.postgres, self.redis = options, out, postgres, redis
        self.url = loadtest.base_url(BIND)
        self.server: Process | None = None
        self.tokens: list[str] = []
        self.catalogue = out / "catalogue.json"
        self.admin_password = secrets.token_urlsafe(16)

    def load_options(self, duration: float, out: Path) -> argparse.Namespace:
        return loadtest.parser().parse_args(
            ["--users", str(self.options.users), "--duration", f"{int(duration)}s", "--bind", BIND, "--out", str(out)]
        )

    def under_load(
        self, name: str, duration: float, fault: Callable[[float], dict[str, Any]]
    ) -> tuple[LoadOutcome, dict[str, Any]]:
        """Run the mixed load for ``duration`` seconds; ``fault(started)`` runs meanwhile in this thread (it sleeps
        until its moment) and returns what it observed. Locust's outcome and the fault's."""
        out = self.out / name
        out.mkdir(parents=True, exist_ok=True)
        options = self.load_options(duration, out)
        status: dict[str, Any] = {}

        def locust() -> None:
            assert self.server is not None
            status["code"] = loadtest.run_locust(
                options, self.url, self.tokens, out, self.catalogue, self.server.popen.pid
            )

        thread = threading.Thread(target=locust, name=f"locust-{name}", daemon=True)
        started = time.time()
        thread.start()
        observed = fault(started)
        thread.join(duration + loadtest.STOP_TIMEOUT + loadtest.LOCUST_GRACE)
        if status.get("code") not in (0, 1):
            raise RunError(f"locust did not complete the {name} scenario (status {status.get('code')}); see {out}")
        _, aggregate = loadtest.read_stats(out / f"{loadtest.CSV_PREFIX}_stats.csv")
        history = read_history(out / f"{loadtest.CSV_PREFIX}_stats_history.csv")
        return LoadOutcome(aggregate.requests, aggregate.failures, history), observed


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


# -- scenarios --------------------------------------------------------------------------------------------------


def scenario_redis(ctx: Context) -> dict[str, Any]:
    prober = Prober(ctx.url, ctx.tokens[0])

    def fault(started: float) -> dict[str, Any]:
        prober.start()
        sleep_until(started + LEAD_IN)
        killed = time.time()
        say("Redis: SIGKILL")
        ctx.redis.kill()
        sleep_until(killed + REDIS_DOWN)
        say("Redis: started again (empty)")
        ctx.redis.start()
        return {"killed": killed, "back": time.time()}

    load, seen = ctx.under_load("redis", LEAD_IN + REDIS_DOWN + TAIL, fault)
    prober.stop()
    prober.join(15)
    return {
        "load": load,
        "down_s": seen["back"] - seen["killed"],
        "failed_during": load.failures_between(seen["killed"], seen["back"] + 1),
        "probe_failed": len(failed(prober.attempts)),
        "probes": len(prober.attempts),
    }


def committed_refs(ctx: Context, prefix: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(ctx.postgres.url(), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT external_ref, count(*) FROM emissions_activityrecord WHERE external_ref LIKE %s GROUP BY 1",
            [f"{prefix}-%"],
        ).fetchall()
    return {ref: count for ref, count in rows}


def write_accounting(ctx: Context, writer: Writer) -> dict[str, Any]:
    committed = committed_refs(ctx, writer.prefix)
    acknowledged = set(writer.report.acknowledged)
    return {
        "batches": writer.report.batches,
        "acknowledged_rows": len(acknowledged),
        "lost": sorted(acknowledged - committed.keys()),
        "duplicated": sorted(ref for ref, count in committed.items() if count > 1),
        "committed_unacknowledged": sorted(committed.keys() - acknowledged),
        "attempts": len(writer.report.attempts),
        "replays": writer.report.replays,
        "given_up": writer.report.given_up,
    }


def scenario_postgres(ctx: Context) -> dict[str, Any]:
    writer = Writer(ctx.url, ctx.tokens[1], f"{WRITER_PREFIX}-pg")
    prober = Prober(ctx.url, ctx.tokens[0])

    def fault(started: float) -> dict[str, Any]:
        writer.start()
        prober.start()
        sleep_until(started + LEAD_IN)
        say(f"PostgreSQL: stop -m immediate (a crash), {PG_DOWN:g} s down, start (recovery from the WAL)")
        restarted = time.time()
        ctx.postgres.restart_immediate(PG_DOWN)
        back = time.time()
        say(f"PostgreSQL: accepting connections again after {back - restarted:.1f} s")
        return {"restarted": restarted, "back": back}

    load, seen = ctx.under_load("postgres", LEAD_IN + TAIL, fault)
    writer.stop()
    prober.stop()
    writer.join(writer.give_up_after + 30)
    prober.join(15)
    back = seen["back"]
    own = writer.report.attempts + prober.attempts
    later_ok = sorted(a.ended for a in writer.report.attempts if a.started >= seen["restarted"] and a.status == 201)
    return {
        "load": load,
        "down_s": back - seen["restarted"],
        "failed_after_back": load.failures_between(back, float("inf")) + len(failed(own, back)),
        "locust_failed_after_back": load.failures_between(back, float("inf")),
        "own_failed_after_back": len(failed(own, back)),
        "own_failed_during": len(failed(own, seen["restarted"], back)),
        "recovered_s": (later_ok[0] - back) if later_ok else None,
        "writes": write_accounting(ctx, writer),
    }


def interactive_workers(master: int) -> list[int]:
    """The gunicorn master's worker pids, without the bulk pool (started with ``VCCI_SERVER_ROLE=bulk``)."""
    found = []
    for child in psutil.Process(master).children(recursive=False):
        with suppress(psutil.Error):
            if child.environ().get("VCCI_SERVER_ROLE") != "bulk":
                found.append(child.pid)
    return found


def scenario_worker(ctx: Context) -> dict[str, Any]:
    assert ctx.server is not None
    master = ctx.server.popen.pid
    prober = Prober(ctx.url, ctx.tokens[0])

    def fault(started: float) -> dict[str, Any]:
        prober.start()
        sleep_until(started + LEAD_IN)
        workers = interactive_workers(master)
        victim = workers[0]
        say(f"gunicorn: SIGKILL worker {victim} (of {len(workers)})")
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        replaced = None
        while time.time() < killed + 30:
            now = interactive_workers(master)
            if victim not in now and len(now) >= len(workers):
                replaced = time.time()
                break
            time.sleep(0.05)
        return {"killed": killed, "replaced": replaced}

    load, seen = ctx.under_load("worker", LEAD_IN + TAIL, fault)
    prober.stop()
    prober.join(15)
    replaced = seen["replaced"]
    return {
        "load": load,
        "replaced_s": None if replaced is None else replaced - seen["killed"],
        "failed_around": load.failures_between(seen["killed"] - 1, seen["killed"] + 5),
        "probe_failed": len(failed(prober.attempts)),
        "probes": len(prober.attempts),
    }


def scenario_timeouts(ctx: Context, batches: int = 20, size: int = 200) -> dict[str, Any]:
    """Each batch first sent with a 50 ms client timeout (its write takes longer), then retried with its key."""
    writer = Writer(ctx.url, ctx.tokens[1], f"{WRITER_PREFIX}-timeout", size=size)
    # No background loop here: send() retries each batch until answered, giving up 120 s after the scenario began.
    writer.give_up_after = 120.0
    writer.stop()
    timed_out = 0
    for number in range(batches):
        body, refs = writer.batch(number)
        key = str(uuid.uuid4())
        writer.report.batches += 1
        started = time.time()
        try:
            first = writer.session.post(writer.url, data=body, headers={"Idempotency-Key": key}, timeout=0.05)
            status, note = first.status_code, "answered within the forced timeout"
        except requests.Timeout:
            timed_out += 1
            status, note = 0, "forced timeout"
        writer.report.attempts.append(Attempt(started, time.time(), status, note))
        if writer.send(body, key):
            writer.report.acknowledged.extend(refs)
    accounting = write_accounting(ctx, writer)
    rows = sum(committed_refs(ctx, writer.prefix).values())
    return {"batches": batches, "size": size, "timed_out": timed_out, "rows": rows, **accounting}


class SourceAddressAdapter(requests.adapters.HTTPAdapter):
    """Connects from ``address``: on loopback every 127.0.0.0/8 address is this machine's, so an attacker and a
    legitimate client can be told apart by the server as two hosts would be."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(address))
    return session


def scenario_abuse(ctx: Context, tokens: int = 300, passwords: int = 50) -> dict[str, Any]:
    """Random tokens and wrong admin passwords from one address (127.0.0.2), a legitimate client working meanwhile
    from another (127.0.0.1); then the right admin password from each address."""
    client = Prober(ctx.url, ctx.tokens[0], interval=0.05)
    client.start()
    statuses: dict[int, int] = {}
    started = time.time()
    attacker = session_from(ATTACKER_ADDRESS)
    for _ in range(tokens):
        status = attacker.get(
            f"{ctx.url}/api/v1/emissions/", headers={"Authorization": f"Token {secrets.token_hex(20)}"}, timeout=10
        ).status_code
        statuses[status] = statuses.get(status, 0) + 1
    token_seconds = time.time() - started
    admin = session_from(ATTACKER_ADDRESS)
    login = f"{ctx.url}/admin/login/"
    logins: dict[int, int] = {}

    def attempt(password: str, admin: requests.Session = admin) -> requests.Response:
        admin.get(login, timeout=10)
        data = {"username": "reliability-admin", "password": password, "next": "/admin/"}
        return admin.post(
            login,
            data=data,
            headers={"X-CSRFToken": admin.cookies.get("csrftoken") or ""},
            timeout=10,
            allow_redirects=False,
        )

    for _ in range(passwords):
        status = attempt(secrets.token_urlsafe(12)).status_code
        logins[status] = logins.get(status, 0) + 1
    right = attempt(ctx.admin_password)
    elsewhere = session_from("127.0.0.1")
    owner = attempt(ctx.admin_password, elsewhere)
    client.stop()
    client.join(15)
    return {
        "tokens": tokens,
        "token_seconds": token_seconds,
        "token_statuses": statuses,
        "passwords": passwords,
        "password_statuses": logins,
        "right_password_after": right.status_code,
        "right_password_logged_in": right.status_code == 302 and "sessionid" in admin.cookies,
        "owner_logged_in": owner.status_code == 302 and "sessionid" in elsewhere.cookies,
        "client_requests": len(client.attempts),
        "client_failed": len(failed(client.attempts)),
    }


# -- the run ----------------------------------------------------------------------------------------------------


def prepare(ctx: Context) -> None:
    env = os.environ
    env["DATABASE_URL"], env["REDIS_URL"] = ctx.postgres.url(), ctx.redis.url()
    say("createdb, migrate, import_factors")
    subprocess.run([sys.executable, "-m", "vcci.createdb"], cwd=ROOT, env=loadtest.child_env(), check=True)
    loadtest.manage("migrate", "--no-input", "-v0")
    loadtest.manage("import_factors")
    slugs = loadtest.org_slugs("reliability", 2)
    ctx.tokens = loadtest.prepare_orgs(slugs, activities=ctx.options.activities, seed=True)
    # --password=...: one argument, since a generated password may start with "-".
    admin = ["--username", "reliability-admin", "--admin-login", f"--password={ctx.admin_password}"]
    loadtest.manage("create_org_user", "--org", slugs[0], *admin, capture=True)
    if not (ROOT / loadtest.STATIC_MANIFEST).is_file():
        loadtest.manage("collectstatic", "--no-input", "-v0")


def run(options: argparse.Namespace) -> dict[str, Any]:
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vcci-reliability-"))
    scratch.chmod(0o755)  # PostgreSQL's own user must reach its data directory inside
    postgres, redis = PrivatePostgres(scratch / "pg", options.pg_port), PrivateRedis(scratch, options.redis_port)
    ctx = Context(options, out, postgres, redis)
    results: dict[str, Any] = {"started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    try:
        say(f"private PostgreSQL on :{options.pg_port} and Redis on :{options.redis_port} (in {scratch})")
        postgres.init()
        postgres.start()
        redis.start()
        prepare(ctx)
        say(f"gunicorn on {BIND}")
        ctx.server = loadtest.start_server(ctx.load_options(60, out), out)
        loadtest.wait_until_ready(ctx.server, ctx.url, loadtest.READY_TIMEOUT)
        loadtest.build_catalogue(ctx.url, ctx.tokens, ctx.catalogue)
        for name, scenario in SCENARIOS.items():
            if options.only and name not in options.only:
                continue
            say(f"scenario: {name}")
            results[name] = scenario(ctx)
            loadtest.wait_until_ready(ctx.server, ctx.url, loadtest.READY_TIMEOUT)
    finally:
        if ctx.server is not None:
            ctx.server.stop(loadtest.SERVER_STOP_TIMEOUT)
        redis.stop()
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    results["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def scenario_fuzz(ctx: Context) -> dict[str, Any]:
    """schemathesis with every check, as the admin of an organization of its own (its writes touch nothing else)."""
    output = loadtest.manage("create_org_user", "--org", "reliability-fuzz", "--username", "fuzz-client", capture=True)
    return fuzz.run(ctx.url, loadtest.token_from(output), ctx.options.fuzz_examples)


SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "redis": scenario_redis,
    "postgres": scenario_postgres,
    "worker": scenario_worker,
    "timeouts": scenario_timeouts,
    "abuse": scenario_abuse,
    "fuzz": scenario_fuzz,
}


# -- the report -------------------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "never (within 30 s)" if value is None else f"{value:.1f} s"


def _statuses(counts: dict[int, int]) -> str:
    return ", ".join(f"{count} x {status}" for status, count in sorted(counts.items())) or "none"


def goals(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(what, figure, met) for each goal the run measured."""
    found: list[tuple[str, str, bool]] = []
    if "redis" in results:
        r = results["redis"]
        failures = r["load"].failures + r["probe_failed"]
        found.append(("Redis killed for 15 s: failed requests (goal 0)", str(failures), failures == 0))
    if "postgres" in results:
        p = results["postgres"]
        found.append(
            (
                "PostgreSQL restarted: failed requests after it is back (goal 0)",
                str(p["failed_after_back"]),
                p["failed_after_back"] == 0,
            )
        )
        writes = p["writes"]
        bad = len(writes["lost"]) + len(writes["duplicated"])
        found.append(
            (
                "PostgreSQL restarted: acknowledged writes lost or duplicated (must be 0)",
                f"{len(writes['lost'])} lost, {len(writes['duplicated'])} duplicated",
                bad == 0,
            )
        )
    if "timeouts" in results:
        t = results["timeouts"]
        exact = t["rows"] == t["batches"] * t["size"] and not t["duplicated"] and not t["lost"]
        found.append(
            (
                "Retries across a forced timeout: rows written exactly once",
                f"{t['rows']:,} rows for {t['batches'] * t['size']:,} activities",
                exact,
            )
        )
    if "abuse" in results:
        a = results["abuse"]
        stopped = a["token_statuses"].get(429, 0) > 0
        found.append(("Brute-forced API tokens stopped (429)", _statuses(a["token_statuses"]), stopped))
        found.append(
            (
                "Admin password guessing stopped (right password refused after the guesses)",
                f"right password answered {a['right_password_after']}",
                not a["right_password_logged_in"],
            )
        )
        found.append(
            (
                "The admin logs in from another address meanwhile",
                "yes" if a["owner_logged_in"] else "no",
                a["owner_logged_in"],
            )
        )
        found.append(
            (
                "The legitimate client kept working meanwhile",
                f"{a['client_failed']} of {a['client_requests']} failed",
                a["client_failed"] == 0,
            )
        )
    if "fuzz" in results:
        f = results["fuzz"]
        found.append(
            (
                "schemathesis: 5xx answers (must be 0)",
                f"{f['server_errors']} in {f['cases']:,} cases",
                f["server_errors"] == 0,
            )
        )
        found.append(
            ("schemathesis: schema violations (must be 0)", str(f["schema_violations"]), f["schema_violations"] == 0)
        )
    return found


def shown_command(line: str) -> str:
    """A command line as the report shows it: paths relative to the checkout, the temporary report file named."""
    line = line.replace(f"{ROOT}/", "")
    return re.sub(re.escape(tempfile.gettempdir()) + r"/\S+/(\S+)", r"\1", line)


def render(results: dict[str, Any], options: argparse.Namespace) -> str:
    lines = [
        "# Reliability under faults",
        "",
        f"Generated by `make reliability` (`python -m bench.reliability --users {options.users} --activities "
        f"{options.activities}`), {results['started_at']} to {results['finished_at']} UTC, on "
        f"{os.cpu_count()} cores. The run starts its own PostgreSQL cluster and Redis server, seeds two "
        f"organizations with {options.activities:,} activities each, starts gunicorn with the production settings "
        f"(`vcci/gunicorn.conf.py`), and injects each fault under the locustfile's mixed load ({options.users} users "
        "with their think times, as `make loadtest`). Failed requests are locust's (every request of the mixed "
        "load) plus the run's own clients' (a prober reading every 100 ms, a writer posting activity batches with "
        "`Idempotency-Key`), each with its time. The mixed load's simulated users share one token per organization, "
        "so its server runs as `make loadtest`'s does: the per-token, per-organization and bulk request limits off "
        "(`bench/loadtest.py`); the failed-authentication limit and the admin login lockout at their defaults.",
        "",
        "| goal | figure | met |",
        "|---|---|---|",
    ]
    lines += [f"| {what} | {figure} | {'yes' if met else '**no**'} |" for what, figure, met in goals(results)]
    if "redis" in results:
        r = results["redis"]
        lines += [
            "",
            "## Redis killed for 15 s",
            "",
            f"Redis was killed with SIGKILL {LEAD_IN:.0f} s into the run and started again, empty, "
            f"{r['down_s']:.1f} s later. Locust: {r['load'].requests:,} requests, {r['load'].failures} failed "
            f"({r['failed_during']} while Redis was down); prober: {r['probe_failed']} of {r['probes']:,} failed.",
        ]
    if "postgres" in results:
        p, w = results["postgres"], results["postgres"]["writes"]
        lines += [
            "",
            "## PostgreSQL restarted under a write load",
            "",
            f"`pg_ctl stop -m immediate` {LEAD_IN:.0f} s into the run (a crash: no checkpoint), {PG_DOWN:g} s "
            f"without a server, then `pg_ctl start` (recovery from the WAL); it accepted connections again "
            f"{p['down_s']:.1f} s after the crash. Failed requests after it was back: "
            f"{p['failed_after_back']} (locust {p['locust_failed_after_back']}, own clients "
            f"{p['own_failed_after_back']}); while it was down, own clients' failed requests: "
            f"{p['own_failed_during']}. "
            f"First acknowledged write after it was back: {_seconds(p['recovered_s'])}.",
            "",
            f"Writer: {w['batches']} batches, {w['attempts']} requests ({w['replays']} answered from an "
            f"idempotency record), {w['acknowledged_rows']:,} activities acknowledged; in the database: "
            f"{len(w['lost'])} acknowledged and missing, {len(w['duplicated'])} stored twice, "
            f"{len(w['committed_unacknowledged'])} stored but never acknowledged, {w['given_up']} batches given up.",
        ]
    if "worker" in results:
        k = results["worker"]
        lines += [
            "",
            "## A gunicorn worker killed",
            "",
            f"One interactive worker got SIGKILL {LEAD_IN:.0f} s into the run; the master had replaced it after "
            f"{_seconds(k['replaced_s'])}. Locust: {k['load'].requests:,} requests, {k['load'].failures} failed "
            f"({k['failed_around']} within 5 s of the kill: the requests the worker had in flight); prober: "
            f"{k['probe_failed']} of {k['probes']:,} failed.",
        ]
    if "timeouts" in results:
        t = results["timeouts"]
        lines += [
            "",
            "## Retried writes across a forced timeout",
            "",
            f"{t['batches']} batches of {t['size']} activities, each sent first with a 50 ms client timeout "
            f"({t['timed_out']} timed out before the answer, the server writing on), then retried with the same "
            f"`Idempotency-Key` until answered: {t['attempts']} requests, {t['replays']} answered from the "
            f"idempotency record. In the database: {t['rows']:,} rows for {t['batches'] * t['size']:,} "
            f"activities, {len(t['duplicated'])} stored twice, {len(t['lost'])} missing.",
        ]
    if "abuse" in results:
        a = results["abuse"]
        lines += [
            "",
            "## Abuse: guessed tokens and passwords",
            "",
            f"{a['tokens']} requests with random API tokens from one address ({ATTACKER_ADDRESS}) in "
            f"{a['token_seconds']:.1f} s: "
            f"{_statuses(a['token_statuses'])}. {a['passwords']} wrong admin passwords: "
            f"{_statuses(a['password_statuses'])}; then the right password: answered {a['right_password_after']} "
            f"({'logged in' if a['right_password_logged_in'] else 'not logged in'}); the same password from another "
            "address: "
            f"{'logged in' if a['owner_logged_in'] else 'not logged in'}. A legitimate client reading "
            f"every 50 ms meanwhile: {a['client_failed']} of {a['client_requests']} requests failed.",
        ]
    if "fuzz" in results:
        f = results["fuzz"]
        lines += [
            "",
            "## Fuzzing against the OpenAPI schema",
            "",
            f"schemathesis, every check, {f['operations']} operations, {f['cases']:,} test cases: "
            f"{f['server_errors']} server errors (5xx), {f['schema_violations']} schema violations.",
            "",
            f"    {shown_command(f['command'])}",
        ]
        lines += [f"- {failure}" for failure in f["failures"]]
    lines += ["", "Raw outputs (locust reports and logs per scenario): `loadtest-results/reliability/`.", ""]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=loadtest.DEFAULT_USERS, help="locust users (make loadtest's default)")
    p.add_argument("--activities", type=int, default=loadtest.DEFAULT_ACTIVITIES, help="activities per organization")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"raw outputs (default {DEFAULT_OUT})")
    p.add_argument("--doc", default=DEFAULT_DOC, help=f"the report (default {DEFAULT_DOC})")
    p.add_argument("--only", nargs="*", choices=list(SCENARIOS), help="run only these scenarios")
    p.add_argument("--fuzz-examples", type=int, default=FUZZ_EXAMPLES, help="schemathesis examples per operation")
    p.add_argument("--pg-port", type=int, default=PG_PORT)
    p.add_argument("--redis-port", type=int, default=REDIS_PORT)
    return p


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    try:
        with loadtest.terminate_on_sigterm():
            results = run(options)
    except RunError as exc:
        print(f"reliability run failed: {exc}", file=sys.stderr)
        return 2
    text = render(results, options)
    Path(options.doc).write_text(text, encoding="utf-8")
    print(text)
    missed = [what for what, _, met in goals(results) if not met]
    for what in missed:
        print(f"goal missed: {what}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
