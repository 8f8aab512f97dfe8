"""Who may call the API: a member of an organization (tenancy), whose role allows the action on the resource.

Roles are enforced from the one table of role permissions the admin uses
(``emissions.services.organizations.ROLE_PERMISSIONS``): each endpoint names the model it reads or writes
(``role_permissions(Supplier)``), and a request needs the admin's permission for that model and its method's
action: ``view_<model>`` for GET, HEAD and OPTIONS, ``add_<model>`` for POST, ``change_<model>`` for PUT and
PATCH, ``delete_<model>`` for DELETE (an endpoint may map a method to another action: a calculation is a POST that
stores nothing, so it needs ``view_emissionfactor``). README, "Roles", has the resulting role x endpoint table.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any

from django.db.models import Model
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request

from emissions.models import Organization
from emissions.services.organizations import ROLE_PERMISSIONS
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


# The admin's action a request method asks for (DRF's safe methods read).
METHOD_ACTIONS: Mapping[str, str] = MappingProxyType(
    {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PUT": "change", "PATCH": "change"}
    | {"DELETE": "delete"}
)
ACTION_WORDS = {"view": "read", "add": "create", "change": "change", "delete": "delete"}


class RoleAllows(BasePermission):
    """The caller's membership role carries the permission the request needs on ``model``.

    A subclass per endpoint names the model (``role_permissions`` makes it); a refusal is a 403 naming the role and
    the permission it lacks. Precondition: ``HasOrganization`` has passed (it runs first in ``role_permissions``).
    """

    model: type[Model]
    actions: Mapping[str, str] = METHOD_ACTIONS

    @caller_only  # reads request.user, the method (a GET on the fast path) and whether the view serves it
    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if user.is_superuser:  # as in the admin
            return True
        method = (request.method or "").lower()
        action = self.actions.get(method.upper())
        if action is None or method not in view.http_method_names or not hasattr(view, method):
            return True  # a method the view does not serve, or no role names (TRACE): the view answers it 405
        codename = f"{action}_{self.model._meta.model_name}"
        role = user.membership.role  # type: ignore[union-attr]
        if codename in ROLE_PERMISSIONS.get(role, frozenset()):
            return True
        what = self.model._meta.verbose_name_plural
        raise PermissionDenied(
            f"Your role '{role}' may not {ACTION_WORDS.get(action, action)} {what}: "
            f"it lacks the '{codename}' permission."
        )


@cache
def role_permissions(model: type[Model], **actions: str) -> tuple[type[BasePermission], ...]:
    """An endpoint's ``permission_classes``: an authenticated member whose role may act on ``model``.

    ``actions`` maps a method to another action than its usual one (``POST="view"`` for an endpoint that stores
    nothing). Memoized: one class per endpoint configuration, so views share it (and the fast path's policies).
    """
    name = f"RoleAllows{model.__name__}{''.join(f'{m.title()}{a.title()}' for m, a in sorted(actions.items()))}"
    allows = type(name, (RoleAllows,), {"model": model, "actions": MappingProxyType({**METHOD_ACTIONS, **actions})})
    return (IsAuthenticated, HasOrganization, allows)
