"""The Celery application: workers run the jobs of ``emissions.jobs`` (docs/jobs.md).

Start a worker with ``make worker`` (or ``DB_POOL=false celery -A vcci worker``): the prefork pool, one process per
core, suits the CPU-bound calculation; gevent would run a chunk's calculation on one core with every other greenlet of
the process waiting. Workers open plain database connections, closed after each task by Celery's Django fix-up, not
the web's connection pool: a pool per forked process would hold idle connections the web servers need.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vcci.settings")

app = Celery("vcci")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def refuse_pooled_connections(**kwargs: Any) -> None:
    """A worker must not run with the web's connection pool (see the module docstring): stop with the fix."""
    from django.conf import settings

    if "pool" in settings.DATABASES["default"].get("OPTIONS", {}):
        # SystemExit, not an exception: Celery logs a signal handler's exceptions and starts anyway.
        raise SystemExit("Start Celery workers with DB_POOL=false (plain connections, closed after tasks).")
