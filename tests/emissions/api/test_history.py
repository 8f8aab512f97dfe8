"""GET /api/v1/emissions/{id}/history/: an emission's recorded versions, oldest first (the audit trail)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from emissions.audit import audit_context
from emissions.models import Emission
from tests.factories import EmissionFactorFactory, EmissionFactory, FactorDatasetFactory

pytestmark = pytest.mark.django_db


def history(emission_id: int | str) -> str:
    return reverse("emission-history", args=[emission_id])


@pytest.fixture
def emission(org) -> Emission:
    dataset = FactorDatasetFactory(source="desnz", version="2024")
    factor = EmissionFactorFactory(dataset=dataset, activity="desnz:old")
    with audit_context(request_id="create-req", job_id=11):
        return EmissionFactory.create(organization=org, factor=factor, co2e_kg=Decimal("100.5"))


def recalculate(emission: Emission, co2e_kg: str, *, version: str, actor_id: int | None = None) -> None:
    """What a recalculation writes: a new result with another factor (an ORM UPDATE, as a job would run it)."""
    factor = EmissionFactorFactory(dataset=FactorDatasetFactory(source="desnz", version=version))
    with audit_context(actor_id=actor_id, request_id=f"recalc-{version}"):
        Emission.objects.filter(pk=emission.pk).update(co2e_kg=Decimal(co2e_kg), factor=factor)


def test_versions_after_a_recalculation(api, emission):
    recalculate(emission, "120.25", version="2025", actor_id=api.user.pk)

    response = api.get(history(emission.pk))
    assert response.status_code == 200
    created, updated = response.json()
    assert created["action"] == "insert"
    assert (created["actor"], created["actor_id"], created["request_id"], created["job_id"]) == (
        None,
        None,
        "create-req",
        11,
    )
    assert created["changed"] == [] and created["previous"] is None
    assert created["values"]["co2e_kg"] == "100.500000"
    assert created["values"]["factor"] == {
        "id": emission.factor_id,
        "activity": "desnz:old",
        "source": "desnz",
        "dataset_version": "2024",
    }
    assert created["values"]["activity"] == emission.activity_id
    assert created["values"]["data_quality"] == emission.data_quality

    assert updated["action"] == "update"
    assert (updated["actor"], updated["actor_id"], updated["request_id"]) == (
        api.user.username,
        api.user.pk,
        "recalc-2025",
    )
    assert updated["changed"] == ["co2e_kg", "factor"]
    assert updated["values"]["co2e_kg"] == "120.250000"
    assert updated["values"]["factor"]["dataset_version"] == "2025"
    # The previous value, factor and dataset stay readable.
    assert updated["previous"] == {
        "co2e_kg": "100.500000",
        "factor": {"id": emission.factor_id, "activity": "desnz:old", "source": "desnz", "dataset_version": "2024"},
    }
    assert updated["id"] > created["id"]


def test_a_deleted_emissions_history_stays_readable(api, emission):
    emission_id = emission.pk
    Emission.objects.filter(pk=emission_id).delete()

    response = api.get(history(emission_id))
    assert response.status_code == 200
    assert [version["action"] for version in response.json()] == ["insert", "delete"]
    assert response.json()[-1]["values"]["co2e_kg"] == "100.500000"


def test_another_organizations_emission_is_404(other_api, emission):
    assert other_api.get(history(emission.pk)).status_code == 404


@pytest.mark.parametrize("emission_id", ["999999999", "abc", str(2**63)])
def test_an_unknown_emission_is_404(api, emission_id):
    assert api.get(history(emission_id)).status_code == 404


def test_the_query_count_does_not_grow_with_the_versions(api, emission, django_assert_num_queries, cold_cache):
    recalculate(emission, "1", version="v1")
    cold_cache()
    with django_assert_num_queries(3):  # token (user, membership, org joined), events (actor joined), factors
        assert len(api.get(history(emission.pk)).json()) == 2

    for version in range(2, 8):
        recalculate(emission, str(version), version=f"v{version}")
    cold_cache()
    with django_assert_num_queries(3):
        assert len(api.get(history(emission.pk)).json()) == 8


def test_a_changed_conversion_shows_with_its_previous_rows(api, emission):
    before = {"amount": "1000", "currency": "EUR", "spend_year": 2024, "exchange_rate": {"set": "ecb", "year": 2024}}
    after = {**before, "exchange_rate": {"set": "budget", "year": 2024}}
    Emission.objects.filter(pk=emission.pk).update(conversion=before)
    Emission.objects.filter(pk=emission.pk).update(conversion=after)
    created, first, second = api.get(history(emission.pk)).json()
    assert created["values"]["conversion"] is None
    assert (first["changed"], first["values"]["conversion"]) == (["conversion"], before)
    assert second["previous"] == {"conversion": before}
    assert second["values"]["conversion"] == after
