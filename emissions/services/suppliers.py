"""Supplier writes: create, update and delete, each in one transaction.

Callers (API, importers) validate shapes first; these functions still enforce the rules
that only the database can check race-free (unique ``external_id`` per organization,
PROTECTed references) and turn them into errors that name the field or the references.

``InUseError`` and ``save_or_field_error`` serve the supplier-factor service too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import ProtectedError

from emissions.models import ActivityRecord, Emission, EmissionFactor, Organization, Supplier

EXTERNAL_ID_CONSTRAINT = "supplier_org_external_id_uniq"
EXTERNAL_ID_TAKEN = "A supplier with this external_id already exists in your organization."

# Fields a caller may set; organization and timestamps are never taken from input (data is spread into the model).
WRITABLE_FIELDS = frozenset({"external_id", "name", "country", "naics"})

# What a PROTECTed reference is called in error bodies and messages: (key, singular, plural).
REFERENCE_KINDS: dict[type[models.Model], tuple[str, str, str]] = {
    ActivityRecord: ("activities", "activity", "activities"),
    Emission: ("emissions", "emission", "emissions"),
    EmissionFactor: ("supplier_factors", "supplier factor", "supplier factors"),
}


class InUseError(Exception):
    """A supplier or factor that other rows still reference (``on_delete=PROTECT``); nothing was deleted.

    ``referenced_by`` counts the referencing rows by kind (``activities``, ``emissions``,
    ``supplier_factors``); ``references`` is their total.
    """

    def __init__(self, message: str, referenced_by: dict[str, int]) -> None:
        self.referenced_by = referenced_by
        self.references = sum(referenced_by.values())
        super().__init__(message)

    @classmethod
    def from_protected(cls, exc: ProtectedError, what: str, consequence: str) -> InUseError:
        """``"<what> is referenced by 2 activities and 1 supplier factor; <consequence>"``, counted by kind."""
        counts = Counter(type(obj) for obj in exc.protected_objects)
        # Django hands the protected objects over as a set: order the kinds so the message is stable.
        order = list(REFERENCE_KINDS)
        kinds = sorted(counts, key=lambda m: (order.index(m) if m in order else len(order), m._meta.label))
        referenced_by: dict[str, int] = {}
        phrases: list[str] = []
        for model in kinds:
            count = counts[model]
            key, singular, plural = REFERENCE_KINDS.get(
                model,
                (model._meta.model_name or "", str(model._meta.verbose_name), str(model._meta.verbose_name_plural)),
            )
            referenced_by[key] = count
            phrases.append(f"{count} {singular if count == 1 else plural}")
        listed = phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"
        return cls(f"{what} is referenced by {listed}; {consequence}", referenced_by)


def save_or_field_error(instance: models.Model, constraint_errors: Mapping[str, tuple[str, str]]) -> None:
    """Save ``instance``; a violation of a constraint named in ``constraint_errors`` becomes a field error.

    ``constraint_errors`` maps a database constraint name to ``(field, message)``. Checking in the
    database (not with a query first) is what makes uniqueness race-free.

    Precondition: called inside the calling service's ``transaction.atomic``, which the error leaves. The save takes
    no savepoint of its own (two round trips to PostgreSQL saved on every save): the service's block is the caller's
    savepoint, or its whole transaction, and rolls back as the error leaves it, so whoever called the service can
    go on. Any query between the violation and leaving the block is refused (``TransactionManagementError``).
    """
    try:
        with transaction.atomic(savepoint=False):
            instance.save()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        if isinstance(constraint, str) and constraint in constraint_errors:
            field, message = constraint_errors[constraint]
            raise ValidationError({field: [message]}) from exc
        raise


def _check_fields(data: dict[str, Any]) -> None:
    unknown = set(data) - WRITABLE_FIELDS
    if unknown:
        raise ValidationError({name: ["This field cannot be written."] for name in sorted(unknown)})


def _save(supplier: Supplier) -> None:
    # Field validators (NAICS, country) run here too, so non-API callers get the same rules;
    # uniqueness is left to the database constraint, which is race-free.
    supplier.full_clean(exclude=["organization"], validate_unique=False, validate_constraints=False)
    save_or_field_error(supplier, {EXTERNAL_ID_CONSTRAINT: ("external_id", EXTERNAL_ID_TAKEN)})


@transaction.atomic
def supplier_create(*, organization: Organization, data: dict[str, Any]) -> Supplier:
    """Create a supplier of ``organization``; ``ValidationError`` names the offending field."""
    _check_fields(data)
    supplier = Supplier(organization=organization, **data)
    _save(supplier)  # its post_save signal invalidates the cache (emissions.cache.suppliers_created)
    return supplier


@transaction.atomic
def supplier_update(*, supplier: Supplier, data: dict[str, Any]) -> Supplier:
    """Apply a partial update; ``ValidationError`` names the offending field."""
    _check_fields(data)
    for name, value in data.items():
        setattr(supplier, name, value)
    _save(supplier)  # its post_save signal invalidates the cache (emissions.cache.supplier_updated)
    return supplier


@transaction.atomic
def supplier_delete(*, supplier: Supplier) -> None:
    """Delete a supplier; ``InUseError`` when activities, emissions or its own factors still reference it."""
    try:
        # No savepoint of its own: a ProtectedError is raised while collecting, before anything is deleted, and any
        # other error leaves this service's block, which rolls back.
        supplier.delete()
    except ProtectedError as exc:
        raise InUseError.from_protected(
            exc, f"Supplier {supplier.pk} ('{supplier.name}')", "delete or reassign them first."
        ) from exc
    # Its post_delete signal invalidated the cache (emissions.cache.suppliers_deleted).
