"""Supplier-provided factor writes (emissions.services.supplier_factors)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from zeal import zeal_context

from emissions.models import EmissionFactor, FactorDataset, Supplier
from emissions.services import supplier_factors
from emissions.services.supplier_factors import default_activity, supplier_factor_delete
from emissions.services.suppliers import InUseError
from tests.factories import ActivityRecordFactory, SupplierFactory

pytestmark = pytest.mark.django_db


def supplier_factor_create(*, supplier: Supplier, data: dict[str, Any]) -> EmissionFactor:
    """The service, as one unit of work: django-zeal checks each call on its own, as it does each request."""
    with zeal_context():
        return supplier_factors.supplier_factor_create(supplier=supplier, data=data)


DATA = {"name": "Cold-rolled sheet", "unit": "t", "co2e_per_unit": Decimal("2100"), "year": 2024}


def test_create_stores_in_the_orgs_supplier_dataset(org, other_org):
    supplier = SupplierFactory.create(organization=org, external_id="S-1", country="")
    factor = supplier_factor_create(supplier=supplier, data=dict(DATA))
    dataset = factor.dataset
    assert (dataset.source, dataset.version, dataset.organization_id, dataset.basis_year) == (
        FactorDataset.Source.SUPPLIER,
        "current",
        org.pk,
        2024,
    )
    assert (factor.activity, factor.region, factor.unit, factor.currency) == (
        "supplier:S-1:cold-rolled-sheet",
        "GLOBAL",
        "t",
        "",
    )
    # A second supplier of the same org shares the dataset; another org gets its own.
    second = supplier_factor_create(supplier=SupplierFactory.create(organization=org), data=dict(DATA))
    assert second.dataset_id == dataset.pk
    theirs = supplier_factor_create(supplier=SupplierFactory.create(organization=other_org), data=dict(DATA))
    assert theirs.dataset.organization_id == other_org.pk
    assert FactorDataset.objects.filter(source="supplier").count() == 2


def test_default_activity_fits_the_column(org):
    supplier = SupplierFactory.create(organization=org, external_id="X" * 64)
    activity = default_activity(supplier, "a very long product name " * 20)
    assert len(activity) == 128
    assert activity.startswith("supplier:" + "X" * 64 + ":a-very-long")
    assert default_activity(supplier, "!!!").endswith(":factor")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        # What needs the units registry or a country list (shapes are the serializer's: see the API tests).
        ({"unit": "widgets"}, "unit"),
        ({"region": "XX"}, "region"),
        # The model's own rules, through full_clean.
        ({"co2e_per_unit": Decimal("1e40")}, "co2e_per_unit"),
        ({"name": ""}, "name"),
    ],
)
def test_create_rejects(org, data, field):
    supplier = SupplierFactory.create(organization=org)
    with pytest.raises(ValidationError) as exc:
        supplier_factor_create(supplier=supplier, data={**DATA, **data})
    assert field in exc.value.message_dict
    assert not EmissionFactor.objects.exists()


def test_duplicate_activity_is_a_field_error_and_the_transaction_stays_usable(org):
    supplier = SupplierFactory.create(organization=org)
    supplier_factor_create(supplier=supplier, data={**DATA, "activity": "sheet"})
    with pytest.raises(ValidationError) as exc:
        supplier_factor_create(supplier=supplier, data={**DATA, "activity": "sheet"})
    assert "'sheet'" in exc.value.message_dict["activity"][0]
    assert EmissionFactor.objects.filter(activity="sheet").count() == 1


def test_delete(org):
    factor = supplier_factor_create(supplier=SupplierFactory.create(organization=org), data=dict(DATA))
    supplier_factor_delete(factor=factor)
    assert not EmissionFactor.objects.filter(pk=factor.pk).exists()


def test_delete_of_a_pinned_factor_is_refused(org):
    supplier = SupplierFactory.create(organization=org)
    factor = supplier_factor_create(supplier=supplier, data=dict(DATA))
    ActivityRecordFactory.create(organization=org, supplier=supplier, factor=factor)
    with pytest.raises(InUseError) as exc:
        supplier_factor_delete(factor=factor)
    assert exc.value.references == 1
    assert exc.value.referenced_by == {"activities": 1}
    assert str(exc.value).startswith(f"Factor {factor.pk} ('{factor.activity}') is referenced by 1 activity; ")
    assert EmissionFactor.objects.filter(pk=factor.pk).exists()


def test_delete_of_a_public_factor_is_a_programming_error(electricity_factor):
    with pytest.raises(ValueError, match="supplier-provided"):
        supplier_factor_delete(factor=electricity_factor)


def test_gases_are_stored_as_plain_decimal_strings(org):
    supplier = SupplierFactory.create(organization=org)
    gases = {"CO2": Decimal("2.050000000000000"), "CH4": Decimal("5E-2")}
    factor = supplier_factor_create(supplier=supplier, data={**DATA, "gases": gases})
    factor.refresh_from_db()
    assert factor.gases == {"CO2": "2.05", "CH4": "0.05"}
