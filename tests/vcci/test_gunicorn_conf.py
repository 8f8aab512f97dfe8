"""vcci/gunicorn.conf.py: the master can read it without Django, its post_worker_init hook never fails a worker,
and post_request yields under gevent."""

from __future__ import annotations

import logging
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

from gunicorn.config import Config

import vcci

CONF = Path(vcci.__file__).with_name("gunicorn.conf.py")


class StubWorker:
    def __init__(self) -> None:
        self.log = logging.getLogger("tests.vcci.gunicorn")


def conf() -> dict[str, Any]:
    return runpy.run_path(str(CONF))


def test_reading_the_file_imports_no_django():
    # A fresh interpreter, as the master reads it: importing Django there would defeat gevent's patching.
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'psycopg', 'perf', 'emissions')))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(CONF)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_gunicorn_accepts_the_hook():
    settings = conf()
    config = Config()
    for name, value in settings.items():
        if name in config.settings:
            config.set(name, value)
    assert config.post_worker_init is settings["post_worker_init"]
    assert config.preload_app is False


def test_hook_starts_the_warm_up_with_the_worker(monkeypatch):
    started = []
    monkeypatch.setattr("perf.warm.warm_on_boot", started.append)
    worker = StubWorker()
    conf()["post_worker_init"](worker)
    assert started == [worker]


def test_hook_swallows_and_logs_a_failure_to_start(monkeypatch, caplog):
    def broken(worker: Any) -> None:
        raise RuntimeError("no threads left")

    monkeypatch.setattr("perf.warm.warm_on_boot", broken)
    with caplog.at_level(logging.ERROR, logger="tests.vcci.gunicorn"):
        conf()["post_worker_init"](StubWorker())
    [record] = caplog.records
    assert record.getMessage().startswith("Could not start the cache warm-up")
    assert record.exc_info and isinstance(record.exc_info[1], RuntimeError)


def test_post_request_yields_to_the_other_greenlets_under_gevent(monkeypatch) -> None:
    import gevent

    yields: list[float] = []
    monkeypatch.setattr(gevent, "sleep", lambda seconds=0: yields.append(seconds))
    gevent_worker = type("GeventWorker", (), {"__module__": "gunicorn.workers.ggevent", "wsgi": object()})()
    sync_worker = type("SyncWorker", (), {"__module__": "gunicorn.workers.sync", "wsgi": object()})()
    post_request = conf()["post_request"]
    post_request(sync_worker, None, {}, None)
    assert yields == []
    post_request(gevent_worker, None, {}, None)
    assert yields == [0]
