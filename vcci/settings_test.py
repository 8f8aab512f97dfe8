"""Settings for the test suite: the real services (PostgreSQL and Redis) by default.

Override ``DATABASE_URL`` / ``REDIS_URL`` to point elsewhere; ``tests/conftest.py``
fails the run when either service is unreachable instead of skipping.
"""

import os
import tempfile
from urllib.parse import urlsplit

os.environ.setdefault("SECRET_KEY", "vcci-test-only-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vcci")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
# Each test database its own job queue: test runs sharing a Redis server (and a developer's own worker) never take
# each other's tasks. Set here, in the environment, so that the workers the tests start inherit it (tests/workers.py).
os.environ.setdefault("CELERY_QUEUE", "vcci-test-" + urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/"))

# Each test database its own folder of import files, shared with the workers the tests start (they inherit it).
os.environ.setdefault(
    "IMPORTS_DIR",
    os.path.join(tempfile.gettempdir(), "vcci-imports-" + urlsplit(os.environ["DATABASE_URL"]).path.lstrip("/")),
)

# The development settings: production's plus the bench app, whose commands the suite tests too.
from vcci.settings_dev import *  # noqa: F403

# Hashing speed matters only in tests, where every user is throwaway.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The manifest storage needs ``collectstatic`` first; tests render admin pages without it.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405

# N+1 detection (django-zeal) for the whole suite: a lazy related-object load repeated from the
# same line inside one request, command or test raises ``zeal.NPlusOneError`` and fails the run.
# The middleware gives every request its own context (two requests in one test are not one N+1);
# ``tests/conftest.py`` wraps each test in ``zeal_context`` so code called without a request
# (services, querysets, the test's own code) is checked too; ``tests/helpers.py`` gives each
# management command run by a test its own context. The middleware goes first so that the other
# middleware is covered as well.
INSTALLED_APPS = [*INSTALLED_APPS, "zeal"]  # noqa: F405
MIDDLEWARE = ["zeal.middleware.zeal_middleware", *MIDDLEWARE]  # noqa: F405
ZEAL_RAISE = True
# ``ZEAL_SHOW_ALL_CALLERS=1`` prints every call stack of a reported N+1 (off by default: it walks the stack per load).
ZEAL_SHOW_ALL_CALLERS = os.environ.get("ZEAL_SHOW_ALL_CALLERS") == "1"

# A job kind for the runner's own tests (tests/emissions/jobs/sum_kind.py), known to the workers the tests start.
JOB_KIND_MODULES = {**JOB_KIND_MODULES, "test-sum": "tests.emissions.jobs.sum_kind"}  # noqa: F405
# Each step of a job run in-process is a unit of work of its own for the N+1 check, as a task on a worker is.
JOB_STEP_CONTEXT = "tests.helpers.unit_of_work"
