"""System checks for serving: catch a missing ``collectstatic`` before a page fails on it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.checks import CheckMessage, Tags, Warning, register


# A deployment check (``manage.py check --deploy``): during ``make run`` the manifest is written
# only just before serving, so warning on every earlier command would be noise.
@register(Tags.staticfiles, deploy=True)
def manifest_present(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """With hashed (manifest) static files, every admin or API-docs page needs ``collectstatic`` first."""
    if settings.DEBUG or not isinstance(staticfiles_storage, ManifestFilesMixin):
        return []
    if staticfiles_storage.exists(staticfiles_storage.manifest_name):
        return []
    return [
        Warning(
            "The static files manifest is missing, so admin and API-docs pages will fail.",
            hint="Run `python manage.py collectstatic` (make run does) before serving.",
            id="perf.W001",
        )
    ]
