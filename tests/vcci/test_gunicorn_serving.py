"""Real gunicorn with gevent workers (vcci/gunicorn.conf.py): metrics summed across workers, slow queries on one
worker running concurrently, a blocking psycopg refused at boot; and the configuration's serving hooks.

The servers run against this test run's database (``test_<name>``; data is committed by
``django_db(transaction=True)`` so they can see it) and Redis database, on free ports, each in its own
process group, stopped (SIGTERM, then SIGKILL) when the test ends whatever its outcome.
"""

from __future__ import annotations

import json
import logging
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

import vcci
from tests.emissions.api.payloads import activity_input, electricity_input
from tests.factories import MembershipFactory
from tests.vcci.test_settings import load_settings  # noqa: F401  (fixture)

ROOT = Path(vcci.__file__).resolve().parent.parent
CONF = ROOT / "vcci" / "gunicorn.conf.py"
BOOT_TIMEOUT = 60.0
# Small pools: the suite may share PostgreSQL's max_connections with other runs.
POOL_MAX_SIZE = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_of_this_run() -> str:
    """A URL of the database this test run uses (pytest-django's ``test_<name>``)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def get(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    metrics_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start_server(workers=2, app="vcci.wsgi", wait=True, control_socket=False, **env)``: a gunicorn on a free
    port; with ``control_socket``, its master's control socket as the configuration sets it (else none)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *, workers: int = 2, app: str = "vcci.wsgi", wait: bool = True, control_socket: bool = False, **extra_env: str
    ) -> Server:
        port = free_port()
        metrics_dir = tmp_path / f"prometheus-{port}"
        inherited = {key: value for key, value in os.environ.items() if key != "PSYCOPG_WAIT_FUNC"}
        env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "vcci.settings",
            "SECRET_KEY": "gunicorn-serving-test",
            "DEBUG": "0",
            "DATABASE_URL": database_url_of_this_run(),
            "REDIS_URL": settings.REDIS_URL,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "GUNICORN_WORKERS": str(workers),
            "GUNICORN_WORKER_CLASS": "gevent",
            "GUNICORN_WORKER_CONNECTIONS": "50",
            "DB_POOL_MAX_SIZE": str(POOL_MAX_SIZE),
            "DB_POOL_MIN_SIZE": "1",
            "CACHE_WARM_ON_BOOT": "0",
            # No bulk pool unless a test asks for one (GUNICORN_BULK_WORKERS="1"): one process less to boot.
            "GUNICORN_BULK_WORKERS": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            **extra_env,
        }
        log = tmp_path / f"gunicorn-{port}.log"
        with log.open("wb") as out:
            # No control socket unless the test is about it: one thing less to start.
            flags = [] if control_socket else ["--no-control-socket"]
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(CONF), *flags, app],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the teardown stops master and workers together
            )
        started.append(process)
        server = Server(process, f"http://127.0.0.1:{port}", log, metrics_dir)
        if wait:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                if process.poll() is not None:
                    pytest.fail(f"gunicorn exited with {process.returncode}:\n{server.log_text()}")
                try:
                    if get(f"{server.url}/healthz", timeout=2)[0] == 200:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer within {BOOT_TIMEOUT} s:\n{server.log_text()}")
                time.sleep(0.1)
        return server

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = get(f"{server.url}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def total(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """A scraped sample summed over the labels not given."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in scraped.items() if sample == name and wanted <= set(sample_labels)
    )


def per_worker(server: Server, name: str, **labels: str) -> dict[int, float]:
    """Each process's own value of a counter sample, read from its file in the multiprocess directory."""
    values: dict[int, float] = {}
    for path in sorted(server.metrics_dir.glob("counter_*.db")):
        pid = int(path.stem.split("_")[1])
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for s in metric.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    values[pid] = values.get(pid, 0.0) + s.value
    return values


# -- (a) /metrics sums every worker ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_metrics_are_summed_across_two_workers(start_server, org, electricity_factor):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    server = start_server(workers=2)
    headers = {"Authorization": f"Token {token.key}", "Content-Type": "application/json"}
    body = json.dumps(electricity_input()).encode()
    calculation = {"category": "3", "method": "activity"}

    def calculate(_: int) -> int:
        return int(get(f"{server.url}/api/v1/calculate/", body, headers)[0])

    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Concurrent requests on new connections land on both workers; keep going until each served some.
        while sent < 400:
            assert set(pool.map(calculate, range(8))) == {200}
            sent += 8
            if len(per_worker(server, "vcci_calculations_total", **calculation)) == 2:
                break
    shares = per_worker(server, "vcci_calculations_total", **calculation)
    assert len(shares) == 2 and all(n > 0 for n in shares.values()), (sent, shares)
    assert sum(shares.values()) == sent

    scraped = scrape(server)
    labels = tuple(sorted(calculation.items()))
    assert scraped[("vcci_calculations_total", labels)] == sent
    view = (("method", "POST"), ("status", "200"), ("view", "calculate"))
    assert scraped[("django_http_responses_total_by_status_view_method_total", view)] == sent
    assert scraped[("vcci_db_queries_per_request_count", (("view", "calculate"),))] == sent
    # Cache events (token authentication, factor resolution) come from both workers and add up exactly.
    for event in ("hit", "miss", "wait"):
        counted = per_worker(server, "vcci_cache_events_total", tier="l1", event=event)
        assert total(scraped, "vcci_cache_events_total", tier="l1", event=event) == sum(counted.values()), event
    # Every request looked its token up in L1 at least once (a hit, or a miss when the batch arrived cold).
    lookups = sum(total(scraped, "vcci_cache_events_total", tier="l1", event=event) for event in ("hit", "miss"))
    assert lookups >= sent
    # livesum gauges: both workers' pools together, W x P.
    assert scraped[("vcci_db_pool_max_size", ())] == 2 * POOL_MAX_SIZE
    # Both workers (each served some of the requests) accept connections in batches, not gunicorn's one at a time.
    assert server.log_text().count("Accepting up to 16 connections each time the listening socket is ready") == 2


# -- (b) two slow queries on one worker overlap -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_slow_queries_on_one_gevent_worker_run_concurrently(start_server):
    server = start_server(workers=1, app="tests.vcci.sleep_app:application")
    get(f"{server.url}/_sleep?s=0")  # the pool opens its first connection outside the measurement

    def sleep(_: int) -> dict[str, float]:
        return json.loads(get(f"{server.url}/_sleep?s=0.5")[1])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(sleep, range(2))
    total = time.perf_counter() - started
    assert first["pid"] == second["pid"], "both requests must be served by the one worker"
    # PostgreSQL's own clock: each [start, end] is one pg_sleep(0.5). Had the worker blocked in the first
    # query, the second would only have started after the first ended.
    message = f"intervals {first} {second}; both requests took {total:.3f} s in all"
    assert max(first["start"], second["start"]) < min(first["end"], second["end"]), message
    assert first["end"] - first["start"] >= 0.5 and second["end"] - second["start"] >= 0.5, message


def test_a_worker_whose_psycopg_would_block_refuses_to_boot(start_server):
    # PSYCOPG_WAIT_FUNC forces the C wait psycopg would pick if imported before gevent patched.
    server = start_server(workers=1, wait=False, PSYCOPG_WAIT_FUNC="wait_c")
    try:
        returncode = server.process.wait(timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gunicorn kept running with a blocking psycopg:\n{server.log_text()}")
    log = server.log_text()
    assert returncode == 3, log  # gunicorn's WORKER_BOOT_ERROR: the master stops
    assert "A query would block the whole gevent worker" in log and "wait_c" in log
    assert "Worker failed to boot" in log


# -- the configuration's hooks, without a server ------------------------------------------------


class StubLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, message: str, *args: Any) -> None:
        self.records.append(("info", message % args))

    def warning(self, message: str, *args: Any) -> None:
        self.records.append(("warning", message % args))


def conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for key in ("GUNICORN_WORKERS", "GUNICORN_WORKER_CLASS", "GUNICORN_WORKER_CONNECTIONS", "DB_POOL", "DB_PGBOUNCER"):
        monkeypatch.delenv(key, raising=False)
    for key in ("DB_POOL_MAX_SIZE", "DB_MAX_CONNECTIONS", "DB_RESERVED_CONNECTIONS"):
        monkeypatch.delenv(key, raising=False)
    # Set, so that monkeypatch restores them: on_starting writes both to os.environ.
    monkeypatch.setenv("BULK_POOL_SOCKET", "")
    monkeypatch.setenv("BULK_POOL_DB_CONNECTIONS", "0")
    monkeypatch.setenv("GUNICORN_BULK_WORKERS", "0")  # on_starting would start a real bulk pool
    monkeypatch.delenv("VCCI_SERVER_ROLE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runpy.run_path(str(CONF))


def server_stub(settings_: dict[str, Any]) -> Any:
    cfg = SimpleNamespace(
        bind=[settings_["bind"]],
        worker_connections=settings_["worker_connections"],
        workers=settings_["workers"],
        wsgi_app=None,
    )
    return SimpleNamespace(cfg=cfg, log=StubLog(), app=SimpleNamespace(app_uri="vcci.wsgi"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, 1000),
        ({"GUNICORN_WORKER_CONNECTIONS": "30"}, 30),
        # Not tied to the database pool: sockets are not database work (perf.admission, docs/capacity.md).
        ({"DB_POOL_MAX_SIZE": "10"}, 1000),
        ({"GUNICORN_WORKERS": "4", "DB_MAX_CONNECTIONS": "50"}, 1000),
    ],
)
def test_worker_connections_count_sockets_not_database_work(monkeypatch, env, expected):
    env = {"DATABASE_URL": "postgres://vcci@db.example:5432/vcci", **env}
    assert conf(monkeypatch, **env)["worker_connections"] == expected


def test_worker_connections_must_be_positive(monkeypatch):
    with pytest.raises(SystemExit, match="GUNICORN_WORKER_CONNECTIONS must be at least 1"):
        conf(monkeypatch, GUNICORN_WORKER_CONNECTIONS="0")


@pytest.mark.parametrize(("env", "expected"), [({}, 16), ({"GUNICORN_ACCEPT_BATCH": "4"}, 4)])
def test_workers_accept_connections_in_batches(monkeypatch, env, expected):
    assert conf(monkeypatch, **env)["accept_batch"] == expected


def test_the_accept_batch_must_be_positive(monkeypatch):
    with pytest.raises(SystemExit, match="GUNICORN_ACCEPT_BATCH must be at least 1"):
        conf(monkeypatch, GUNICORN_ACCEPT_BATCH="0")


def test_the_database_pool_is_sized_by_its_budget_whatever_the_sockets(monkeypatch, load_settings):  # noqa: F811
    computed = conf(monkeypatch, DATABASE_URL="postgres://vcci@db.example:5432/vcci")
    # The workers' settings read the value on_starting exports.
    workers_settings = load_settings(GUNICORN_WORKER_CONNECTIONS=str(computed["worker_connections"]))
    # (DB_MAX_CONNECTIONS 100 - 10 reserved) // 2 workers.
    assert workers_settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"] == 45
    # Redis connections follow the requests a worker runs at once (both lanes), not its sockets.
    pool_kwargs = workers_settings.CACHES["default"]["OPTIONS"]["CONNECTION_POOL_KWARGS"]
    assert pool_kwargs["max_connections"] == (
        workers_settings.ADMISSION_MAX_IN_FLIGHT + workers_settings.ADMISSION_MAX_CACHED_IN_FLIGHT
    )


def test_on_starting_prepares_the_metrics_directory_the_workers_inherit(monkeypatch, tmp_path):
    settings_ = conf(monkeypatch, DATABASE_URL="postgres://vcci@db.example:5432/vcci")
    directory = tmp_path / "metrics"
    directory.mkdir()
    for name in ("counter_123.db", "gauge_livesum_123.db", "histogram_9.db", "notes.db", "keep.txt"):
        (directory / name).write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setenv("GUNICORN_WORKER_CONNECTIONS", "100")
    server = server_stub(settings_)
    settings_["on_starting"](server)
    # Only prometheus_client's files are removed; whatever else is there stays.
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt", "notes.db"]
    # The value gunicorn uses (the config's, 1000), whatever the environment said, is what the workers size from.
    assert os.environ["GUNICORN_WORKER_CONNECTIONS"] == "1000"
    assert [text for level, text in server.log.records if level == "warning"] == []


def test_on_starting_chooses_a_private_directory_per_bind_when_none_is_set(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # unset; restored after the test
    monkeypatch.setenv("GUNICORN_WORKER_CONNECTIONS", "100")
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    settings_ = conf(monkeypatch, GUNICORN_BIND="127.0.0.1:8123")
    settings_["on_starting"](server_stub(settings_))
    expected = tmp_path / f"vcci-prometheus-{os.getuid()}-127.0.0.1-8123"
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(expected)
    assert expected.is_dir() and (expected.stat().st_mode & 0o777) == 0o700


def test_child_exit_marks_the_worker_dead(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("counter_41.db", "gauge_livesum_41.db", "gauge_all_41.db", "gauge_livesum_42.db"):
        (tmp_path / name).write_text("x")
    conf(monkeypatch)["child_exit"](None, SimpleNamespace(pid=41))
    # Its live gauges stop counting; its counters (and non-live gauges) are kept: totals never go backwards.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_41.db", "gauge_all_41.db", "gauge_livesum_42.db"]


def test_post_fork_drops_the_masters_prometheus_client(monkeypatch):
    import prometheus_client

    saved = {name: module for name, module in sys.modules.items() if name.startswith("prometheus_client")}
    try:
        conf(monkeypatch)["post_fork"](None, None)
        assert not [name for name in sys.modules if name.startswith("prometheus_client")]
    finally:
        sys.modules.update(saved)
    assert sys.modules["prometheus_client"] is prometheus_client


def test_post_worker_init_refuses_a_blocking_gevent_worker_before_anything_else(monkeypatch, caplog):
    from gunicorn.workers.ggevent import GeventWorker

    from perf.serving import BlockingWaitError

    warmed = []
    monkeypatch.setattr("perf.warm.warm_on_boot", warmed.append)
    worker = GeventWorker.__new__(GeventWorker)
    worker.log = logging.getLogger("tests.vcci.gunicorn")
    # This test process never patched: exactly the blocking case.
    with pytest.raises(BlockingWaitError):
        conf(monkeypatch)["post_worker_init"](worker)
    assert warmed == []


# -- (d) connections are not concurrency -------------------------------------------------------------


def test_keep_alive_clients_do_not_lock_out_new_ones(start_server):
    """120 clients holding keep-alive connections (more than the 90 sockets a worker once allowed) and a new one:
    every one is answered. Sockets are bounded by worker_connections (1,000 by default), not by the pool."""
    server = start_server(workers=1, GUNICORN_WORKER_CONNECTIONS="", GUNICORN_KEEPALIVE="60")
    host, port = server.url.removeprefix("http://").split(":")
    held: list[socket.socket] = []
    try:
        for _ in range(120):
            client = socket.create_connection((host, int(port)), timeout=10)
            held.append(client)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        # All 120 stay open (keep-alive for 60 s) while a new client asks.
        assert get(f"{server.url}/healthz", timeout=10)[0] == 200
    finally:
        for client in held:
            client.close()


# -- (e) the bulk pool ---------------------------------------------------------------------------------


def bulk_pool_pid(server: Server) -> int:
    """The bulk pool's master, as the main master logged it, once it listens."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        text = server.log_text()
        started = re.search(r"Bulk pool: .* \(pid (\d+)\)", text)
        if started and "Listening at: unix:" in text and text.count("Booting worker") >= 2:
            return int(started.group(1))
        time.sleep(0.1)
    pytest.fail(f"the bulk pool did not start:\n{server.log_text()}")


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.django_db(transaction=True)
def test_bulk_requests_are_served_by_the_bulk_pool_at_a_lower_priority(start_server, org, electricity_factor):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    server = start_server(workers=1, GUNICORN_BULK_WORKERS="1", GUNICORN_BULK_NICE="7")
    pid = bulk_pool_pid(server)
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, server.process.pid) + 7
    headers = {"Authorization": f"Token {token.key}", "Content-Type": "application/json"}
    bulk = json.dumps({"items": [electricity_input(amount=str(n)) for n in range(1, 201)]}).encode()
    small = json.dumps({"items": [electricity_input(amount="1")]}).encode()
    assert len(bulk) >= 16 * 1024 > len(small)

    status, body = get(f"{server.url}/api/v1/calculate/batch/", bulk, headers)
    assert status == 200
    results = json.loads(body)["results"]
    status, body = get(f"{server.url}/api/v1/calculate/batch/", small, headers)
    assert status == 200
    one = json.loads(body)["results"][0]
    # The bulk pool computed the same thing the worker computes: n MWh is n times 1 MWh, to the last digit.
    assert [Decimal(r["co2e_kg"]) for r in results] == [Decimal(one["co2e_kg"]) * n for n in range(1, 201)]

    time.sleep(0.5)  # access-log lines are written after the response
    lines = server.log_text().splitlines()
    bulk_lines = [line for line in lines if line.startswith("bulk ") and "/api/v1/calculate/batch/" in line]
    worker_lines = [line for line in lines if line.startswith('127.0.0.1 "POST /api/v1/calculate/batch/')]
    # The bulk request in both access logs (the bulk pool's names the client), the small one only in the worker's.
    assert len(bulk_lines) == 1 and bulk_lines[0].startswith('bulk 127.0.0.1 "POST /api/v1/calculate/batch/')
    assert len(worker_lines) == 2
    scraped = scrape(server)
    assert total(scraped, "vcci_bulk_pool_requests_total", outcome="forwarded") == 1
    # Django counted each request once, whichever server ran it.
    view = (("method", "POST"), ("status", "200"), ("view", "calculate-batch"))
    assert scraped[("django_http_responses_total_by_status_view_method_total", view)] == 2

    # Killed without a chance to clean up, the master takes the bulk pool with it.
    os.kill(server.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(pid)


@pytest.mark.django_db(transaction=True)
def test_an_export_streams_through_the_bulk_pool_as_served_by_a_worker(start_server, org, electricity_factor):
    membership = MembershipFactory.create(organization=org)
    token = Token.objects.create(user=membership.user)
    headers = {"Authorization": f"Token {token.key}"}
    direct = start_server(workers=1)
    items = json.dumps([activity_input(amount=str(n)) for n in range(1, 301)]).encode()
    assert get(f"{direct.url}/api/v1/activities/", items, {**headers, "Content-Type": "application/json"})[0] == 201
    url = "/api/v1/emissions/export.csv?period_from=2025-01-01&period_to=2025-01-31"
    status, expected = get(direct.url + url, headers=headers)
    assert status == 200 and expected.count(b"\n") == 301
    pooled = start_server(workers=1, GUNICORN_BULK_WORKERS="1")
    bulk_pool_pid(pooled)
    status, body = get(pooled.url + url, headers=headers)
    assert status == 200 and body == expected
    time.sleep(0.5)
    assert any(line.startswith("bulk ") and "export.csv" in line for line in pooled.log_text().splitlines())


class FakePopen:
    started: list[FakePopen] = []

    def __init__(self, command: list[str], *, env: dict[str, str], preexec_fn: Any) -> None:
        self.command, self.env, self.preexec_fn, self.pid = command, env, preexec_fn, 4242
        FakePopen.started.append(self)


def test_on_starting_starts_the_bulk_pool_and_tells_the_workers_its_socket(monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("subprocess.Popen", FakePopen)
    FakePopen.started = []
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--bind 0.0.0.0:9000")  # the main server's, not the pool's
    monkeypatch.setenv("BULK_POOL_SOCKET", "/elsewhere.sock")  # a stale value from the environment
    monkeypatch.setenv("BULK_POOL_DB_CONNECTIONS", "0")  # restored after the test: on_starting sets both
    settings_ = conf(
        monkeypatch,
        GUNICORN_BIND="127.0.0.1:8123",
        GUNICORN_WORKERS="3",
        ADMISSION_HEAVY_SLOTS="2",
        GUNICORN_BULK_WORKERS="2",
        DB_POOL_MAX_SIZE="30",  # the workers' pools: more than the bulk pool's budget, not inherited
    )
    server = server_stub(settings_)
    settings_["on_starting"](server)
    [pool] = FakePopen.started
    socket_path = tmp_path / f"vcci-bulk-{os.getuid()}-127.0.0.1-8123" / "bulk.sock"
    assert (socket_path.parent.stat().st_mode & 0o777) == 0o700
    assert pool.command == [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--no-control-socket", "vcci.wsgi"]
    # It admits all that 3 workers x 2 slots may forward at once, never forwards again, and shares the metrics.
    assert {key: pool.env[key] for key in ("VCCI_SERVER_ROLE", "GUNICORN_BIND", "GUNICORN_WORKERS")} == {
        "VCCI_SERVER_ROLE": "bulk",
        "GUNICORN_BIND": f"unix:{socket_path}",
        "GUNICORN_WORKERS": "2",
    }
    assert pool.env["ADMISSION_MAX_IN_FLIGHT"] == pool.env["ADMISSION_HEAVY_SLOTS"] == "6"
    assert pool.env["GUNICORN_WORKER_CONNECTIONS"] == "8" and pool.env["GUNICORN_WORKER_CLASS"] == "gevent"
    assert not {"BULK_POOL_SOCKET", "GUNICORN_CMD_ARGS", "DB_POOL_MAX_SIZE"} & set(pool.env)
    assert pool.env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    # The workers (forked after this) inherit where to forward, and the connections the pool may hold.
    assert os.environ["BULK_POOL_SOCKET"] == str(socket_path)
    assert os.environ["BULK_POOL_DB_CONNECTIONS"] == "16"


def test_the_bulk_pools_connections_come_out_of_the_workers_budget(load_settings):  # noqa: F811
    workers_settings = load_settings(BULK_POOL_DB_CONNECTIONS="8", BULK_POOL_SOCKET="/run/vcci/bulk.sock")
    # (DB_MAX_CONNECTIONS 100 - 10 reserved - 8 for the bulk pool) // 2 workers.
    assert workers_settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"] == 41
    assert workers_settings.BULK_POOL_SOCKET == "/run/vcci/bulk.sock"


def test_the_bulk_pools_own_configuration(monkeypatch, tmp_path):
    monkeypatch.setattr("subprocess.Popen", FakePopen)
    FakePopen.started = []
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_7.db").write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    settings_ = conf(monkeypatch, VCCI_SERVER_ROLE="bulk", GUNICORN_BULK_WORKERS="1")
    assert settings_["proc_name"] == "vcci-bulk"
    assert settings_["access_log_format"].startswith("bulk %({x-forwarded-for}i)s ")
    settings_["on_starting"](server_stub(settings_))
    # The main master prepared the directory (the bulk pool's files join the workers'); no pool of its own.
    assert [p.name for p in directory.iterdir()] == ["counter_7.db"] and FakePopen.started == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"VCCI_SERVER_ROLE": "front"}, "VCCI_SERVER_ROLE must be 'main' or 'bulk'"),
        ({"GUNICORN_BULK_WORKERS": "-1"}, "GUNICORN_BULK_WORKERS must be >= 0"),
        ({"GUNICORN_BULK_NICE": "20"}, "GUNICORN_BULK_NICE 0-19"),
    ],
)
def test_bulk_pool_settings_are_checked(monkeypatch, env, message):
    with pytest.raises(SystemExit, match=message):
        conf(monkeypatch, **env)


# -- what the server says about itself; its control socket ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_responses_do_not_name_gunicorn(start_server):
    server = start_server(workers=1)
    request = urllib.request.Request(f"{server.url}/healthz")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers.get_all("Server") == ["vcci"]


@pytest.mark.django_db(transaction=True)
def test_workers_freeze_what_they_loaded_and_time_each_collector_pass(start_server):
    server = start_server(workers=1, GC_THRESHOLDS="900")
    # One worker keeps gevent's own accept batch: gunicorn lowers it only with several.
    assert "Accepting up to" not in server.log_text()
    found = re.search(r"Garbage collector: (\d+) objects frozen, thresholds \((\d+), (\d+), (\d+)\)", server.log_text())
    assert found, server.log_text()
    # Django, DRF and the project's modules: far more than a bare interpreter holds.
    assert int(found.group(1)) > 50_000
    assert found.group(2) == "900"
    # A worker that serves allocates: its passes reach /metrics, per generation.
    deadline = time.monotonic() + BOOT_TIMEOUT
    while not total(scraped := scrape(server), "vcci_gc_pause_seconds_count", generation="0"):
        assert time.monotonic() < deadline, "no collector pass was timed"
        time.sleep(0.1)
    assert total(scraped, "vcci_gc_pause_seconds_sum", generation="0") > 0


@pytest.mark.django_db(transaction=True)
def test_workers_measure_how_late_their_event_loop_wakes_a_greenlet(start_server):
    server = start_server(workers=1, EVENT_LOOP_LAG_INTERVAL="0.05")
    deadline = time.monotonic() + BOOT_TIMEOUT
    while total(scraped := scrape(server), "vcci_event_loop_lag_seconds_count", role="main") < 5:
        assert time.monotonic() < deadline, "the worker's loop was not measured"
        time.sleep(0.1)
    # An idle worker wakes its measuring greenlet on time: the ticks land in the finite buckets, not above 5 s.
    ticks = total(scraped, "vcci_event_loop_lag_seconds_count", role="main")
    assert total(scraped, "vcci_event_loop_lag_seconds_bucket", role="main", le="5.0") == ticks
    assert 0 <= total(scraped, "vcci_event_loop_lag_seconds_sum", role="main") < 5 * ticks


@pytest.mark.django_db(transaction=True)
def test_each_server_has_its_own_control_socket(start_server, tmp_path, request):
    # Two servers of one user, as gunicorn would default them: both in the same home, no XDG_RUNTIME_DIR.
    home = tmp_path / "home"
    home.mkdir()
    # A short temp dir of the test's own: a Unix socket's path is limited to 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="vcci-ctl-"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": "", "TMPDIR": str(temp)}
    servers = [start_server(workers=1, control_socket=True, **env) for _ in range(2)]

    paths = []
    for server in servers:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not (found := re.search(r"Control socket listening at (\S+)", server.log_text())):
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        paths.append(found.group(1))
    assert len(set(paths)) == 2, paths
    for path in paths:
        assert Path(path).is_socket() and Path(path).parent.parent == temp
        assert Path(path).parent.stat().st_mode & 0o777 == 0o700
    assert not (home / ".gunicorn").exists()
    # Each socket answers for its own master: gunicornc lists that server's address.
    for path, server in zip(paths, servers, strict=True):
        reply = subprocess.run(
            [sys.executable, "-m", "gunicorn.ctl.cli", "-s", path, "-c", "show listeners", "-j"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert reply.returncode == 0, reply.stdout + reply.stderr
        assert server.url.removeprefix("http://") in reply.stdout, reply.stdout


# -- PostgreSQL unreachable ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_postgresql_unreachable_the_api_answers_a_json_503_with_retry_after(start_server):
    with socket.socket() as sock:  # a local port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    # The pool would wait 10 minutes for a busy server: a timely answer saying "unreachable" is the fail-fast path.
    server = start_server(workers=1, DATABASE_URL=f"postgres://postgres@127.0.0.1:{closed}/vcci", DB_POOL_TIMEOUT="600")
    for _ in range(2):  # the first request (the pool opens) and the next, alike
        request = urllib.request.Request(f"{server.url}/api/v1/suppliers/", headers={"Authorization": "Token x"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=120)  # a guard against hanging, not a measurement
        assert raised.value.code == 503
        assert raised.value.headers["Content-Type"].startswith("application/json")
        assert raised.value.headers["Retry-After"] == "1"
        assert "unreachable" in json.loads(raised.value.read())["detail"]
