"""Fixtures of the job tests: the staging table of the test kind, and a real worker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection

from tests.workers import Worker


@pytest.fixture
def sum_staging(transactional_db: None) -> None:
    """``tests.emissions.jobs.sum_kind``'s staging table, empty (the database flush between tests does not know it)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS test_sum_staged (job_id bigint, chunk int, total bigint)")
        cursor.execute("DELETE FROM test_sum_staged")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[Worker]:
    """One worker (two pool processes) for the session, on the test database and this run's queue.

    Tests may kill its pool processes: its main process replaces them, as it would in production."""
    worker = Worker(concurrency=2).start()
    yield worker
    worker.stop()
