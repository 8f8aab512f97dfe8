"""Tenancy gate: an API caller must belong to an organization."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from emissions.models import Organization
from perf.fastpath import caller_only


def request_org(request: Request) -> Organization:
    """The caller's organization. Precondition: ``HasOrganization`` has passed."""
    return request.user.membership.organization  # type: ignore[union-attr]


def request_org_id(request: Request) -> int:
    """The caller's organization id, without loading the organization row.

    Read endpoints only need the id to scope their querysets, so this saves one query per
    request. Precondition: ``HasOrganization`` has passed (the membership is then cached).
    """
    return request.user.membership.organization_id  # type: ignore[union-attr]


class HasOrganization(BasePermission):
    message = "Your user is not a member of any organization."

    @caller_only  # reads request.user only: perf.fastpath evaluates it before DRF too
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and hasattr(user, "membership"))
