"""What the emissions domain caches under which namespaces, and what each write invalidates.

The domain's cache resources are defined (and registered with ``perf.cache``) here, once each.

Reads name their namespaces with the ``*_namespaces`` functions; writes call the functions below
from the service that writes, inside its transaction (``perf.cache.invalidate`` bumps again after
commit). Model signals cover the writes that bypass the services (the admin, a shell): every save
or delete of a cached model invalidates too; supplier services rely on them alone, since a
supplier is always saved one row at a time. Bulk paths (COPY, ``bulk_create``, raw DELETE) send
no signals; their services invalidate explicitly.

One rule keeps this correct by construction: a namespace is bumped by every write that can
change any value read under it. Over-invalidating costs a recomputation; under-invalidating
would serve stale data, so where in doubt a write bumps more.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import DatabaseError, transaction
from django.db.models import Exists, Model
from django.db.models.signals import post_delete, post_save
from rest_framework.authtoken.models import Token

from emissions.models import (
    ActivityRecord,
    CategoryExclusion,
    Emission,
    EmissionFactor,
    ExchangeRate,
    FactorDataset,
    Membership,
    Organization,
    PriceIndex,
    Supplier,
)
from perf.cache import GLOBAL_AUTH, Namespace, invalidate, org_ns, register_resource

logger = logging.getLogger(__name__)

# -- namespaces --------------------------------------------------------------------------------

EMISSIONS = register_resource("emissions", "per organization: activities, emissions, their summaries")
SUPPLIERS = register_resource("suppliers", "per organization: its suppliers, as the supplier endpoints show them")
SUPPLIER_IDS = register_resource(
    "supplier-ids", "per organization: which ids are its suppliers (what the calculator checks)"
)
FACTORS = register_resource(
    "factors", "per organization: its supplier-specific factors; global: the public catalogue and reference tables"
)
GLOBAL_FACTORS = Namespace(FACTORS)

# -- reads -------------------------------------------------------------------------------------


def factor_namespaces(organization_id: int) -> list[Namespace]:
    """Factors an organization sees: the public catalogue (and reference tables) plus its own."""
    return [GLOBAL_FACTORS, org_ns(organization_id, FACTORS)]


def supplier_namespaces(organization_id: int) -> list[Namespace]:
    """The supplier endpoints: every supplier write changes them."""
    return [org_ns(organization_id, SUPPLIERS)]


def supplier_id_namespaces(organization_id: int) -> list[Namespace]:
    """Which ids are the organization's suppliers (the calculator's checks): only deletions change what is cached."""
    return [org_ns(organization_id, SUPPLIER_IDS)]


def emission_namespaces(organization_id: int) -> list[Namespace]:
    """One activity or emission (a detail): what changes stored rows, not what adds rows.

    Every emission response embeds factor details (hence the factor namespaces) and the names of the
    suppliers its activities reference: a change to such a supplier bumps the emissions namespace itself
    (``supplier_updated``), so creating, editing or deleting a supplier no activity references leaves
    every cached emission response valid. Adding activities (``emissions_added``) changes no stored row,
    so details stay cached across an ERP batch.
    """
    return [org_ns(organization_id, EMISSIONS), *factor_namespaces(organization_id)]


# A period filter spanning more years than this reads the namespace of additions in any year, not one per year.
MAX_YEAR_NAMESPACES = 10
# A period filter within this many calendar months reads one namespace per month instead of one per year: a quarter,
# or a month (the CSV export's usual filter), stays cached while other months of its year get new rows.
MAX_MONTH_NAMESPACES = 3


def _month_part(first_of_month: dt.date) -> str:
    return f"added:{first_of_month.year}-{first_of_month.month:02d}"


def emission_list_namespaces(
    organization_id: int, period_from: dt.date | None = None, period_to: dt.date | None = None
) -> list[Namespace]:
    """Lists, summaries and exports of activities or emissions, filtered to rows with ``period_start >= period_from``
    and ``period_end <= period_to`` (either may be None: unbounded).

    What a detail reads, plus the additions that can enter the result: with both bounds, those of the months
    ``period_from`` to ``period_to`` when they are at most ``MAX_MONTH_NAMESPACES`` calendar months, else those of
    the years ``period_from.year`` to ``period_to.year`` (a row that matches starts in one of them, and
    ``emissions_added`` bumps the month and the year its period starts in); otherwise additions in any year. An
    ERP batch for this quarter's months thus leaves last year's summaries and the other months' exports cached.
    """
    if period_from is not None and period_to is not None:
        if period_from > period_to:
            return emission_namespaces(organization_id)  # an empty range: nothing can enter it
        months = (period_to.year - period_from.year) * 12 + period_to.month - period_from.month + 1
        if months <= MAX_MONTH_NAMESPACES:
            year, month = period_from.year, period_from.month
            parts = []
            for _ in range(months):
                parts.append(_month_part(dt.date(year, month, 1)))
                year, month = (year, month + 1) if month < 12 else (year + 1, 1)
            return [*emission_namespaces(organization_id), *(org_ns(organization_id, EMISSIONS, p) for p in parts)]
        years = range(period_from.year, period_to.year + 1)
        if len(years) <= MAX_YEAR_NAMESPACES:
            added = [org_ns(organization_id, EMISSIONS, f"added:{year}") for year in years]
            return [*emission_namespaces(organization_id), *added]
    return [*emission_namespaces(organization_id), org_ns(organization_id, EMISSIONS, "added")]


# -- writes ------------------------------------------------------------------------------------


def report_namespaces(organization_id: int) -> list[Namespace]:
    """Reports (the inventory): the emissions as an unbounded list reads them (additions in any year: a report
    compares its period with the organization's base year, which the cache would have to read to narrow it),
    plus the organizations (``GLOBAL_AUTH``: a saved base year changes what a report compares with)."""
    return [*emission_list_namespaces(organization_id), GLOBAL_AUTH]


def emissions_changed(organization_id: int) -> None:
    """Stored activities or emissions of the organization changed (recalculation, deletion, an edit, a
    referenced supplier's new name): every emission response, details included."""
    invalidate(org_ns(organization_id, EMISSIONS))


def emissions_added(organization_id: int, period_starts: Iterable[dt.date]) -> None:
    """Activities (with their emissions) were added and no stored row changed: the lists, summaries and exports that
    can include them (``emission_list_namespaces``), not the details of other rows. ``period_starts``: the added
    rows' ``period_start``, or any day of each month they start in (their months and years are what is bumped)."""
    months = sorted({(start.year, start.month) for start in period_starts})
    years = sorted({year for year, _ in months})
    invalidate(
        org_ns(organization_id, EMISSIONS, "added"),
        *(org_ns(organization_id, EMISSIONS, f"added:{year}") for year in years),
        *(org_ns(organization_id, EMISSIONS, _month_part(dt.date(year, month, 1))) for year, month in months),
    )


def suppliers_created(organization_id: int) -> None:
    """Suppliers were created: the supplier lists change. Not the supplier ids' namespace: "unknown
    supplier" answers are never cached across requests (``FactorResolver.prime_suppliers``). Nor
    emission responses: none can name a supplier that no activity references yet."""
    invalidate(org_ns(organization_id, SUPPLIERS))


def suppliers_deleted(organization_id: int) -> None:
    """Suppliers were deleted. Deletion is refused while activities or emissions reference a supplier
    (``on_delete=PROTECT``), so no emission response named a deleted one."""
    invalidate(org_ns(organization_id, SUPPLIERS), org_ns(organization_id, SUPPLIER_IDS))


def supplier_updated(organization_id: int, supplier_id: int) -> None:
    """A supplier's fields changed (its id cannot): the supplier lists change; emission responses change
    only if an activity or emission references it, which is checked after commit.

    Why after commit: an activity committed before the check is found, and the emissions namespace
    is bumped; one committed after the check was committed after this change, and its own write
    bumped the namespace after its commit, so every response naming the supplier that can still be
    reached was computed from the new fields. Checked inside the transaction instead, an activity
    batch committing between the check and this commit would escape both bumps.
    """
    invalidate(org_ns(organization_id, SUPPLIERS))
    transaction.on_commit(partial(_emissions_if_referenced, organization_id, supplier_id))


def _emissions_if_referenced(organization_id: int, supplier_id: int) -> None:
    try:
        # One query (one round trip) for both tables. A supplier deleted meanwhile was referenced by neither
        # (on_delete=PROTECT), so no emission response names it.
        referenced = Supplier.objects.filter(
            Exists(ActivityRecord.objects.filter(supplier_id=supplier_id))
            | Exists(Emission.objects.filter(supplier_id=supplier_id)),
            pk=supplier_id,
        ).exists()
    except DatabaseError:
        logger.warning("supplier %s: could not check its references; emission caches invalidated", supplier_id)
        referenced = True  # in doubt, bump
    if referenced:
        emissions_changed(organization_id)


def org_factors_changed(organization_id: int) -> None:
    """A supplier-specific factor of the organization was created or deleted."""
    invalidate(org_ns(organization_id, FACTORS))


def catalogue_changed() -> None:
    """Public factors, datasets, exchange rates or price indexes were imported or edited."""
    invalidate(GLOBAL_FACTORS)


def auth_changed() -> None:
    """A token, user, membership or organization changed: cached authentications are dropped."""
    invalidate(GLOBAL_AUTH)


# -- signals (writes outside the services) -----------------------------------------------------


def _org_of(instance: Any) -> int:
    return instance.organization_id


def _on_activity(sender: type, instance: ActivityRecord | Emission | CategoryExclusion, **kwargs: Any) -> None:
    emissions_changed(_org_of(instance))


def _on_supplier_save(sender: type, instance: Supplier, created: bool = False, **kwargs: Any) -> None:
    organization_id = _org_of(instance)
    previous = getattr(instance, "loaded_organization_id", None)
    if created:
        suppliers_created(organization_id)
    elif previous == organization_id:
        supplier_updated(organization_id, instance.pk)
    else:
        # Moved to another organization, or saved without being loaded (its old organization is
        # unknown): in doubt, every namespace a supplier write can touch, in both organizations.
        for org in {organization_id} if previous is None else {organization_id, previous}:
            suppliers_deleted(org)  # a departure from one, an arrival in the other: both bump the ids
            emissions_changed(org)
    instance.loaded_organization_id = organization_id


def _on_supplier_delete(sender: type, instance: Supplier, **kwargs: Any) -> None:
    suppliers_deleted(_org_of(instance))


def _on_factor(sender: type, instance: EmissionFactor | FactorDataset, **kwargs: Any) -> None:
    # An organization's own dataset or factor touches that organization only; reading the dataset to
    # find out would cost a query when it is not loaded, so then the whole catalogue is bumped.
    dataset = instance if isinstance(instance, FactorDataset) else instance._state.fields_cache.get("dataset")
    if dataset is not None and dataset.organization_id is not None:
        org_factors_changed(dataset.organization_id)
    else:
        catalogue_changed()


def _on_reference(sender: type, instance: Any, **kwargs: Any) -> None:
    catalogue_changed()


def _on_auth(sender: type, instance: Any, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if sender is User and update_fields is not None and set(update_fields) == {"last_login"}:
        return  # every admin login saves last_login; nothing cached reads it
    auth_changed()


def connect_signals() -> None:
    """Connect the handlers (``EmissionsConfig.ready``)."""
    # (on save, on delete, models)
    handlers: list[tuple[Callable[..., None], Callable[..., None], tuple[type[Model], ...]]] = [
        # A category's exclusion changes its status in the inventory, which the emissions namespace covers.
        (_on_activity, _on_activity, (ActivityRecord, Emission, CategoryExclusion)),
        (_on_supplier_save, _on_supplier_delete, (Supplier,)),
        (_on_factor, _on_factor, (EmissionFactor, FactorDataset)),
        (_on_reference, _on_reference, (ExchangeRate, PriceIndex)),
        (_on_auth, _on_auth, (Token, User, Membership, Organization)),
    ]
    for on_save, on_delete, models in handlers:
        for model in models:
            uid = f"vcci-cache-{model._meta.label_lower}"
            post_save.connect(on_save, sender=model, dispatch_uid=f"{uid}-save")
            post_delete.connect(on_delete, sender=model, dispatch_uid=f"{uid}-delete")
