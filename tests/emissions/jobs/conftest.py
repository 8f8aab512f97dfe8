"""Fixtures of the job tests: the staging table of the test kind (the real worker, ``celery_worker``, is the suite's:
tests/conftest.py)."""

from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture
def sum_staging(transactional_db: None) -> None:
    """``tests.emissions.jobs.sum_kind``'s staging table, empty (the database flush between tests does not know it)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS test_sum_staged (job_id bigint, chunk int, total bigint)")
        cursor.execute("DELETE FROM test_sum_staged")
