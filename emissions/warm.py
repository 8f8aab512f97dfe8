"""What the emissions domain warms ahead of the first requests (a ``perf.warm.WarmUp``).

Per organization, what its first requests would otherwise compute:

- ``factors``: the calculator's factor resolution (``OrganizationFactors.prime_activities`` for every
  average-data activity the organization can see, ``prime_suppliers`` for all its suppliers,
  ``prime_sets`` for every exchange-rate and price-index set), and the first page of ``/api/v1/factors/``;
- ``suppliers``: the first page of ``/api/v1/suppliers/``;
- ``summaries``: ``/api/v1/emissions/summary/`` for every ``group_by`` key, and the first pages
  of ``/api/v1/emissions/`` and ``/api/v1/activities/``.

Responses are warmed through the real views (``perf.warm.Views``) as a member of the organization
(``member_user``). Registered at start-up (``emissions.runtime``); ``perf.warm`` runs, times and
reports the steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User

from emissions.calculation import OrganizationFactors
from emissions.models import (
    SUMMARY_KEYS,
    EmissionFactor,
    ExchangeRate,
    Membership,
    Organization,
    PriceIndex,
    Supplier,
)
from perf.cache import renewing
from perf.warm import Views, WarmStep, WarmUp

# The names of the exchange-rate sets and of the price-index sets.
ReferenceSets = tuple[Sequence[str], Sequence[str]]

KINDS = ("factors", "suppliers", "summaries")
WARM_USERNAME = "warm_cache"


def member_user(organization: Organization) -> User:
    """A user that the API views see as a member of ``organization``, its membership already loaded.

    A real active member when there is one (one query), else an unsaved ``warm_cache`` user with an
    unsaved membership: views only read ``user.membership.organization(_id)``, and the reverse
    one-to-one cache is set as ``OrgTokenAuthentication`` does, so ``HasOrganization`` costs no query.
    """
    membership = (
        Membership.objects.filter(organization=organization, user__is_active=True)
        .select_related("user")
        .order_by("pk")
        .first()
    )
    if membership is None:
        user = User(username=WARM_USERNAME)
        membership = Membership(organization=organization, user=user)
    else:
        user = membership.user
    membership.organization = organization
    Membership._meta.get_field("user").remote_field.set_cached_value(user, membership)
    return user


def _prime_factors(organization: Organization, sets: ReferenceSets) -> WarmStep:
    def prime() -> None:
        factors = OrganizationFactors(organization)
        # Average-data activities only: prime_activities caches average-data candidates, and an activity that
        # only a supplier's own factor has would be cached as "no candidates" (supplier factors are primed below).
        activities = (
            EmissionFactor.objects.visible_to(organization)
            .filter(supplier__isnull=True)
            .order_by("activity")
            .values_list("activity", flat=True)
            .distinct()
        )
        # Entries found already cached get a full lifetime too (perf.cache.renewing): otherwise all those an
        # earlier warm-up stored would expire together, in the middle of the traffic this one prepares for.
        with renewing():
            factors.prime_activities(activities)
            factors.prime_suppliers(Supplier.objects.for_org(organization).values_list("pk", flat=True))
            factors.prime_sets(exchange_rate_sets=sets[0], price_index_sets=sets[1])

    return WarmStep("factors", "factor resolution (activities, suppliers, reference sets)", prime)


def _steps(organization: Organization, views: Views, sets: ReferenceSets) -> list[WarmStep]:
    """Every item of one organization, in the order they are warmed."""
    user = member_user(organization)
    steps = [
        _prime_factors(organization, sets),
        views.step("factors", user, "factor-list"),
        views.step("suppliers", user, "supplier-list"),
    ]
    steps += [views.step("summaries", user, "emission-summary", {"group_by": key}) for key in SUMMARY_KEYS]
    steps.append(views.step("summaries", user, "emission-list"))
    steps.append(views.step("summaries", user, "activity-list"))
    return steps


def plan(organizations: Sequence[Organization], views: Views) -> list[list[WarmStep]]:
    """The steps of each organization; the names of the reference sets (public, and each organization's own) read
    once for all."""
    owners = [
        list(model.objects.order_by().values_list("organization_id", "set_name").distinct())
        for model in (ExchangeRate, PriceIndex)
    ]

    def visible(organization: Organization) -> ReferenceSets:
        rates, indexes = ({name for owner, name in pairs if owner in (None, organization.pk)} for pairs in owners)
        return sorted(rates), sorted(indexes)

    return [_steps(organization, views, visible(organization)) for organization in organizations]


WARM_UP = WarmUp("emissions", KINDS, plan)
