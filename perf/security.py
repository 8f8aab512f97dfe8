"""The Content-Security-Policy header at the cost of one header assignment per response.

django-csp's ``CSPMiddleware`` builds the policy string from the settings for every response, twice (the
enforced and the report-only policy): some 80 microseconds a response, measured, a noticeable share of a
cached API read. The policy only changes with a view's decorator (``csp_update`` and friends), a nonce, or
the settings. ``CSPMiddleware`` here builds the settings' policy once and sets it on every response that
has none of those; any other response (a decorated view, a nonce used, a report-only policy configured,
Django's debug pages) goes through django-csp's own code, so its behaviour is unchanged.
"""

from __future__ import annotations

import http.client
from typing import Any

from csp.constants import HEADER
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# What django-csp's decorators put on a response: each makes the policy the view's own.
_PER_VIEW = (
    "_csp_config",
    "_csp_update",
    "_csp_replace",
    "_csp_exempt",
    "_csp_config_ro",
    "_csp_update_ro",
    "_csp_replace_ro",
    "_csp_exempt_ro",
)
_DEBUG_EXEMPT = (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND)


class CSPMiddleware(DjangoCSPMiddleware):
    """django-csp's middleware, the settings' policy built once (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built_from: object = None
        self._policy = ""

    def _settings_policy(self) -> str:
        config = getattr(settings, "CONTENT_SECURITY_POLICY", None)
        if config is not self._built_from:  # built once per settings object (tests override them)
            self._policy, self._built_from = build_policy(), config
        return self._policy

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if (
            getattr(settings, "CONTENT_SECURITY_POLICY_REPORT_ONLY", None)
            or getattr(settings, "CONTENT_SECURITY_POLICY", {}).get("EXCLUDE_URL_PREFIXES")
            or getattr(request, "_csp_nonce", None) is not None
            or (settings.DEBUG and response.status_code in _DEBUG_EXEMPT)
            or HEADER in response
            or any(getattr(response, name, None) is not None for name in _PER_VIEW)
        ):
            return super().process_response(request, response)
        policy = self._settings_policy()
        if policy:
            response[HEADER] = policy
        # As django-csp does: a nonce asked for after the header was written would not be in it, so it raises.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
