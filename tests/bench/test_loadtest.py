"""The load test: ``bench.loadtest`` (statistics, cache hit rate, thresholds, exit status, orchestration) and
``locustfile.py`` (every scenario's requests are valid against the real API, with the real factor catalogue).

The locustfile's user classes run in-process here: each request goes through the whole Django stack with
DRF's test client instead of the network (``InProcessSession`` stands in for locust's ``FastHttpSession``),
so a payload the API refuses fails the suite. One real run at the end starts gunicorn and locust for a few
seconds against this test run's database.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from bench import loadtest
from bench.loadtest import (
    CacheReport,
    EndpointStats,
    HitRate,
    Thresholds,
    broken,
    cache_events,
    cache_report,
    check_thresholds,
    hit_rate,
    parse_duration,
    read_exceptions,
    read_failures,
    read_stats,
    token_from,
)
from emissions.models import ActivityRecord, Organization, Supplier
from emissions.services.organizations import org_user_create
from tests.helpers import call_command

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
    "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
# locust 2.x's _stats.csv: one row per (method, name), then the aggregate; N/A percentiles when nothing was timed.
STATS_CSV = "\n".join(
    [
        HEADER,
        "GET,/api/v1/emissions/,200,0,12,20.5,1.2,410.0,5000,3.3,0.0,12,15,19,22,40,80,150,300,410,410,410",
        "POST,/api/v1/activities/,4,1,900,950.0,400.0,1500.0,9000,0.07,0.02,900,900,1500,1500,1500,1500,1500,1500,1500,"
        "1500,1500",
        "GET,/api/v1/never/,0,0,0,0,0,0,0,0.0,0.0,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A,N/A",
        ",Aggregated,204,1,13,40.1,1.2,1500.0,5100,3.4,0.02,13,16,20,25,45,95,400,900,1500,1500,1500",
    ]
)
FAILURES_CSV = (
    "Method,Name,Error,Occurrences,First Seen,Last Seen\n"
    "POST,/api/v1/activities/,\"CatchResponseError('POST /api/v1/activities/: expected 201, got 400: {}')\",1,1,1\n"
)
EXCEPTIONS_CSV = 'Count,Message,Traceback,Nodes\n2,"KeyError: \'results\'","Traceback ...",local\n'


def exposition(counts: dict[tuple[str, str, str], float]) -> str:
    """A Prometheus text exposition of ``vcci_cache_events_total`` with the given (tier, resource, event) counts."""
    lines = [
        "# HELP vcci_cache_events_total Two-level cache events.",
        "# TYPE vcci_cache_events_total counter",
    ]
    for (tier, resource, event), value in counts.items():
        lines.append(f'vcci_cache_events_total{{event="{event}",resource="{resource}",tier="{tier}"}} {value}')
    lines += ["# HELP vcci_other_total Something else.", "# TYPE vcci_other_total counter", "vcci_other_total 7.0"]
    return "\n".join(lines) + "\n"


BEFORE = exposition(
    {
        ("l1", "emissions", "hit"): 100,
        ("l1", "emissions", "miss"): 50,
        ("l2", "emissions", "hit"): 30,
        ("l2", "emissions", "miss"): 20,
        ("l1", "auth", "hit"): 10,
        ("l1", "auth", "miss"): 10,
        ("l2", "auth", "hit"): 10,
    }
)
# During the run: emissions 600 L1 hits, 400 L1 misses of which Redis answered 380 (20 computed);
# auth 300 L1 hits, no miss. Promotions, stores and computes are not lookups and are ignored.
AFTER = exposition(
    {
        ("l1", "emissions", "hit"): 700,
        ("l1", "emissions", "miss"): 450,
        ("l2", "emissions", "hit"): 410,
        ("l2", "emissions", "miss"): 40,
        ("l2", "emissions", "promotion"): 410,
        ("db", "emissions", "compute"): 40,
        ("l1", "auth", "hit"): 310,
        ("l1", "auth", "miss"): 10,
        ("l2", "auth", "hit"): 10,
    }
)


def stats(requests: int = 100, failures: int = 0, p95: float | None = 50.0) -> EndpointStats:
    return EndpointStats("", "Aggregated", requests, failures, 10.0, p95, 90.0, 20.0, 100.0, 10.0)


def available(rate: float) -> CacheReport:
    """A cache report whose overall hit rate is ``rate`` (of 1,000 lookups)."""
    hits = round(rate * 1000)
    return CacheReport(available=True, overall=HitRate(l1_hits=hits, l1_misses=1000 - hits))


# -- locust statistics ------------------------------------------------------------------------------------


def test_stats_csv_gives_each_endpoint_and_the_aggregate(tmp_path: Path) -> None:
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS_CSV)

    endpoints, aggregate = read_stats(path)

    assert [(e.method, e.name) for e in endpoints] == [
        ("GET", "/api/v1/emissions/"),
        ("POST", "/api/v1/activities/"),
        ("GET", "/api/v1/never/"),
    ]
    emissions, activities, never = endpoints
    assert (emissions.requests, emissions.failures) == (200, 0)
    assert (emissions.p50_ms, emissions.p95_ms, emissions.p99_ms, emissions.rps) == (12, 80, 300, 3.3)
    assert activities.failure_rate == 0.25
    assert (never.p50_ms, never.p95_ms, never.p99_ms, never.failure_rate) == (None, None, None, 0.0)
    assert (aggregate.requests, aggregate.failures, aggregate.p95_ms, aggregate.rps) == (204, 1, 95, 3.4)


def test_a_missing_stats_file_or_one_without_aggregate_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(loadtest.RunError, match=r"locust_stats\.csv is missing"):
        read_stats(tmp_path / "locust_stats.csv")
    path = tmp_path / "other.csv"
    path.write_text(STATS_CSV.rsplit("\n", 1)[0])
    with pytest.raises(loadtest.RunError, match="no Aggregated row"):
        read_stats(path)


def test_failures_and_exceptions_are_read_from_their_csvs(tmp_path: Path) -> None:
    (tmp_path / "f.csv").write_text(FAILURES_CSV)
    (tmp_path / "e.csv").write_text(EXCEPTIONS_CSV)

    assert read_failures(tmp_path / "f.csv") == [
        {
            "method": "POST",
            "name": "/api/v1/activities/",
            "occurrences": 1,
            "error": "CatchResponseError('POST /api/v1/activities/: expected 201, got 400: {}')",
        }
    ]
    assert read_exceptions(tmp_path / "e.csv") == [{"count": 2, "message": "KeyError: 'results'"}]
    assert read_failures(tmp_path / "none.csv") == read_exceptions(tmp_path / "none.csv") == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("60", 60), ("60s", 60), ("2m", 120), ("1h30m", 5400), ("1m30s", 90), (" 10S ", 10)]
)
def test_durations_are_locust_time_spans(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "0s", "-5", "1.5m"])
def test_other_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


# -- cache hit rate ---------------------------------------------------------------------------------------


def test_hit_rate_counts_only_the_traffic_between_the_scrapes() -> None:
    report = hit_rate(cache_events(BEFORE), cache_events(AFTER))

    # (600 + 380) / (600 + 400) for emissions, 300 / 300 for auth; together (900 + 380) / 1300.
    assert report.per_resource["emissions"].rate == pytest.approx(0.98)
    assert report.per_resource["auth"].rate == 1.0
    assert report.overall.rate == pytest.approx(1280 / 1300)
    assert report.overall.as_dict()["db_computes"] == 20
    assert report.counter_resets == []


def test_a_server_without_cache_events_yet_counts_from_zero() -> None:
    # A freshly started server exposes the family without samples until its first cache lookup.
    empty = "# HELP vcci_cache_events_total x\n# TYPE vcci_cache_events_total counter\n"

    report = cache_report(empty, AFTER)

    assert report.available
    assert report.overall.l1_hits == 1010 and report.overall.l1_misses == 460


def test_the_hit_rate_is_unavailable_without_metrics_after_the_run() -> None:
    assert cache_report(None, None, "GET /metrics answered 404").as_dict() == {
        "status": "unavailable",
        "reason": "GET /metrics answered 404",
        "hit_rate": None,
    }
    no_cache = exposition({})
    report = cache_report(BEFORE, no_cache)
    assert not report.available and "no vcci_cache_events_total samples" in report.reason


def test_a_counter_that_went_backwards_was_reset_and_counts_from_zero() -> None:
    before = cache_events(exposition({("l1", "suppliers", "hit"): 500, ("l1", "suppliers", "miss"): 10}))
    after = cache_events(exposition({("l1", "suppliers", "hit"): 90, ("l1", "suppliers", "miss"): 20}))

    report = hit_rate(before, after)

    assert report.counter_resets == ["l1/suppliers/hit"]
    assert (report.overall.l1_hits, report.overall.l1_misses) == (90, 10)


# -- thresholds and exit status ---------------------------------------------------------------------------


def test_every_threshold_holds() -> None:
    checks = check_thresholds(stats(), 0, available(0.97), Thresholds(max_p95_ms=100))

    assert [(c.name, c.ok) for c in checks] == [("error rate", True), ("cache hit rate", True), ("p95", True)]
    assert broken(checks) == []


@pytest.mark.parametrize(
    ("aggregate", "exceptions", "cache", "thresholds", "expected"),
    [
        (stats(failures=1), 0, available(0.99), Thresholds(), ["error rate: 1.00 % > 0.00 %"]),
        (stats(), 1, available(0.99), Thresholds(), ["error rate: 1.00 % > 0.00 % (0 failed of 100 requests, 1 "]),
        (stats(requests=0), 0, available(0.99), Thresholds(), ["error rate: no request was made"]),
        (stats(), 0, available(0.9), Thresholds(), ["cache hit rate: 90.00 % < 95.00 %"]),
        (stats(), 0, CacheReport(False, "GET /metrics answered 404"), Thresholds(), ["cache hit rate: unavailable"]),
        (stats(p95=250), 0, available(0.99), Thresholds(max_p95_ms=200), ["p95: 250 ms > 200 ms"]),
        (stats(p95=None), 0, available(0.99), Thresholds(max_p95_ms=200), ["p95: no response times"]),
    ],
)
def test_each_broken_threshold_is_named(
    aggregate: EndpointStats, exceptions: int, cache: CacheReport, thresholds: Thresholds, expected: list[str]
) -> None:
    problems = broken(check_thresholds(aggregate, exceptions, cache, thresholds))

    assert len(problems) == len(expected)
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem


def test_unavailable_metrics_break_nothing_when_not_required_or_not_checked() -> None:
    missing = CacheReport(False, "GET /metrics answered 404")

    not_required = check_thresholds(stats(), 0, missing, Thresholds(require_metrics=False))
    not_checked = check_thresholds(stats(), 0, missing, Thresholds(min_cache_hit_rate=None))

    assert not_required[1].ok is None and "not required" in not_required[1].detail
    assert not_checked[1].ok is None
    assert broken(not_required) == broken(not_checked) == []


def test_create_org_user_output_gives_the_token(db: None) -> None:
    out = StringIO()
    call_command("create_org_user", "--org", "loadtest-t", "--username", "loadtest-t-client", stdout=out)

    token = token_from(out.getvalue())

    assert Token.objects.get(user__username="loadtest-t-client").key == token
    with pytest.raises(loadtest.RunError, match="no 'API token:' line"):
        token_from("Created user 'x' in 'y'.\n")


class FakeServer:
    """Stands in for the gunicorn ``Process``: remembers whether it was stopped."""

    def __init__(self) -> None:
        self.stopped = False
        self.popen = SimpleNamespace(pid=os.getpid())  # the CPU meter reads a real process

    def stop(self, timeout: float) -> None:
        self.stopped = True


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Every step of ``bench.loadtest.run`` that starts a process or talks to a server, replaced; ``locust`` writes
    ``state.stats`` as the run's CSV and returns ``state.locust_status``."""
    state = SimpleNamespace(
        server=FakeServer(),
        stats=STATS_CSV,
        failures="Method,Name,Error,Occurrences,First Seen,Last Seen\n",
        locust_status=0,
        scrapes=[(BEFORE, ""), (AFTER, "")],
        raise_in_locust=None,
        manage_calls=[],
    )

    def run_locust(
        options: Any, url: str, tokens: list[str], out: Path, catalogue: Path, server_pid: int, **kwargs: Any
    ) -> int:
        if state.raise_in_locust is not None:
            raise state.raise_in_locust
        (out / "locust_stats.csv").write_text(state.stats)
        (out / "locust_failures.csv").write_text(state.failures)
        (out / "locust_exceptions.csv").write_text("Count,Message,Traceback,Nodes\n")
        return int(state.locust_status)

    monkeypatch.setattr(loadtest, "prepare_orgs", lambda slugs, **kwargs: [f"token-{slug}" for slug in slugs])
    monkeypatch.setattr(loadtest, "manage", lambda *args, **kwargs: state.manage_calls.append(args) or "")
    monkeypatch.setattr(loadtest, "port_in_use", lambda bind: False)
    monkeypatch.setattr(loadtest, "start_server", lambda options, out: state.server)
    monkeypatch.setattr(loadtest, "wait_until_ready", lambda server, url, timeout: [])
    monkeypatch.setattr(loadtest, "build_catalogue", lambda url, tokens, path, max_factors=None: "catalogue: fake")
    monkeypatch.setattr(loadtest, "scrape_metrics", lambda url: state.scrapes.pop(0))
    monkeypatch.setattr(loadtest, "run_locust", run_locust)
    monkeypatch.setattr(loadtest, "machine_description", lambda slugs: {"CPU": "test"})
    return state


def run_main(tmp_path: Path, *extra: str) -> int:
    return loadtest.main(["--out", str(tmp_path / "out"), "--collectstatic", "never", *extra])


def test_a_run_whose_thresholds_hold_exits_0_with_its_summary(
    fake_steps: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fixture's one failed request breaks the default error rate of 0; allow it here.
    assert run_main(tmp_path, "--max-error-rate", "0.01", "--users", "7") == 0

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] and summary["broken"] == []
    assert [(e["method"], e["name"], e["p50_ms"], e["p95_ms"], e["p99_ms"]) for e in summary["endpoints"][:2]] == [
        ("GET", "/api/v1/emissions/", 12, 80, 300),
        ("POST", "/api/v1/activities/", 900, 1500, 1500),
    ]
    assert summary["aggregated"]["rps"] == 3.4
    assert summary["aggregated"]["error_rate"] == pytest.approx(1 / 204)
    assert summary["cache"]["hit_rate"] == pytest.approx(1280 / 1300)
    assert set(summary["cache"]["per_resource"]) == {"auth", "emissions"}
    assert summary["run"]["users"] == 7 and summary["run"]["organizations"] == ["loadtest-a", "loadtest-b"]
    assert summary["run"]["reproduce"].startswith("make loadtest LOAD_USERS=7 ")
    assert summary["machine"] == {"CPU": "test"}
    assert (tmp_path / "out" / "metrics_before.txt").read_text() == BEFORE
    assert fake_steps.server.stopped
    warm = ("warm_cache", "--org", "loadtest-a", "--org", "loadtest-b", "--host", "127.0.0.1:8765", "--no-progress")
    assert warm in fake_steps.manage_calls
    printed = capsys.readouterr().out
    assert "GET /api/v1/emissions/" in printed and "cache hit rate 98.46 %" in printed


def test_a_broken_threshold_exits_1_and_is_listed(
    fake_steps: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(tmp_path, "--min-cache-hit-rate", "0.99") == 1

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert not summary["passed"]
    assert [problem.split(":")[0] for problem in summary["broken"]] == ["error rate", "cache hit rate"]
    assert "Broken thresholds:" in capsys.readouterr().err
    assert fake_steps.server.stopped


def test_metrics_unavailable_break_the_hit_rate_unless_not_required(
    fake_steps: SimpleNamespace, tmp_path: Path
) -> None:
    fake_steps.scrapes = [(None, "GET /metrics answered 404")] * 2
    assert run_main(tmp_path, "--max-error-rate", "off") == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["cache"] == {"status": "unavailable", "reason": "GET /metrics answered 404", "hit_rate": None}
    assert summary["broken"] == ["cache hit rate: unavailable: GET /metrics answered 404"]

    fake_steps.scrapes = [(None, "GET /metrics answered 404")] * 2
    assert run_main(tmp_path, "--max-error-rate", "off", "--no-require-metrics") == 0


@pytest.mark.parametrize(
    ("failure", "status"),
    [(loadtest.RunError("seed failed"), 2), (KeyboardInterrupt(), 130)],
)
def test_a_failed_or_interrupted_run_still_stops_the_server(
    fake_steps: SimpleNamespace, tmp_path: Path, failure: BaseException, status: int
) -> None:
    fake_steps.raise_in_locust = failure

    assert run_main(tmp_path) == status
    assert fake_steps.server.stopped
    assert not (tmp_path / "out" / "summary.json").exists()


def test_locust_exiting_abnormally_is_a_run_error(
    fake_steps: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_steps.locust_status = 2

    assert run_main(tmp_path) == 2
    assert "locust exited with status 2" in capsys.readouterr().err


def test_a_busy_port_is_refused_before_anything_starts(
    fake_steps: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loadtest, "port_in_use", lambda bind: True)

    assert run_main(tmp_path) == 2
    assert not fake_steps.server.stopped  # never started


def test_bad_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(tmp_path, "--users", "0") == 2
    assert "--users must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_main(tmp_path, "--duration", "soon")


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_stopping_a_process_group_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    # A parent that ignores SIGTERM and a child of its own (inheriting that): both must be gone after stop().
    pid_file = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait"
    process = loadtest.Process("test", ["sh", "-c", script], tmp_path / "test.log", dict(os.environ))
    deadline = time.monotonic() + 10
    while (not pid_file.exists() or not pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())

    process.stop(0.5)

    assert process.popen.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(child)


def test_the_server_under_test_runs_the_production_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # make loadtest runs the tool with the bench app's settings; gunicorn must serve what production serves.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "vcci.settings_dev")
    started: dict[str, Any] = {}

    def process(name: str, command: list[str], log: Path, env: dict[str, str]) -> SimpleNamespace:
        started.update(command=command, env=env)
        return SimpleNamespace()

    monkeypatch.setattr(loadtest, "Process", process)
    loadtest.start_server(loadtest.parser().parse_args(["--bind", "127.0.0.1:8765", "--workers", "3"]), tmp_path)

    assert started["env"]["DJANGO_SETTINGS_MODULE"] == "vcci.settings"
    assert started["env"]["GUNICORN_WORKERS"] == "3" and started["command"][-1] == "vcci.wsgi"


# -- the locustfile against the real API ------------------------------------------------------------------


class InProcessResponse:
    """What the locustfile uses of locust's ``ResponseContextManager``, around a test-client response."""

    def __init__(self, response: HttpResponseBase, context: dict[str, Any]) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        streamed = getattr(response, "streaming_content", None)
        self.content: bytes = b"".join(streamed) if streamed is not None else response.content  # type: ignore[attr-defined]
        self.outcome: str | None = None
        self.request_meta: dict[str, Any] = {"context": context}

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def success(self) -> None:
        self.outcome = "success"

    def failure(self, message: Any) -> None:
        self.outcome = f"failure: {message}"

    def __enter__(self) -> InProcessResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class InProcessSession:
    """Stands in for locust's ``FastHttpSession``: sends each request through the API in-process."""

    def __init__(self) -> None:
        self.client = APIClient()
        self.sent: list[tuple[str, str, InProcessResponse]] = []

    def request(
        self, method: str, url: str, name: str | None = None, headers: dict[str, str] | None = None, json: Any = None,
        context: dict[str, Any] | None = None, **kwargs: Any,
    ) -> InProcessResponse:  # fmt: skip
        extra: dict[str, Any] = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()}
        body = "" if json is None else _dumps(json)
        response = InProcessResponse(
            self.client.generic(method, url, data=body, content_type="application/json", **extra),
            dict(context or {}),  # locust's request() copies the caller's context too
        )
        self.sent.append((method, name or url, response))
        return response

    def failures(self) -> list[str]:
        return [f"{method} {name}: {r.outcome}" for method, name, r in self.sent if r.outcome != "success"]


def _dumps(data: Any) -> str:
    return json.dumps(data)


@pytest.fixture
def lf(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``locustfile.py``, imported without gevent's monkey-patching (this process is not a locust run)."""
    monkeypatch.setenv("LOCUST_SKIP_MONKEY_PATCH", "1")
    monkeypatch.delenv("VCCI_CATALOGUE", raising=False)
    monkeypatch.delenv("VCCI_WAIT_SCALE", raising=False)
    module = importlib.import_module("locustfile")
    module.reset()
    yield module
    module.reset()


@pytest.fixture
def small_catalogue(lf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer real factors to draw from (probing all ~2,800 in-process takes 15 s): 100 spend factors and 100 of
    the ~150 the words below find, still in every unit shape (kWh, t, tonne.km, passenger.km, ...);
    ``test_the_probe_keeps_nearly_every_real_factor`` probes them all. Probes run in the test's thread,
    whose transaction holds the data."""
    monkeypatch.setattr(lf, "FACTOR_LIMIT", 100)
    monkeypatch.setattr(lf, "CALCULATION_WORDS", ("Natural gas", "flight", "steel", "national rail", "taxi", "paper"))
    monkeypatch.setattr(lf, "PROBE_WORKERS", 1)


@pytest.fixture
def tenant(db: None, monkeypatch: pytest.MonkeyPatch) -> tuple[Organization, str]:
    """The real factor catalogue, a small seeded organization and its API token (``VCCI_TOKENS``)."""
    call_command("import_factors", stdout=StringIO())
    call_command(
        "seed_demo", "--org", "loadtest-t", "--suppliers", "20", "--activities", "300", "--months", "12",
        "--end-month", "2026-10", stdout=StringIO(), stderr=StringIO(),
    )  # fmt: skip
    org = Organization.objects.get(slug="loadtest-t")
    # An admin, as create_org_user makes the load test's users: the supplier scenario writes suppliers.
    _, token = org_user_create(organization=org, username="loadtest-t-client", role="admin", staff=False)
    monkeypatch.setenv("VCCI_TOKENS", token)
    return org, token


def test_locusts_default_arguments_are_built_once_per_process(lf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    from locust import argument_parser, runners

    built: list[int] = []

    def build() -> dict[str, Any]:
        built.append(1)
        return {"users": 1, "host": None}

    monkeypatch.setattr(argument_parser, "default_args_dict", build)
    lf.memoize_default_arguments()
    lf.memoize_default_arguments()  # a second import of the locustfile: wrapped once, not twice

    first = argument_parser.default_args_dict()
    first["users"] = 99  # a caller's change stays its own
    # locust's worker reads it through the module, as the spawn message's handler does.
    assert runners.argument_parser.default_args_dict() == {"users": 1, "host": None}
    assert argument_parser.default_args_dict() is not argument_parser.default_args_dict()
    assert built == [1]


def test_the_memoized_default_arguments_are_locusts(lf: ModuleType) -> None:
    from locust import argument_parser

    memoized: Any = argument_parser.default_args_dict
    assert memoized.memoized and memoized() == memoized.__wrapped__()
    assert {"num_users", "spawn_rate", "host", "run_time"} <= memoized().keys()


def user_of(lf: ModuleType, user_class: type, seed: int = 1) -> tuple[Any, InProcessSession]:
    """A started simulated user of ``user_class`` whose requests go through ``InProcessSession``."""
    from locust.env import Environment

    # The test client's host; a subclass, so that the locustfile's class keeps host=None as locust expects.
    hosted = type(user_class.__name__, (user_class,), {"host": "http://testserver"})
    user = hosted(Environment(user_classes=[hosted]))
    session = InProcessSession()
    user.client = session
    user.on_start()
    user.rng.seed(seed)
    return user, session


def tasks_of(user_class: Any) -> list[Any]:
    """The user class's task functions, each once (locust repeats a task once per unit of its weight)."""
    return list(dict.fromkeys(user_class.tasks))


def test_the_probe_keeps_nearly_every_real_factor(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    user, session = user_of(lf, lf.CalculatorClient)

    spend, average = lf.load_factor_choices(user.fetch)

    # Every EPA spend factor, and the average-data factors the calculation words find, in each unit the suite uses.
    assert len(spend) >= 1000 and {choice.method for choice in spend} == {"spend"}
    assert len(average) >= 1000 and {choice.method for choice in average} == {"activity", "distance"}
    assert {"MWh", "kg", lf.MASS_DISTANCE, "passenger*mile"} <= {choice.unit for choice in average}
    assert session.failures() == []


@pytest.mark.usefixtures("small_catalogue")
@pytest.mark.parametrize("user_class", ["AnalystUser", "FactorSearchUser", "CalculatorClient", "SupplierMaintenance"])
def test_every_task_of_a_scenario_sends_valid_requests(
    lf: ModuleType, tenant: tuple[Organization, str], user_class: str
) -> None:
    cls = getattr(lf, user_class)
    user, session = user_of(lf, cls)

    for _ in range(3):
        for task in tasks_of(cls):
            task(user)

    assert session.failures() == []
    names = {name for _, name, _ in session.sent}
    assert all(not name.startswith("/api/v1/") or "?" not in name for name in names)  # named by route template
    statuses = {response.status_code for _, _, response in session.sent}
    assert statuses <= {200, 201, 204, 304}, statuses


@pytest.mark.usefixtures("small_catalogue")
def test_the_analyst_revalidates_with_etags_and_takes_304s(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    user, session = user_of(lf, lf.AnalystUser)

    user.dashboard()
    user.dashboard()

    second = session.sent[-3:]
    assert [response.status_code for _, _, response in second] == [304, 304, 304]
    assert session.failures() == []


def test_a_304_answers_with_the_body_remembered_as_bytes(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    """The user remembers a page as the bytes it received (nothing for the collector to walk), and a 304 answers
    with that page decoded: the same data as the 200."""
    user, session = user_of(lf, lf.AnalystUser)
    path = f"{lf.API}/emissions/summary/?group_by=method"  # not asked for by the user's start

    first = user.call("GET", path, name="summary", conditional=True)
    again = user.call("GET", path, name="summary", conditional=True)

    assert (first.status, again.status) == (200, 304)
    assert again.data == first.data and again.data["groups"]
    assert again.data is not first.data
    assert isinstance(user.http_cache[path][1], bytes)
    assert session.failures() == []


def counting_decoder(lf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies the locustfile decodes into Python objects from now on (its ``orjson.loads`` calls)."""
    decoded: list[bytes] = []
    real = lf.orjson.loads

    def loads(body: bytes) -> Any:
        decoded.append(body)
        return real(body)

    monkeypatch.setattr(lf, "orjson", SimpleNamespace(loads=loads))
    return decoded


@pytest.mark.usefixtures("small_catalogue")
def test_a_body_is_decoded_only_when_read(
    lf: ModuleType, tenant: tuple[Organization, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, session = user_of(lf, lf.AnalystUser)
    decoded = counting_decoder(lf, monkeypatch)
    path = f"{lf.API}/emissions/?limit=2"

    reply = user.call("GET", path, name="emissions", conditional=True)
    link = reply.get("next")
    first_id = reply.get("results")[0]["id"]

    assert reply.ok and decoded == []  # validated, read through the document: not decoded
    page = json.loads(session.sent[-1][2].content)
    assert (link, first_id) == (page["next"], page["results"][0]["id"])
    assert reply.data == page and len(decoded) == 1
    assert reply.get("next") == link and len(decoded) == 1  # read from what was decoded
    again = user.call("GET", path, name="emissions", conditional=True)
    assert again.status == 304 and again.get("next") == link and len(decoded) == 1
    assert again.data == page and len(decoded) == 2
    assert session.failures() == []


@pytest.mark.usefixtures("small_catalogue")
def test_following_pages_for_their_links_decodes_none(
    lf: ModuleType, tenant: tuple[Organization, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, session = user_of(lf, lf.AnalystUser)
    first = user.call("GET", f"{lf.API}/emissions/?limit=5", name="emissions")
    decoded = counting_decoder(lf, monkeypatch)

    assert user.follow(first, "next page", 3, conditional=False, rows=False) == []
    assert [name for _, name, _ in session.sent].count("next page") == 3 and decoded == []

    rows = user.follow(first, "next page", 3, conditional=False)
    assert len(rows) == 20 and len({row["id"] for row in rows}) == 20 and len(decoded) == 4
    assert session.failures() == []


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        (b'{"next": null, "results": [{"id": 1}', False),  # cut short
        (b'\xef\xbb\xbf{"next": null}', False),  # a byte order mark: simdjson would skip it, orjson refuses it
        (b'{"next": "/x", "n": 18446744073709551616, "m": -9223372036854775809}', True),  # simdjson refuses these
        (b'{"next": "/x", "deep": ' + b"[" * 600 + b"]" * 600 + b"}", True),
    ],
)
def test_a_body_is_json_exactly_when_orjson_reads_it(
    lf: ModuleType, monkeypatch: pytest.MonkeyPatch, body: bytes, ok: bool
) -> None:
    monkeypatch.setenv("VCCI_TOKENS", "unused")  # the answers are made here: no tenant, no token
    user, session = user_of(lf, lf.FactorSearchUser)  # whose start sends nothing
    answer = HttpResponse(body, content_type="application/json", headers={"ETag": '"e1"'})
    answers = iter([answer, HttpResponse(status=304, headers={"ETag": '"e1"'})])
    monkeypatch.setattr(session.client, "generic", lambda *args, **kwargs: next(answers))

    reply = user.call("GET", f"{lf.API}/emissions/", name="emissions", conditional=True)

    assert reply.ok == ok
    if not ok:
        assert reply.data is None
        [failure] = session.failures()
        assert "200 with a body that is not JSON" in failure
        return
    assert reply.get("next") == "/x" and reply.data == orjson.loads(body)
    again = user.call("GET", f"{lf.API}/emissions/", name="emissions", conditional=True)
    assert again.status == 304 and again.get("next") == "/x"  # the remembered body, read again
    assert session.failures() == []


@pytest.mark.usefixtures("small_catalogue")
def test_the_erp_client_stores_every_line_it_posts(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    org, _ = tenant
    before = ActivityRecord.objects.for_org(org).count()
    user, session = user_of(lf, lf.ErpClient)

    user.post_batch()

    assert session.failures() == []
    posted = [r for method, _, r in session.sent if method == "POST" and r.status_code == 201]
    assert len(posted) == 1
    stored = json.loads(posted[0].content)
    assert ActivityRecord.objects.for_org(org).count() - before == len(stored)
    assert 50 <= len(stored) <= 500


@pytest.mark.usefixtures("small_catalogue")
def test_the_supplier_admin_deletes_only_suppliers_it_created(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    org, _ = tenant
    user, session = user_of(lf, lf.SupplierMaintenance)
    user.create_and_edit()
    user.create_and_edit()
    created = list(user.created)

    user.rng.random = lambda: 0.0  # always delete when it can
    user.delete_own()
    user.delete_own()

    assert session.failures() == []
    assert user.created == []
    assert not Supplier.objects.filter(pk__in=created).exists()
    assert Supplier.objects.for_org(org).filter(external_id__startswith="DEMO-").count() == 20


@pytest.mark.usefixtures("small_catalogue")
def test_an_admin_never_opens_a_supplier_another_admin_deleted(
    lf: ModuleType, tenant: tuple[Organization, str]
) -> None:
    # Two admins of one organization (found in a 3-minute run: a 404 on GET /suppliers/{id}/).
    first, first_session = user_of(lf, lf.SupplierMaintenance, seed=1)
    second, second_session = user_of(lf, lf.SupplierMaintenance, seed=2)
    first.create_and_edit()
    second.list_suppliers()
    first.rng.random = lambda: 0.0
    first.delete_own()

    for _ in range(30):
        second.view_supplier()
        first.view_supplier()

    assert first_session.failures() == second_session.failures() == []


@pytest.mark.usefixtures("small_catalogue")
def test_an_unexpected_status_is_a_failure_with_the_body(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    user, session = user_of(lf, lf.FactorSearchUser)

    reply = user.call("POST", "/api/v1/calculate/", name="/api/v1/calculate/", body={"category": 99})

    assert not reply.ok and reply.status == 400
    [failure] = session.failures()
    assert "expected 200, got 400" in failure and '"category"' in failure


@pytest.mark.usefixtures("small_catalogue")
def test_a_calculation_batch_with_a_refused_item_is_a_failure(
    lf: ModuleType, tenant: tuple[Organization, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, session = user_of(lf, lf.CalculatorClient)
    user.catalogue()
    session.sent.clear()
    monkeypatch.setattr(lf, "random_calculation", lambda rng, catalogue: {"category": 3, "method": "activity"})

    user.calculate_batch()

    [failure] = session.failures()
    assert "refused" in failure and "activity" in failure


@pytest.mark.usefixtures("small_catalogue")
def test_the_catalogue_file_replaces_the_setup_requests(
    lf: ModuleType, tenant: tuple[Organization, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = tenant
    builder, _ = user_of(lf, lf.CalculatorClient)
    document = lf.build_catalogue_file(lambda _token: builder.fetch, [token])
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(document))
    assert token not in path.read_text()  # organizations are keyed by a digest, not by the credential
    lf.reset()
    monkeypatch.setenv("VCCI_CATALOGUE", str(path))

    user, session = user_of(lf, lf.ErpClient)
    catalogue = user.catalogue()

    assert session.sent == []
    assert len(catalogue.spend) == len(document["spend"]) and len(catalogue.suppliers) == 20
    user.post_batch()
    assert session.failures() == []


def test_tokens_are_spread_round_robin(lf: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCCI_TOKENS", "a, b ,c")
    drawn = [lf.next_token() for _ in range(6)]
    assert sorted(drawn) == ["a", "a", "b", "b", "c", "c"]
    monkeypatch.delenv("VCCI_TOKENS")
    monkeypatch.delenv("VCCI_TOKEN", raising=False)
    with pytest.raises(lf.SetupError, match="VCCI_TOKENS"):
        lf.next_token()


# -- one real run ---------------------------------------------------------------------------------------------


def free_bind() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def database_url_of_this_run() -> str:
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_a_real_run_seeds_serves_loads_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """gunicorn (1 worker) and locust (5 users, 6 s) against this run's database: 0 errors, every file written."""
    call_command("import_factors", stdout=StringIO())
    for key, value in {
        # As make loadtest runs it: the tooling's settings here, the production settings in gunicorn.
        "DJANGO_SETTINGS_MODULE": "vcci.settings_dev",
        "SECRET_KEY": "loadtest-test",
        "DEBUG": "0",
        "DATABASE_URL": database_url_of_this_run(),
        "REDIS_URL": settings.REDIS_URL,
        "DB_POOL_MAX_SIZE": "4",
        "DB_POOL_MIN_SIZE": "1",
        "CACHE_WARM_ON_BOOT": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "prometheus").mkdir()
    out = tmp_path / "out"

    status = loadtest.main(
        [
            "--users", "5", "--spawn-rate", "5", "--duration", "6s", "--orgs", "1", "--org-prefix", "loadtest-e2e",
            "--activities", "200", "--bind", free_bind(), "--workers", "1", "--worker-connections", "20",
            "--collectstatic", "never", "--max-factors", "100", "--out", str(out), "--min-cache-hit-rate", "0.5",
            "--trace",
        ]
    )  # fmt: skip

    printed = capsys.readouterr()
    assert status == 0, printed.out + printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aggregated"]["requests"] > 0 and summary["aggregated"]["error_rate"] == 0
    assert summary["cache"]["status"] == "ok"
    # Both sides' event loops were measured: the worker's (its metrics) and locust's own (its file).
    lag = summary["run"]["event_loop_lag"]
    assert lag["server"]["main"]["ticks"] > 0
    assert lag["load_generator"]["processes"] == 1 and lag["load_generator"]["ticks"] > 0
    assert "event loop lag (how late a ready greenlet ran): server workers p50 <= " in printed.out
    # --trace: every request locust sent was recorded on both sides, and joined by its id. Locust's stats CSV is
    # written once a second and not once more at the end, so it may miss the last second's requests; the trace not.
    traced = summary["run"]["trace"]
    assert traced["requests"] >= summary["aggregated"]["requests"] > 0
    assert sum(group["unrecorded"] for name, group in traced["groups"].items() if name.endswith("all requests")) == 0
    assert (out / "trace.md").read_text().startswith("# Request trace") and "request trace (" in printed.out
    files = ("report.html", "locust_stats.csv", "locust_failures.csv", "gunicorn.log", "catalogue.json", "trace.md")
    for name in files:
        assert (out / name).is_file(), name
    # Nothing left running: the server's port is free again.
    host, port = summary["run"]["host"].removeprefix("http://").split(":")
    with socket.socket() as sock:
        assert sock.connect_ex((host, int(port))) != 0


# -- refusals, timeouts and CPU ----------------------------------------------------------------------------------


def test_refusals_and_timeouts_are_counted_apart_from_what_was_served() -> None:
    endpoints = [
        EndpointStats("GET", "/api/v1/emissions/", 900, 2, 10.0, 50.0, 90.0, 12.0, 400.0, 9.0),
        EndpointStats("GET", "/api/v1/emissions/ (refused)", 60, 0, 1.0, 2.0, 3.0, 1.0, 4.0, 0.6),
        EndpointStats("POST", "/api/v1/activities/ (refused)", 40, 0, 1.0, 2.0, 3.0, 1.0, 60_000.0, 0.4),
    ]
    failures = [
        {"method": "GET", "name": "/api/v1/emissions/", "occurrences": 1, "error": "expected 200, got 500"},
        {"method": "GET", "name": "/api/v1/emissions/", "occurrences": 1, "error": "no response (original=timed out)"},
    ]
    counted = loadtest.outcomes(endpoints, failures)
    assert counted["requests"] == 1000 and counted["refused"] == 100 and counted["failed"] == 2
    assert counted["served"] == 898 and counted["timeouts"] == 1
    assert counted["refused_by_endpoint"] == {"GET /api/v1/emissions/": 60, "POST /api/v1/activities/": 40}
    assert counted["refused_rate"] == pytest.approx(0.1)
    assert counted["served_rps"] == pytest.approx(10.0 * 898 / 1000)
    assert counted["max_ms"] == 60_000.0


def test_cpu_is_reported_in_cores_per_part() -> None:
    before = loadtest.CpuSample(
        at=100.0, server=10.0, load_generator=1.0, bulk_pool=2.0, postgres={7: 5.0, 8: 1.0}, redis={9: 0.5},
        machine_busy=50.0, machine_total=100.0,
    )  # fmt: skip
    after = loadtest.CpuSample(
        # Backend 8 exited (not seen), 10 started during the run (all of its CPU counts).
        at=110.0, server=25.0, load_generator=4.0, bulk_pool=4.5, postgres={7: 9.0, 10: 2.0}, redis={9: 0.7},
        machine_busy=80.0, machine_total=140.0,
    )  # fmt: skip
    report = loadtest.cpu_report(before, after)
    cores = report["machine_cores"]
    assert report["server"] == 1.5 and report["bulk_pool"] == 0.25 and report["load_generator"] == 0.3
    assert report["postgres"] == 0.6 and report["redis"] == 0.02
    assert report["machine_busy"] == pytest.approx(cores * 30 / 40, abs=0.001)


def test_a_real_cpu_sample_sees_this_process() -> None:
    first = loadtest.cpu_sample(os.getpid())
    sum(range(2_000_000))  # some CPU of our own
    second = loadtest.cpu_sample(os.getpid())
    assert second.server > first.server and second.machine_total > first.machine_total
    assert second.bulk_pool == first.bulk_pool == 0.0  # no bulk pool below this process


def test_a_real_cpu_sample_tells_the_bulk_pool_apart() -> None:
    # Burns 0.35 s and asks for 0.3: the kernel's per-process accounting, which the sample reads, is in clock ticks
    # and can trail the child's own clock by one (0.29 once, on a busy machine).
    code = "import time\nend = time.process_time() + 0.35\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    env = {**os.environ, "VCCI_SERVER_ROLE": "bulk"}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 20
        while loadtest.cpu_sample(os.getpid()).bulk_pool < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sample = loadtest.cpu_sample(os.getpid())
        assert 0.3 <= sample.bulk_pool <= sample.server
    finally:
        child.kill()
        child.wait()


def test_a_refusal_is_recorded_under_its_own_name_and_honoured(
    lf: ModuleType, tenant: tuple[Organization, str], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """A 503 with Retry-After is not a failure: the user records it as '<name> (refused)' and waits as told."""
    from perf import admission

    settings.ADMISSION_MAX_IN_FLIGHT = 1
    settings.ADMISSION_QUEUE_WAIT = 0
    settings.ADMISSION_RETRY_AFTER = 2
    settings.ADMISSION_RETRY_AFTER_JITTER = False  # the refusal says 2 s, not a draw of 1 or 2
    admission.reset()
    gate = admission.gate()
    assert gate.enter()  # the one request the worker may run is running
    slept: list[float] = []
    monkeypatch.setattr(lf.gevent, "sleep", slept.append)
    user, session = user_of(lf, lf.FactorSearchUser)
    try:
        reply = user.call("GET", "/api/v1/factors/", name="/api/v1/factors/")
    finally:
        gate.leave()
        admission.reset()
    [(method, _, response)] = session.sent
    assert method == "GET" and (reply.ok, reply.status) == (False, 503)
    assert response.outcome == "success" and response.request_meta["name"] == "/api/v1/factors/ (refused)"
    assert slept == [2.0]
    assert session.failures() == []


def test_a_traced_request_carries_its_id_and_is_recorded_as_locust_timed_it(
    lf: ModuleType, tenant: tuple[Organization, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    recorder = lf.RequestTrace(str(tmp_path / "client-1.tsv"))
    monkeypatch.setattr(lf, "_trace", recorder)
    user, session = user_of(lf, lf.FactorSearchUser)
    for _ in range(2):
        assert user.call("GET", "/api/v1/factors/", name="/api/v1/factors/").ok
    meta = [response.request_meta for _, _, response in session.sent]
    ids = [m["context"][lf.TRACE_ID] for m in meta]
    assert len(set(ids)) == 2 and all(i.startswith(f"t{os.getpid()}-") for i in ids)
    # The server echoes the id it was sent: the request carried it.
    assert [response.headers["X-Request-ID"] for _, _, response in session.sent] == ids
    # What locust's request event then hands the listener (its copy of the context, the final name, the timing).
    answer = session.sent[0][2]
    lf.trace_request("GET", "/api/v1/factors/", response_time=250.0, context=meta[0]["context"], response=answer)
    lf.trace_request("GET", "/api/v1/factors/ (refused)", response_time=2.0, context=meta[1]["context"], exception=None)
    lf.trace_request("GET", "/untraced", response_time=1.0, context={})  # a request sent without the trace
    recorder.close()
    first, second = [line.split("\t") for line in (tmp_path / "client-1.tsv").read_text().splitlines()]
    answered = meta[0]["context"][lf.TRACE_ANSWERED]
    assert first[:2] == [ids[0], "GET /api/v1/factors/"] and float(first[3]) == pytest.approx(answered, abs=1e-6)
    assert float(first[3]) - float(first[2]) == pytest.approx(0.25, abs=1e-5)  # sent: answered less the response time
    assert first[4:] == ["200", "0"]
    assert second[1] == "GET /api/v1/factors/ (refused)" and second[4:] == ["0", "0"]


def test_without_a_trace_no_request_id_is_sent(lf: ModuleType, tenant: tuple[Organization, str]) -> None:
    assert lf._trace is None
    user, session = user_of(lf, lf.FactorSearchUser)
    assert user.call("GET", "/api/v1/factors/", name="/api/v1/factors/").ok
    [(_, _, response)] = session.sent
    assert response.request_meta["context"] == {}
    # The server made the request's id itself (a UUID's hex), as for any client that sends none.
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_a_503_without_retry_after_is_a_failure(lf: ModuleType) -> None:
    response = SimpleNamespace(status_code=503, headers={})
    assert lf.refused_for(response) is None
    assert (
        lf.refused_for(SimpleNamespace(status_code=503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))
        is None
    )
    assert lf.refused_for(SimpleNamespace(status_code=429, headers={"Retry-After": "3"})) == 3.0
    assert lf.refused_for(SimpleNamespace(status_code=503, headers={"Retry-After": "3600"})) == lf.MAX_RETRY_AFTER
    assert lf.refused_for(SimpleNamespace(status_code=500, headers={"Retry-After": "3"})) is None


def test_the_tree_watch_counts_a_child_that_exits_before_it_stops() -> None:
    burn = "sum(range(20_000_000))"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"]
    )
    watch = loadtest.TreeWatch(parent.pid, interval=0.05)
    parent.wait()
    assert watch.stop() > 0
    assert len(watch.seen) >= 2  # the parent and the child that burnt the CPU, read while it ran


# -- event loop lag -------------------------------------------------------------------------------------------------


def test_lag_quantiles_are_the_bounds_they_fall_under() -> None:
    bounds = (1, 10, 100, 1000)
    # 100 measurements: 60 within 1 ms, 38 within 10, 1 within 1 s, 1 above every bound.
    lag = loadtest.lag_summary(bounds, [60, 38, 0, 1, 1], max_ms=2_718.0)
    assert lag["ticks"] == 100 and lag["p50_ms"] == 1 and lag["p99_ms"] == 1000
    assert lag["over_100ms"] == pytest.approx(0.02) and lag["max_ms"] == 2_718.0
    assert loadtest.lag_summary(bounds, [0, 0, 0, 0, 1])["p99_ms"] is None  # above the last bound
    assert (
        loadtest._lag_text(loadtest.lag_summary(bounds, [0, 0, 0, 0, 1]))
        == "p50 > 1,000 / p99 > 1,000 ms, 100.00 % over 100 ms"
    )
    assert loadtest._lag_text(loadtest.lag_summary(bounds, [0, 0, 0, 0, 0])) == "no measurement"


def _lag_exposition(role_counts: dict[str, list[int]]) -> str:
    """A /metrics text with vcci_event_loop_lag_seconds buckets (cumulative) at 0.01, 0.1, 1 s and +Inf."""
    lines = ["# TYPE vcci_event_loop_lag_seconds histogram"]
    for role, counts in role_counts.items():
        running = 0
        for le, count in zip(("0.01", "0.1", "1.0", "+Inf"), counts, strict=True):
            running += count
            lines.append(f'vcci_event_loop_lag_seconds_bucket{{le="{le}",role="{role}"}} {running}')
        lines.append(f'vcci_event_loop_lag_seconds_count{{role="{role}"}} {running}')
        lines.append(f'vcci_event_loop_lag_seconds_sum{{role="{role}"}} 1.0')
    return "\n".join(lines) + "\n"


def test_the_servers_lag_is_what_the_run_added_per_role() -> None:
    before = _lag_exposition({"main": [500, 0, 0, 0]})
    after = _lag_exposition({"main": [540, 50, 10, 0], "bulk": [0, 0, 9, 1]})

    lag = loadtest.server_loop_lag(before, after)

    assert lag["main"]["ticks"] == 100 and lag["main"]["p50_ms"] == 100 and lag["main"]["p99_ms"] == 1000
    assert lag["main"]["over_100ms"] == pytest.approx(0.1)
    assert lag["bulk"]["ticks"] == 10 and lag["bulk"]["p99_ms"] is None and lag["bulk"]["over_100ms"] == 1.0
    assert loadtest.server_loop_lag(None, after) == {}


def test_the_load_generators_processes_are_merged(lf: ModuleType, tmp_path: Path) -> None:
    assert loadtest.load_generator_loop_lag(tmp_path) is None
    first, second = lf.LoopLag(str(tmp_path / "locust-1.json")), lf.LoopLag(str(tmp_path / "locust-2.json"))
    for lag_ms in (0.4, 3.0, 3.0):
        first.observe(lag_ms)
    second.observe(180.0)
    second.observe(9_000.0)  # above every range
    first.write()
    second.write()

    merged = loadtest.load_generator_loop_lag(tmp_path)

    assert merged is not None
    assert merged["processes"] == 2 and merged["ticks"] == 5 and merged["max_ms"] == 9_000.0
    assert merged["p50_ms"] == 5 and merged["p99_ms"] is None and merged["over_100ms"] == pytest.approx(0.4)
    document = json.loads((tmp_path / "locust-1.json").read_text())
    assert document["bounds_ms"] == list(lf.LOOP_LAG_BOUNDS_MS) and sum(document["counts"]) == 3
    # Ranges that differ cannot be merged.
    (tmp_path / "locust-3.json").write_text(json.dumps({"bounds_ms": [1], "counts": [1, 0], "max_ms": 0.5}))
    with pytest.raises(loadtest.RunError, match="ranges differ"):
        loadtest.load_generator_loop_lag(tmp_path)


def test_the_locustfiles_ticks_are_counted_and_written_every_few(lf: ModuleType, tmp_path: Path) -> None:
    lag = lf.LoopLag(str(tmp_path / "locust-1.json"))
    for _ in range(lf.LOOP_LAG_WRITE_EVERY - 1):
        lag.tick(0.0004)
    assert not (tmp_path / "locust-1.json").exists()
    lag.tick(0.3)  # seconds, as perf.looplag.run observes them
    document = json.loads((tmp_path / "locust-1.json").read_text())
    assert sum(document["counts"]) == lf.LOOP_LAG_WRITE_EVERY and document["max_ms"] == 300.0


def test_the_locustfiles_ranges_are_the_servers_buckets(lf: ModuleType) -> None:
    from perf.metrics import EVENT_LOOP_LAG_BUCKETS

    assert [bound / 1000 for bound in lf.LOOP_LAG_BOUNDS_MS] == pytest.approx(EVENT_LOOP_LAG_BUCKETS[:-1])
