"""What the emissions domain registers with the runtime layer (``perf``) at start-up.

``register()`` runs in ``EmissionsConfig.ready``:

- its cache resources (``perf.cache.register_resource``): defined once each in ``emissions.cache``,
  registered as that module is imported, which ``ready`` does first (it connects the signals);
- its organizations (``perf.tenants``): by slug, the active ones (with activity records, worth
  warming) and the largest (the most emissions, whose queries ``check_indexes`` explains);
- its warm-up (``perf.warm``): ``emissions.warm.WARM_UP``.

Its hot queries (``emissions.hot_queries``) are found by ``perf.hot_queries``' autodiscovery on
first use instead: building them imports the API views, which start-up does not need.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import Count, Exists, OuterRef, QuerySet

from emissions.models import ActivityRecord, Emission, Organization
from emissions.warm import WARM_UP
from perf import tenants, warm


def organizations_by_slug(slugs: Sequence[str]) -> QuerySet[Organization]:
    """The organizations with those slugs."""
    return Organization.objects.filter(slug__in=slugs)


def active_organizations() -> QuerySet[Organization]:
    """Organizations with at least one activity record, by slug: the ones worth warming by default."""
    has_activity = ActivityRecord.objects.filter(organization_id=OuterRef("pk"))
    return Organization.objects.filter(Exists(has_activity)).order_by("slug")


def largest_organization() -> Organization | None:
    """The organization with the most emissions, else the first one (None when there is none)."""
    top = Emission.objects.order_by().values("organization").annotate(n=Count("pk")).order_by("-n", "organization")
    first = top.first()
    if first is not None:
        return Organization.objects.get(pk=first["organization"])
    return Organization.objects.order_by("pk").first()


TENANTS = tenants.Tenants(by_slug=organizations_by_slug, active=active_organizations, largest=largest_organization)


def register() -> None:
    """Register the organizations and the warm-up (idempotent: ``ready`` may run more than once in tests)."""
    tenants.register(TENANTS)
    warm.register(WARM_UP)
