"""emissions.services.rollups: rebuilding the rollups from the emissions, for one organization or all."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from emissions.models import EmissionRollup, Organization, RollupBase, SupplierYearRollup
from emissions.rollups import rollup_differences, rollups_flush
from emissions.services.rollups import rollups_rebuild
from tests.factories import EmissionFactory

pytestmark = pytest.mark.django_db


def kg(model: type[RollupBase], organization: Organization) -> list[Decimal]:
    return list(model.objects.for_org(organization).values_list("co2e_kg", flat=True))


def test_rebuild_of_one_organization_leaves_the_others_alone(org: Organization, other_org: Organization) -> None:
    EmissionFactory.create(organization=org, co2e_kg=Decimal("2"))
    EmissionFactory.create(organization=other_org, co2e_kg=Decimal("5"))
    rollups_flush()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE emissions_emissionrollup SET co2e_kg = 99")
    assert rollups_rebuild(organization_id=org.pk) == 1  # one group per supplier and month
    assert kg(EmissionRollup, org) == [Decimal("2")]
    assert kg(EmissionRollup, other_org) == [Decimal("99")]  # not rebuilt: still wrong
    rollups_rebuild()
    assert kg(EmissionRollup, other_org) == [Decimal("5")]
    assert rollup_differences() == (0, [])


def test_rebuild_counts_this_transactions_writes_once(org: Organization) -> None:
    EmissionFactory.create(organization=org, co2e_kg=Decimal("2"))  # pending: applied by the rebuild first
    rollups_rebuild(organization_id=org.pk)
    EmissionFactory.create(organization=org, co2e_kg=Decimal("3"), activity__supplier=None)
    rollups_flush()
    assert sorted(kg(SupplierYearRollup, org)) == [Decimal("2"), Decimal("3")]
    assert rollup_differences() == (0, [])


def test_a_rebuild_drops_what_was_cached_from_the_rollups(
    org: Organization, other_org: Organization, monkeypatch: pytest.MonkeyPatch
) -> None:
    bumped: list[int] = []
    monkeypatch.setattr("emissions.services.rollups.emissions_changed", bumped.append)
    rollups_rebuild(organization_id=org.pk)
    assert bumped == [org.pk]
    rollups_rebuild()
    assert sorted(bumped[1:]) == sorted([org.pk, other_org.pk])
