"""System checks: a missing ``collectstatic`` before a page fails on it; a ``CACHE_MAX_AGE`` key no app registered; a
``Retry-After`` that meets the keep-alive."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.checks import CheckMessage, Tags, Warning, register

from perf.admission import KEEPALIVE_MARGIN, keepalive_band, reachable_delays, settings_backoff
from perf.cache import resources


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


@register(Tags.caches)
def max_age_resources(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every ``CACHE_MAX_AGE`` key is a registered cache resource: a misspelt one would silently set no max-age."""
    unknown = sorted(set(settings.CACHE_MAX_AGE) - set(resources()))
    return [
        Warning(
            f"CACHE_MAX_AGE names {name!r}, which no installed app registers as a cache resource.",
            hint=f"Registered resources: {', '.join(resources())}.",
            id="perf.W002",
        )
        for name in unknown
    ]


@register()
def retry_after_keepalive(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """No ``Retry-After`` the workers can give is within ``KEEPALIVE_MARGIN`` seconds of ``GUNICORN_KEEPALIVE``.

    A client that honours it sends again about when gunicorn closes its idle connection, and a request sent at the
    moment of the close gets no answer: clients retry a GET on a new connection, never a POST (vcci/gunicorn.conf.py).
    """
    keepalive = settings.GUNICORN_KEEPALIVE
    given = reachable_delays(settings_backoff())
    # A 503 for a database outage (perf.errors.unavailable) says ADMISSION_RETRY_AFTER as it is.
    given.add(settings.ADMISSION_RETRY_AFTER)
    band = keepalive_band(keepalive)
    near = sorted(delay for delay in given if delay in band)
    if not near:
        return []
    return [
        Warning(
            f"Refused clients can be told to come back after {', '.join(map(str, near))} s, within "
            f"{KEEPALIVE_MARGIN} s of GUNICORN_KEEPALIVE ({keepalive} s): a POST sent as the idle connection closes "
            "fails.",
            hint="Change ADMISSION_RETRY_AFTER, ADMISSION_RETRY_AFTER_MAX or GUNICORN_KEEPALIVE (the delays are "
            "ADMISSION_RETRY_AFTER doubled up to the maximum and halved back; with ADMISSION_RETRY_AFTER_JITTER each "
            "refusal is told a value from the upper half of one, but those near the keep-alive).",
            id="perf.W003",
        )
    ]
