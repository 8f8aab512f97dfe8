"""emissions.warm: what the domain warms per organization, as whom, and that it fills what its reads use."""

from __future__ import annotations

import pytest
from django.urls import reverse

from emissions.calculation import FactorResolver
from emissions.models import SUMMARY_KEYS, EmissionFactor, ExchangeRate, Organization
from emissions.warm import member_user
from perf.cache import tiered
from perf.warm import warm
from tests.factories import EmissionFactory, ExchangeRateFactory, MembershipFactory, SupplierFactory


@pytest.fixture
def data(org: Organization, steel_factor: EmissionFactor) -> int:
    """One emission with a supplier, on a published factor; a year of exchange rates. Returns the supplier id."""
    supplier = SupplierFactory.create(organization=org)
    EmissionFactory.create(
        organization=org, factor=steel_factor, activity__supplier=supplier, activity__activity=steel_factor.activity
    )
    ExchangeRateFactory.create(currency="EUR", year=2022)
    return supplier.pk


# -- as whom ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_member_user_is_a_real_member_with_its_membership_loaded(org, django_assert_num_queries):
    membership = MembershipFactory.create(organization=org)
    with django_assert_num_queries(1):
        user = member_user(org)
    with django_assert_num_queries(0):
        assert user.pk == membership.user_id
        assert hasattr(user, "membership")
        assert user.membership.organization_id == org.pk


@pytest.mark.django_db
def test_member_user_without_members_is_an_unsaved_stand_in(org, django_assert_num_queries):
    user = member_user(org)
    with django_assert_num_queries(0):
        assert user.pk is None and user.username == "warm_cache"
        assert hasattr(user, "membership")
        assert user.membership.organization == org
        assert user.is_authenticated


# -- what is warmed -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_factor_resolution_is_primed_for_the_calculator(org, data, steel_factor, django_assert_num_queries):
    report = warm([org], host="testserver")
    assert not report.errors
    with django_assert_num_queries(0):
        resolver = FactorResolver(org)
        resolver.source.prime_activities([steel_factor.activity])
        resolver.source.prime_suppliers([data])
        resolver.source.prime_sets(exchange_rate_sets=["ecb"])
        rate = resolver.exchange_rate("EUR", "USD", 2022)
    assert rate.value == ExchangeRate.objects.get().rate


@pytest.mark.django_db
def test_counts_fill_then_hit(org, data):
    first = warm([org], host="testserver")
    assert [(s.kind, s.counts.filled > 0, s.counts.hits) for s in first.steps] == [
        (step.kind, True, 0) for step in first.steps
    ]
    second = warm([org], host="testserver")
    for before, after in zip(first.steps, second.steps, strict=True):
        assert after.counts.lookups == before.counts.lookups
        assert after.counts.hits == after.counts.lookups and after.counts.filled == after.counts.computes == 0
    assert second.summary().startswith("1 organization(s): factors 4 hit / 0 filled")
    assert second.summary().endswith("0 error(s)")


@pytest.mark.django_db
def test_a_second_warm_up_renews_what_the_first_stored(org, data, steel_factor):
    warm([org], host="testserver")
    client = tiered()._client
    keys = client.keys(f"vcci:c:{tiered().key_version}:*candidates:*")
    assert keys
    for key in keys:
        client.expire(key, 3)  # as if stored by a warm-up almost a TTL ago
    warm([org], host="testserver")
    assert all(client.ttl(key) > 3 for key in keys)


@pytest.mark.django_db
def test_the_steps_of_one_organization(org, data):
    report = warm([org], host="testserver")
    summary = reverse("emission-summary")
    assert [(s.kind, s.label) for s in report.steps] == [
        ("factors", "factor resolution (activities, suppliers, reference sets)"),
        ("factors", f"GET {reverse('factor-list')}"),
        ("suppliers", f"GET {reverse('supplier-list')}"),
        *(("summaries", f"GET {summary}?group_by={key}") for key in SUMMARY_KEYS),
        ("summaries", f"GET {reverse('emission-list')}"),
        ("summaries", f"GET {reverse('activity-list')}"),
    ]
    assert list(report.by_kind()) == ["factors", "suppliers", "summaries"]
