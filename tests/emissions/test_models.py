"""emissions.models: tenancy rules that live on the models themselves."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db.models import ProtectedError

from emissions.models import EmissionFactor, FactorDataset
from tests.factories import EmissionFactorFactory, FactorDatasetFactory, OrganizationFactory, SupplierFactory

pytestmark = pytest.mark.django_db


def _supplier_dataset(org) -> FactorDataset:
    return FactorDatasetFactory.create(source=FactorDataset.Source.SUPPLIER, organization=org)


def test_visible_to_public_plus_own_supplier_factors(org, other_org) -> None:
    public = EmissionFactorFactory.create()
    own = EmissionFactorFactory.create(
        dataset=_supplier_dataset(org), supplier=SupplierFactory.create(organization=org)
    )
    theirs = EmissionFactorFactory.create(
        dataset=_supplier_dataset(other_org), supplier=SupplierFactory.create(organization=other_org)
    )
    visible = set(EmissionFactor.objects.visible_to(org).values_list("pk", flat=True))
    assert public.pk in visible
    assert own.pk in visible
    assert theirs.pk not in visible


def test_supplier_factor_in_a_public_dataset_is_invisible_to_everyone(org, other_org) -> None:
    # Written past clean() (e.g. by a script): it must not leak the supplier's factor to other orgs.
    stray = EmissionFactorFactory.create(supplier=SupplierFactory.create(organization=org))
    for tenant in (org, other_org):
        assert not EmissionFactor.objects.visible_to(tenant).filter(pk=stray.pk).exists()


def test_clean_rejects_supplier_factor_outside_its_org(org, other_org) -> None:
    supplier = SupplierFactory.create(organization=org)
    public = EmissionFactorFactory.build(dataset=FactorDatasetFactory.create(), supplier=supplier)
    with pytest.raises(ValidationError) as public_error:
        public.clean()
    assert "supplier" in public_error.value.message_dict
    foreign = EmissionFactorFactory.build(dataset=_supplier_dataset(other_org), supplier=supplier)
    with pytest.raises(ValidationError):
        foreign.clean()
    own = EmissionFactorFactory.build(dataset=_supplier_dataset(org), supplier=supplier)
    own.clean()  # no error: the supplier's own organization holds the dataset


def test_deleting_a_supplier_keeps_its_factors(org) -> None:
    supplier = SupplierFactory.create(organization=org)
    factor = EmissionFactorFactory.create(dataset=_supplier_dataset(org), supplier=supplier)
    with pytest.raises(ProtectedError):
        supplier.delete()
    assert EmissionFactor.objects.filter(pk=factor.pk).exists()


def test_for_org_scopes_by_organization() -> None:
    first, second = OrganizationFactory.create(), OrganizationFactory.create()
    mine = SupplierFactory.create(organization=first)
    SupplierFactory.create(organization=second)
    assert list(type(mine).objects.for_org(first)) == [mine]
    assert list(type(mine).objects.for_org(first.pk)) == [mine]
