from django.apps import AppConfig


class EmissionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "emissions"

    def ready(self) -> None:
        # Saves and deletes outside the services (the admin, a shell) invalidate the cache too. Importing
        # emissions.cache also registers the domain's cache resources with perf.cache.
        # The OpenAPI field extensions (what the text and decimal fields refuse) register on import.
        import emissions.api.schema  # noqa: F401
        from emissions.cache import connect_signals
        from emissions.runtime import register

        connect_signals()
        # What the runtime layer (perf) needs of the domain: its organizations and its warm-up.
        register()
