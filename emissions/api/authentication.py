"""Token authentication that loads the caller's organization with the token."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


class OrgTokenAuthentication(TokenAuthentication):
    """DRF's token authentication, with the user's membership and organization joined into the token query.

    Every API request needs the caller's organization (tenancy scoping, ``HasOrganization``);
    DRF's version loads only the user, so the membership and the organization each cost one more
    query on every request. A user without a membership still authenticates (the LEFT JOIN
    leaves ``user.membership`` unset) and is then refused by ``HasOrganization``.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        try:
            token = Token.objects.select_related("user__membership__organization").get(key=key)
        except Token.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from None
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return (token.user, token)
