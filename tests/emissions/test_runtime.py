"""emissions.runtime: at start-up the domain fills the runtime layer's registries; its organization lookups."""

from __future__ import annotations

import pytest

from emissions import cache as emissions_cache
from emissions.runtime import TENANTS, active_organizations, largest_organization, organizations_by_slug
from emissions.warm import KINDS, WARM_UP
from perf import cache as perf_cache
from perf import tenants
from perf import warm as perf_warm
from tests.factories import ActivityRecordFactory, EmissionFactory


def test_start_up_registers_the_domains_cache_resources() -> None:
    ours = emissions_cache
    domain = {ours.EMISSIONS, ours.SUPPLIERS, ours.SUPPLIER_IDS, ours.FACTORS}
    assert domain | {perf_cache.AUTH} <= set(perf_cache.resources())  # with the runtime's own
    assert (ours.GLOBAL_FACTORS.resource, ours.GLOBAL_FACTORS.organization_id) == (ours.FACTORS, None)


def test_start_up_registers_the_organizations_and_the_warm_up() -> None:
    assert tenants.registered() is TENANTS
    assert WARM_UP in perf_warm.registry()
    assert WARM_UP.kinds == KINDS


@pytest.mark.django_db
def test_active_organizations_have_activity_records(org, other_org) -> None:
    assert list(active_organizations()) == []
    ActivityRecordFactory.create(organization=other_org)
    ActivityRecordFactory.create(organization=org)
    assert [o.slug for o in active_organizations()] == ["acme", "globex"]


@pytest.mark.django_db
def test_largest_organization_has_the_most_emissions(org, other_org) -> None:
    assert largest_organization() == org  # none has emissions: the first one
    EmissionFactory.create(organization=other_org)
    assert largest_organization() == other_org


@pytest.mark.django_db
def test_named_organizations_in_the_order_given(org, other_org) -> None:
    assert {o.slug for o in organizations_by_slug(["globex", "nope"])} == {"globex"}
    assert [o.slug for o in TENANTS.named(["globex", "acme", "globex"])] == ["globex", "acme"]
    with pytest.raises(tenants.UnknownTenants, match=r"Unknown organization\(s\): nope, nada\."):
        TENANTS.named(["acme", "nope", "nada"])
