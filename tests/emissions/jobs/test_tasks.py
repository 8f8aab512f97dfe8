"""The Celery tasks around the runner (``emissions.tasks``), run eagerly in this process with the test kind: which
errors are retried, which fail the job, and what a broker that is down does after a commit; their time limits."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any

import kombu.exceptions
import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError
from psycopg.errors import QueryCanceled

import vcci.settings
from emissions import tasks
from emissions.jobs import runner
from emissions.models import Job, JobChunk
from tests.factories import OrganizationFactory
from tests.helpers import unit_of_work

pytestmark = pytest.mark.usefixtures("sum_staging")


def make_job(**params: object) -> Job:
    # Created directly: job_submit would also send the plan message.
    return Job.objects.create(organization=OrganizationFactory.create(), kind="test-sum", params=params)


def planned(**params: object) -> Job:
    job = make_job(**params)
    with unit_of_work():
        runner.job_plan(job.pk)
    return job


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """The messages the tasks send, recorded instead of published (no worker consumes them here)."""
    messages: list[tuple[str, tuple[Any, ...]]] = []
    for task in (tasks.plan_job, tasks.run_chunk, tasks.finish_job):
        monkeypatch.setattr(task, "delay", lambda *args, _name=task.name: messages.append((_name, args)))
    return messages


def broker_down(*args: object) -> None:
    raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def raising_once(exc: BaseException, then: Callable[..., Any]) -> Callable[..., Any]:
    """``then``, except that the first call raises ``exc``; the calls are counted in ``.calls``."""

    def call(*args: Any) -> Any:
        call.calls += 1  # type: ignore[attr-defined]
        if call.calls == 1:  # type: ignore[attr-defined]
            raise exc
        return then(*args)

    call.calls = 0  # type: ignore[attr-defined]
    return call


def statement_timeout() -> OperationalError:
    """What Django raises when the server cancels a statement: its ``OperationalError`` from psycopg's."""
    error = OperationalError("canceling statement due to statement timeout")
    error.__cause__ = QueryCanceled("canceling statement due to statement timeout")
    return error


def test_a_chunk_cancelled_by_its_statement_timeout_fails_the_job_without_retrying(
    settings: Any, sent: list[tuple[str, tuple[Any, ...]]]
) -> None:
    settings.JOB_CHUNK_STATEMENT_TIMEOUT_MS = 100
    job = planned(numbers=[1], per_chunk=1, sleep=5)  # a pg_sleep the server cancels
    with unit_of_work():
        tasks.run_chunk.apply(args=(job.pk, 0))
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.errors[-1]["detail"] == (
        "vcci.jobs.chunk failed: StatementCancelled: canceling statement due to statement timeout"
    )
    # Retrying would only run as long again: one start.
    assert JobChunk.objects.get(job=job, index=0).attempts == 1
    assert sent == []


def test_a_finish_cancelled_by_its_statement_timeout_fails_the_job_without_retrying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = planned(numbers=[1], per_chunk=1)
    with unit_of_work():
        runner.chunk_run(job.pk, 0)
    finish = raising_once(statement_timeout(), runner.job_finish)
    monkeypatch.setattr(runner, "job_finish", finish)
    with unit_of_work():
        tasks.finish_job.apply(args=(job.pk,))
    assert finish.calls == 1  # type: ignore[attr-defined]
    job.refresh_from_db()
    assert job.state == Job.State.FAILED
    assert job.errors[-1]["detail"].startswith("vcci.jobs.finish failed: StatementCancelled: canceling statement")


def test_a_lost_connection_is_retried(monkeypatch: pytest.MonkeyPatch, sent: list[tuple[str, tuple[Any, ...]]]) -> None:
    job = planned(numbers=[1], per_chunk=1)
    lost = OperationalError("server closed the connection unexpectedly")
    lost.__cause__ = psycopg.OperationalError("server closed the connection unexpectedly")
    run = raising_once(lost, runner.chunk_run)
    monkeypatch.setattr(runner, "chunk_run", run)
    with unit_of_work():
        tasks.run_chunk.apply(args=(job.pk, 0))  # eagerly: the retry runs at once
    assert run.calls == 2  # type: ignore[attr-defined]
    job.refresh_from_db()
    assert (job.state, job.chunks_done) == ("running", 1)
    assert sent == [("vcci.jobs.finish", (job.pk,))]


def test_a_broker_down_after_the_last_chunk_committed_leaves_the_job_to_the_resume(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = planned(numbers=[1, 2], per_chunk=2)
    monkeypatch.setattr(tasks.finish_job, "delay", broker_down)
    with unit_of_work():
        tasks.run_chunk.apply(args=(job.pk, 0))
    job.refresh_from_db()
    assert (job.state, job.chunks_done) == ("running", 1)  # not failed: its work is committed
    assert f"job {job.pk}: its next message could not be sent" in caplog.text
    [resumable] = [r for r in runner.jobs_resumable() if r.job_id == job.pk]
    assert (resumable.pending, resumable.finish) == ([], True)


def test_a_broker_down_while_planning_sends_the_chunks_leaves_the_job_to_the_resume(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job(numbers=[1, 2, 3], per_chunk=1)
    monkeypatch.setattr(tasks.run_chunk, "delay", broker_down)
    with unit_of_work():
        tasks.plan_job.apply(args=(job.pk,))
    job.refresh_from_db()
    assert (job.state, job.chunks_total) == ("running", 3)
    assert f"job {job.pk}: its next message could not be sent" in caplog.text
    [resumable] = [r for r in runner.jobs_resumable() if r.job_id == job.pk]
    assert (resumable.pending, resumable.finish) == ([0, 1, 2], False)


def test_planning_and_finishing_have_the_longer_time_limit() -> None:
    assert tasks.plan_job.time_limit == tasks.finish_job.time_limit == django_settings.JOB_FINISH_TIME_LIMIT
    assert django_settings.JOB_FINISH_TIME_LIMIT > django_settings.JOB_CHUNK_TIME_LIMIT
    # Chunks keep the default limit (CELERY_TASK_TIME_LIMIT).
    assert tasks.run_chunk.time_limit in (None, django_settings.JOB_CHUNK_TIME_LIMIT)
    assert django_settings.CELERY_TASK_TIME_LIMIT == django_settings.JOB_CHUNK_TIME_LIMIT


JOB_TIMING_KEYS = (
    "JOB_CHUNK_TIME_LIMIT",
    "JOB_FINISH_TIME_LIMIT",
    "JOB_CHUNK_STATEMENT_TIMEOUT_MS",
    "JOB_STATEMENT_TIMEOUT_MS",
    "CELERY_VISIBILITY_TIMEOUT",
)


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """vcci/settings.py executed afresh with these job timings in the environment (the others unset)."""
    for key in JOB_TIMING_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("vcci_job_settings_probe", vcci.settings.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_default_timings_nest(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings_with(monkeypatch)
    assert loaded.JOB_CHUNK_STATEMENT_TIMEOUT_MS < loaded.JOB_CHUNK_TIME_LIMIT * 1000
    assert loaded.JOB_STATEMENT_TIMEOUT_MS < loaded.JOB_FINISH_TIME_LIMIT * 1000
    assert loaded.CELERY_VISIBILITY_TIMEOUT > loaded.JOB_FINISH_TIME_LIMIT > loaded.JOB_CHUNK_TIME_LIMIT
    assert loaded.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == loaded.CELERY_VISIBILITY_TIMEOUT


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOB_CHUNK_STATEMENT_TIMEOUT_MS": "600000"}, "JOB_CHUNK_STATEMENT_TIMEOUT_MS must be shorter"),
        ({"JOB_FINISH_TIME_LIMIT": "1200"}, "JOB_STATEMENT_TIMEOUT_MS must be shorter than JOB_FINISH_TIME_LIMIT"),
        ({"CELERY_VISIBILITY_TIMEOUT": "1200"}, "CELERY_VISIBILITY_TIMEOUT must be longer"),
    ],
)
def test_timings_that_do_not_nest_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        settings_with(monkeypatch, **env)
