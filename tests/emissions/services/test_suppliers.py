"""emissions.services.suppliers: create, update, delete with the database's rules as field errors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from emissions.models import Supplier
from emissions.services.suppliers import InUseError, supplier_create, supplier_delete, supplier_update
from tests.factories import EmissionFactorFactory, EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db


def test_create(org):
    supplier = supplier_create(organization=org, data={"external_id": "E1", "name": "One", "country": "US"})
    assert supplier.pk is not None
    assert Supplier.objects.for_org(org).get().external_id == "E1"


def test_create_duplicate_external_id_is_a_field_error(org):
    """The database constraint is the last line: no pre-check here, so this is the race path."""
    supplier_create(organization=org, data={"external_id": "E1", "name": "One"})
    with pytest.raises(ValidationError) as info:
        supplier_create(organization=org, data={"external_id": "E1", "name": "Two"})
    assert "external_id" in info.value.message_dict
    assert Supplier.objects.for_org(org).count() == 1


def test_create_validates_fields(org):
    with pytest.raises(ValidationError) as info:
        supplier_create(organization=org, data={"external_id": "E1", "name": "One", "naics": "12"})
    assert "naics" in info.value.message_dict
    assert not Supplier.objects.exists()


def test_create_rejects_unknown_fields(org, other_org):
    with pytest.raises(ValidationError) as info:
        supplier_create(organization=org, data={"external_id": "E1", "name": "One", "organization": other_org})
    assert "organization" in info.value.message_dict


def test_update(org):
    supplier = SupplierFactory(organization=org, name="Old")
    supplier_update(supplier=supplier, data={"name": "New"})
    supplier.refresh_from_db()
    assert supplier.name == "New"


def test_update_to_taken_external_id(org):
    SupplierFactory(organization=org, external_id="TAKEN")
    supplier = SupplierFactory(organization=org, external_id="MINE")
    with pytest.raises(ValidationError) as info:
        supplier_update(supplier=supplier, data={"external_id": "TAKEN"})
    assert "external_id" in info.value.message_dict
    supplier.refresh_from_db()
    assert supplier.external_id == "MINE"


def test_delete(org):
    supplier = SupplierFactory(organization=org)
    supplier_delete(supplier=supplier)
    assert not Supplier.objects.filter(pk=supplier.pk).exists()


def test_delete_referenced_supplier_counts_references_by_kind(org):
    emission = EmissionFactory(organization=org)
    supplier = emission.supplier
    with pytest.raises(InUseError) as info:
        supplier_delete(supplier=supplier)
    assert info.value.referenced_by == {"activities": 1, "emissions": 1}
    assert info.value.references == 2
    assert str(info.value) == (
        f"Supplier {supplier.pk} ('{supplier.name}') is referenced by 1 activity and 1 emission; "
        "delete or reassign them first."
    )
    assert Supplier.objects.filter(pk=supplier.pk).exists()


def test_delete_supplier_with_only_its_own_factors_names_them(org):
    """No activity or emission references it: the error must not claim there are some."""
    supplier = SupplierFactory(organization=org)
    EmissionFactorFactory.create_batch(2, supplier=supplier)
    with pytest.raises(InUseError) as info:
        supplier_delete(supplier=supplier)
    assert info.value.referenced_by == {"supplier_factors": 2}
    assert "is referenced by 2 supplier factors;" in str(info.value)
    assert "activit" not in str(info.value)
    assert Supplier.objects.filter(pk=supplier.pk).exists()


def _savepoints(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SAVEPOINT")]


def test_each_write_takes_one_savepoint_its_own_block_inside_a_callers_transaction(org):
    """The test's transaction is the caller's: each service's block is a savepoint in it, and the save or the delete
    inside takes none of its own (each would be two more round trips)."""
    with CaptureQueriesContext(connection) as queries:
        supplier = supplier_create(organization=org, data={"external_id": "E1", "name": "One"})
    assert len(_savepoints(queries)) == 1
    with CaptureQueriesContext(connection) as queries:
        supplier_update(supplier=supplier, data={"name": "Two"})
    assert len(_savepoints(queries)) == 1
    with CaptureQueriesContext(connection) as queries:
        supplier_delete(supplier=supplier)
    assert len(_savepoints(queries)) == 1


@pytest.mark.django_db(transaction=True)
def test_a_write_outside_any_transaction_is_one_transaction_without_savepoints(org):
    with CaptureQueriesContext(connection) as queries:
        supplier = supplier_create(organization=org, data={"external_id": "E1", "name": "One"})
        supplier_update(supplier=supplier, data={"name": "Two"})
        supplier_delete(supplier=supplier)
    assert _savepoints(queries) == []
    SupplierFactory(organization=org, external_id="TAKEN")
    with pytest.raises(ValidationError) as info:  # the database's unique violation, not a field validator
        supplier_create(organization=org, data={"external_id": "TAKEN", "name": "Again"})
    assert "external_id" in info.value.message_dict
    # The transaction was rolled back whole; the connection serves the next query.
    assert list(Supplier.objects.for_org(org).values_list("external_id", flat=True)) == ["TAKEN"]


def test_a_violation_leaves_the_callers_transaction_usable(org):
    SupplierFactory(organization=org, external_id="TAKEN")
    with transaction.atomic():
        with pytest.raises(ValidationError):
            supplier_create(organization=org, data={"external_id": "TAKEN", "name": "Again"})
        # The service's block rolled back to its savepoint: the caller's transaction goes on.
        created = supplier_create(organization=org, data={"external_id": "NEW", "name": "New"})
    assert set(Supplier.objects.for_org(org).values_list("external_id", flat=True)) == {"TAKEN", created.external_id}
