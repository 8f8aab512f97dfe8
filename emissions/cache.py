"""What the emissions domain caches under which namespaces, and what each write invalidates.

Reads name their namespaces with the ``*_namespaces`` functions; writes call the ``*_changed``
functions from the service that writes, inside its transaction (``perf.cache.invalidate`` bumps
again after commit). Model signals cover the writes that bypass the services (the admin, a
shell): every save or delete of a cached model invalidates too. Bulk paths (COPY,
``bulk_create``, raw DELETE) send no signals; their services invalidate explicitly.

One rule keeps this correct by construction: a namespace is bumped by every write that can
change any value read under it. Over-invalidating costs a recomputation; under-invalidating
would serve stale data, so where in doubt a write bumps more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Model
from django.db.models.signals import post_delete, post_save
from rest_framework.authtoken.models import Token

from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    ExchangeRate,
    FactorDataset,
    Membership,
    Organization,
    PriceIndex,
    Supplier,
)
from perf.cache import EMISSIONS, FACTORS, GLOBAL_AUTH, GLOBAL_FACTORS, SUPPLIERS, Namespace, invalidate, org_ns

# -- reads -------------------------------------------------------------------------------------


def factor_namespaces(organization_id: int) -> list[Namespace]:
    """Factors an organization sees: the public catalogue (and reference tables) plus its own."""
    return [GLOBAL_FACTORS, org_ns(organization_id, FACTORS)]


def supplier_namespaces(organization_id: int) -> list[Namespace]:
    return [org_ns(organization_id, SUPPLIERS)]


def emission_namespaces(organization_id: int) -> list[Namespace]:
    """Activities, emissions and summaries; they embed supplier names and factor details too."""
    return [org_ns(organization_id, EMISSIONS), org_ns(organization_id, SUPPLIERS), *factor_namespaces(organization_id)]


# -- writes ------------------------------------------------------------------------------------


def emissions_changed(organization_id: int) -> None:
    """Activities or emissions of the organization were written (create, import, recalculation, delete)."""
    invalidate(org_ns(organization_id, EMISSIONS))


def suppliers_changed(organization_id: int) -> None:
    """A supplier was created, changed or deleted; emission responses carry its name, so they follow."""
    invalidate(org_ns(organization_id, SUPPLIERS))


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


def _on_activity(sender: type, instance: ActivityRecord | Emission, **kwargs: Any) -> None:
    emissions_changed(_org_of(instance))


def _on_supplier(sender: type, instance: Supplier, **kwargs: Any) -> None:
    suppliers_changed(_org_of(instance))


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
    handlers: list[tuple[Callable[..., None], tuple[type[Model], ...]]] = [
        (_on_activity, (ActivityRecord, Emission)),
        (_on_supplier, (Supplier,)),
        (_on_factor, (EmissionFactor, FactorDataset)),
        (_on_reference, (ExchangeRate, PriceIndex)),
        (_on_auth, (Token, User, Membership, Organization)),
    ]
    for handler, models in handlers:
        for model in models:
            uid = f"vcci-cache-{model._meta.label_lower}"
            post_save.connect(handler, sender=model, dispatch_uid=f"{uid}-save")
            post_delete.connect(handler, sender=model, dispatch_uid=f"{uid}-delete")
