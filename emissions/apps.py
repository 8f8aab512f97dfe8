from django.apps import AppConfig


class EmissionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "emissions"

    def ready(self) -> None:
        # Saves and deletes outside the services (the admin, a shell) invalidate the cache too.
        from emissions.cache import connect_signals

        connect_signals()
