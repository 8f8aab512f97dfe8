"""The organizations the runtime's operator commands work on, as the domain finds them.

The runtime layer knows an organization only as a tenant: a primary key (cache namespaces are per
organization, ``perf.cache.org_ns``) and a slug (operators name one with ``--org``). Which
organizations exist, which are worth warming and which holds the most data are the domain's to
say: it registers one ``Tenants`` at start-up (``emissions.runtime``), and ``warm_cache``,
``check_indexes`` and the warm-up on boot (``perf.warm``) ask it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured


class Tenant(Protocol):
    """An organization as the runtime sees it."""

    @property
    def pk(self) -> Any: ...

    @property
    def slug(self) -> str: ...


class UnknownTenants(LookupError):
    """Slugs that name no organization; the message lists them."""

    def __init__(self, slugs: Sequence[str]) -> None:
        self.slugs = list(slugs)
        super().__init__(f"Unknown organization(s): {', '.join(self.slugs)}.")


@dataclass(frozen=True)
class Tenants:
    """How the domain finds its organizations.

    ``by_slug(slugs)``: the organizations with those slugs (any order; unknown slugs left out);
    ``active()``: the organizations worth warming, by slug; ``largest()``: the organization with the
    most data (whose queries ``check_indexes`` explains), None when there is none.
    """

    by_slug: Callable[[Sequence[str]], Iterable[Tenant]]
    active: Callable[[], Iterable[Tenant]]
    largest: Callable[[], Tenant | None]

    def named(self, slugs: Sequence[str]) -> list[Tenant]:
        """The organizations ``slugs`` name, in that order, repeats dropped; ``UnknownTenants`` lists any unknown."""
        wanted = list(dict.fromkeys(slugs))
        found = {tenant.slug: tenant for tenant in self.by_slug(wanted)}
        unknown = [slug for slug in wanted if slug not in found]
        if unknown:
            raise UnknownTenants(unknown)
        return [found[slug] for slug in wanted]


_registered: Tenants | None = None


def register(tenants: Tenants) -> None:
    """Make ``tenants`` the one lookup (in the domain's ``AppConfig.ready``); a different second one: ``ValueError``."""
    global _registered
    if _registered is not None and _registered != tenants:
        raise ValueError("Organizations are already registered; one app owns them.")
    _registered = tenants


def registered() -> Tenants:
    """The registered lookup; ``ImproperlyConfigured`` when no installed app registered one."""
    if _registered is None:
        raise ImproperlyConfigured("No installed app registers its organizations (perf.tenants.register).")
    return _registered
