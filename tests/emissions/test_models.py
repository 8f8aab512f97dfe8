"""emissions.models: tenancy rules that live on the models themselves."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext

from calculator import rules
from emissions.models import Emission, EmissionFactor, FactorDataset, Method, Organization, Supplier
from tests.factories import (
    EmissionFactorFactory,
    EmissionFactory,
    FactorDatasetFactory,
    OrganizationFactory,
    SupplierFactory,
)

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


def _emission(org: Organization, supplier: Supplier | None, category: int, method: str, month: int, kg: str) -> None:
    start = dt.date(2025, month, 1)
    EmissionFactory.create(
        organization=org,
        activity__organization=org,
        activity__supplier=supplier,
        activity__category=category,
        activity__method=method,
        activity__period_start=start,
        activity__period_end=start + dt.timedelta(days=20),
        co2e_kg=Decimal(kg),
    )


@pytest.fixture
def summary_data(org: Organization, other_org: Organization) -> tuple[Supplier, Supplier]:
    """Five emissions of ``org`` over two suppliers (one row without), plus one of ``other_org``."""
    acme, bolt = (
        SupplierFactory.create(organization=org, name="Acme"),
        SupplierFactory.create(organization=org, name="Bolt"),
    )
    _emission(org, acme, 1, Method.SPEND, 3, "1.5")
    _emission(org, acme, 1, Method.ACTIVITY, 1, "2.25")
    _emission(org, bolt, 4, Method.ACTIVITY, 1, "10")
    _emission(org, bolt, 6, Method.SPEND, 2, "0.000001")
    _emission(org, None, 4, Method.DISTANCE, 3, "3")
    _emission(other_org, SupplierFactory.create(organization=other_org), 1, Method.SPEND, 1, "1000")
    return acme, bolt


def _rows(group_by: str, org: Organization) -> list[tuple]:
    return [(row["key"], row["total_kg"], row["count"]) for row in Emission.objects.for_org(org).summary(group_by)]


def test_summary_by_category_ranks_totals_largest_first(org, summary_data) -> None:
    assert _rows("category", org) == [(4, Decimal(13), 2), (1, Decimal("3.75"), 2), (6, Decimal("0.000001"), 1)]


def test_summary_by_method_ties_go_by_key(org, summary_data) -> None:
    _emission(org, None, 2, Method.DISTANCE, 2, "9.25")  # distance now totals 12.25, exactly as much as activity
    assert _rows("method", org) == [
        (Method.ACTIVITY.value, Decimal("12.25"), 2),
        (Method.DISTANCE.value, Decimal("12.25"), 2),
        (Method.SPEND.value, Decimal("1.500001"), 2),
    ]


def test_summary_by_month_is_chronological(org, summary_data) -> None:
    assert _rows("month", org) == [
        (dt.date(2025, 1, 1), Decimal("12.25"), 2),
        (dt.date(2025, 2, 1), Decimal("0.000001"), 1),
        (dt.date(2025, 3, 1), Decimal("4.5"), 2),
    ]


def test_summary_by_supplier_names_each_and_keeps_rows_without_one(org, summary_data) -> None:
    acme, bolt = summary_data
    rows = [
        (r["key"], r["supplier_name"], r["total_kg"], r["count"])
        for r in Emission.objects.for_org(org).summary("supplier")
    ]
    assert rows == [
        (bolt.pk, "Bolt", Decimal("10.000001"), 2),
        (acme.pk, "Acme", Decimal("3.75"), 2),
        (None, None, Decimal(3), 1),
    ]


def test_summary_of_a_filtered_queryset_is_one_query(org, summary_data) -> None:
    queryset = Emission.objects.for_org(org).with_related().filter(category=1).order_by("-period_start")
    with CaptureQueriesContext(connection) as captured:
        rows = list(queryset.summary("supplier"))
    assert len(captured.captured_queries) == 1
    assert [(row["supplier_name"], row["total_kg"]) for row in rows] == [("Acme", Decimal("3.75"))]
    assert Emission.objects.for_org(org).filter(category=15).summary("category").count() == 0


def test_summary_rejects_an_unknown_group(org) -> None:
    with pytest.raises(ValueError, match="group_by must be one of category, supplier, month, method; got 'year'"):
        Emission.objects.summary("year")


def test_average_candidates_are_visible_average_data_factors_of_the_keys(org, other_org) -> None:
    steel = EmissionFactorFactory.create(activity="naics:331110")
    steel_2024 = EmissionFactorFactory.create(
        activity="naics:331110", dataset=FactorDatasetFactory.create(version="2024")
    )
    glass = EmissionFactorFactory.create(activity="naics:327211")
    EmissionFactorFactory.create(activity="naics:111110")  # another key
    own = _supplier_dataset(org)
    EmissionFactorFactory.create(  # a supplier's own factor: supplier-specific, never average data
        dataset=_supplier_dataset(org), activity="naics:331110", supplier=SupplierFactory.create(organization=org)
    )
    foreign = EmissionFactorFactory.create(dataset=_supplier_dataset(other_org), activity="naics:331110")
    org_average = EmissionFactorFactory.create(dataset=own, activity="naics:331110")  # the org's own, no supplier

    with CaptureQueriesContext(connection) as captured:
        found = list(EmissionFactor.objects.average_candidates(org, {"naics:331110", "naics:327211"}))
        versions = {factor.dataset.version for factor in found}  # datasets come with the factors
    assert len(captured.captured_queries) == 1
    assert found == sorted([steel, steel_2024, glass, org_average], key=lambda f: f.pk)
    assert "2024" in versions
    assert foreign not in list(EmissionFactor.objects.average_candidates(org.pk, ["naics:331110"]))
    assert list(EmissionFactor.objects.average_candidates(other_org, ["naics:331110"])) == [steel, steel_2024, foreign]
    assert not EmissionFactor.objects.average_candidates(org, []).exists()


# -- one home per rule: the columns and choices read the calculator's rules --------------------------


def test_methods_and_sources_are_the_calculators():
    assert Method.values == [str(method) for method in rules.Method]
    assert FactorDataset.Source.values == list(rules.SOURCES)


def test_stored_emissions_have_the_calculators_precision():
    field = Emission._meta.get_field("co2e_kg")
    assert (field.max_digits, field.decimal_places) == (rules.CO2E_MAX_DIGITS, rules.CO2E_PLACES)
