"""Settings for development and benchmarking: the production settings plus the ``bench`` app.

``bench`` holds the benchmark and load-test tooling (``manage.py bench_db``, ``manage.py bench_cache``,
``python -m bench.loadtest``, ``python -m bench.report``); production does not install it. Nothing else
differs from ``vcci.settings``, so that what the benchmarks measure is the production configuration (a
test checks it). Use it with ``DJANGO_SETTINGS_MODULE=vcci.settings_dev``, as the Makefile's bench targets do.
"""

from vcci.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
