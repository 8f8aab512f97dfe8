"""The perf app: serving and database-performance helpers (see perf.db, perf.middleware, perf.metrics)."""

from django.apps import AppConfig


class PerfConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "perf"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from perf import checks  # noqa: F401  (registers the system checks)
        from perf.db import install_execute_wrapper
        from perf.metrics import install as install_metrics

        # The slow-query wrapper goes on every connection Django opens, whoever opens it: a
        # request, a management command, a shell or a worker thread. A middleware alone would
        # miss everything that is not a request, and wrapping BaseCommand.execute would miss
        # threads and shells; connection_created fires in all of them, before the first query.
        connection_created.connect(install_execute_wrapper, dispatch_uid="perf.slow_query_wrapper")
        # Every cache event also becomes a Prometheus sample (vcci_cache_*). Here, once per process, so
        # that requests, management commands and the warm-up greenlet are all counted.
        install_metrics()
