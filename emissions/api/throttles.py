"""The API's request limits per token, per organization and for bulk work (``perf.throttle`` counts them).

Scopes and their rates: ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (vcci/settings.py, from the environment);
README, "Limits". Every class here reads only the caller and the view's declarations, so the fast path
(``perf.fastpath``) evaluates them on cached GETs as DRF does.
"""

from __future__ import annotations

from typing import Any

from perf.admission import is_heavy
from perf.throttle import CountedThrottle


def _member(request: Any) -> Any:
    """The caller's membership, or None (anonymous, or a user of no organization: refused by ``HasOrganization``,
    which DRF checks before throttles)."""
    user = request.user
    return getattr(user, "membership", None) if user and user.is_authenticated else None


class TokenThrottle(CountedThrottle):
    """Requests per API token (scope ``user``). DRF's tokens are one per user, so the user's id names it (a session
    of the browsable API counts with the same user's token)."""

    scope = "user"

    def caller(self, request: Any, view: Any) -> str | None:
        user = request.user
        return str(user.pk) if user and user.is_authenticated else None


class OrganizationThrottle(CountedThrottle):
    """Requests per organization, all its members' tokens together (scope ``org``)."""

    scope = "org"

    def caller(self, request: Any, view: Any) -> str | None:
        membership = _member(request)
        return None if membership is None else str(membership.organization_id)


class BulkThrottle(CountedThrottle):
    """Bulk work per organization (scope ``bulk``): the requests its view declares heavy (``perf.admission.heavy``:
    activity lists and calculation batches of 16 KiB or more, CSV exports), the ones the bulk pool serves."""

    scope = "bulk"

    def caller(self, request: Any, view: Any) -> str | None:
        if not is_heavy(type(view), request.method or "", request.META):
            return None
        membership = _member(request)
        return None if membership is None else str(membership.organization_id)
