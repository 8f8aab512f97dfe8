"""Settings for the test suite: the real services (PostgreSQL and Redis) by default.

Override ``DATABASE_URL`` / ``REDIS_URL`` to point elsewhere; ``tests/conftest.py``
fails the run when either service is unreachable instead of skipping.
"""

import os

os.environ.setdefault("SECRET_KEY", "vcci-test-only-secret-key")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/vcci")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from vcci.settings import *  # noqa: F403

# Hashing speed matters only in tests, where every user is throwaway.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The manifest storage needs ``collectstatic`` first; tests render admin pages without it.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
