from django.apps import AppConfig


class EmissionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "emissions"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        # Saves and deletes outside the services (the admin, a shell) invalidate the cache too. Importing
        # emissions.cache also registers the domain's cache resources with perf.cache.
        # The OpenAPI field extensions (what the text and decimal fields refuse) register on import.
        import emissions.api.schema  # noqa: F401
        from emissions import audit
        from emissions.cache import connect_signals
        from emissions.runtime import register

        connect_signals()
        # The audit context (who, which request, which job) goes with the writes of every connection, as the
        # slow-query wrapper does (perf.apps): see emissions.audit.
        connection_created.connect(audit.install, dispatch_uid="emissions.audit_wrapper")
        # What the runtime layer (perf) needs of the domain: its organizations and its warm-up.
        register()
