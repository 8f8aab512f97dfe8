"""The bench app: benchmark and load-test tooling (bench.db, bench.cache, bench.loadtest, bench.report).

Installed only by the development and test settings (vcci.settings_dev, vcci.settings_test), never in
production: its commands write throwaway users and rolled-back data, and nothing a server needs lives here.
"""

from django.apps import AppConfig


class BenchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "bench"
