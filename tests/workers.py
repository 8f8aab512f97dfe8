"""A real Celery worker for the tests: a separate process on the real broker (Redis) and the test database.

Tests that use it need committed data (``transactional_db``): the worker has its own database connection. The
worker consumes only this test run's queue (``CELERY_QUEUE``, set per test database by ``vcci.settings_test``), so
test runs sharing a Redis server never take each other's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from django.conf import settings
from django.db import connection
from zeal import zeal_ignore

from emissions.models import Job

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0


class Worker:
    """``celery -A vcci worker`` (prefork, ``concurrency`` processes) started against the test database."""

    def __init__(self, concurrency: int = 2) -> None:
        self.concurrency = concurrency
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()

    def start(self) -> Worker:
        db = connection.settings_dict
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "vcci.settings_test"),
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "DB_POOL": "false",
            "CELERY_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "vcci",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(READY_TIMEOUT):
            self.stop()
            raise RuntimeError("The Celery worker did not start:\n" + "".join(self.output[-50:]))
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if " ready." in line:
                self._ready.set()

    def children(self) -> list[psutil.Process]:
        """The pool's processes, which run the tasks."""
        assert self.process is not None
        return psutil.Process(self.process.pid).children()

    def kill_child_running(self, predicate: Callable[[], bool], timeout: float = 60.0) -> int:
        """Wait until ``predicate()`` holds (e.g. a chunk has started), then SIGKILL every pool process; return how
        many were killed. The worker's main process stays and forks replacements, as after an out-of-memory kill."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("The condition to kill on never held:\n" + "".join(self.output[-50:]))
            time.sleep(0.02)
        killed = 0
        for child in self.children():
            child.send_signal(signal.SIGKILL)
            killed += 1
        return killed

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # Warm shutdown first (finishes the task at hand), then no mercy.
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            self.process.kill()
            self.process.wait()


def wait_for_job(job_id: int, timeout: float = 120.0) -> Job:
    """The job once it has finished (any final state); ``AssertionError`` with its progress if it does not in time."""
    deadline = time.monotonic() + timeout
    while True:
        with zeal_ignore():  # polling one row is not an N+1
            job = Job.objects.get(pk=job_id)
        if job.finished:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Job {job_id} did not finish in {timeout} s: {job.state}, {job.chunks_done}/{job.chunks_total}"
            )
        time.sleep(0.05)
