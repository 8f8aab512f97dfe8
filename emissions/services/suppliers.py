"""Supplier writes: create, update and delete, each in one transaction.

Callers (API, importers) validate shapes first; these functions still enforce the rules
that only the database can check race-free (unique ``external_id`` per organization,
PROTECTed references) and turn them into errors that name the field.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from emissions.models import Organization, Supplier

EXTERNAL_ID_CONSTRAINT = "supplier_org_external_id_uniq"
EXTERNAL_ID_TAKEN = "A supplier with this external_id already exists in your organization."

# Fields a caller may set; organization and timestamps are never taken from input.
WRITABLE_FIELDS = frozenset({"external_id", "name", "country", "naics"})


class SupplierInUseError(Exception):
    """The supplier is still referenced by activities or emissions and cannot be deleted."""

    def __init__(self, supplier: Supplier, references: int) -> None:
        self.supplier = supplier
        self.references = references
        super().__init__(
            f"Supplier {supplier.pk} ('{supplier.name}') is referenced by {references} activity or emission "
            "record(s); delete or reassign them first."
        )


def _check_fields(data: dict[str, Any]) -> None:
    unknown = set(data) - WRITABLE_FIELDS
    if unknown:
        raise ValidationError({name: ["This field cannot be written."] for name in sorted(unknown)})


def _save(supplier: Supplier) -> None:
    # Field validators (NAICS, country) run here too, so non-API callers get the same rules;
    # uniqueness is left to the database constraint, which is race-free.
    supplier.full_clean(exclude=["organization"], validate_unique=False, validate_constraints=False)
    try:
        # A savepoint keeps the caller's transaction usable after a constraint violation.
        with transaction.atomic():
            supplier.save()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        if constraint == EXTERNAL_ID_CONSTRAINT:
            raise ValidationError({"external_id": [EXTERNAL_ID_TAKEN]}) from exc
        raise


@transaction.atomic
def supplier_create(*, organization: Organization, data: dict[str, Any]) -> Supplier:
    """Create a supplier of ``organization``; ``ValidationError`` names the offending field."""
    _check_fields(data)
    supplier = Supplier(organization=organization, **data)
    _save(supplier)
    return supplier


@transaction.atomic
def supplier_update(*, supplier: Supplier, data: dict[str, Any]) -> Supplier:
    """Apply a partial update; ``ValidationError`` names the offending field."""
    _check_fields(data)
    for name, value in data.items():
        setattr(supplier, name, value)
    _save(supplier)
    return supplier


@transaction.atomic
def supplier_delete(*, supplier: Supplier) -> None:
    """Delete a supplier; ``SupplierInUseError`` when activities or emissions still reference it."""
    try:
        with transaction.atomic():
            supplier.delete()
    except ProtectedError as exc:
        raise SupplierInUseError(supplier, len(exc.protected_objects)) from exc
