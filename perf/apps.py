from django.apps import AppConfig


class PerfConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "perf"

    def ready(self) -> None:
        from perf import checks  # noqa: F401  (registers the system checks)
