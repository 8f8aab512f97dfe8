"""emissions.summaries: the summary a caller gets, from one query, presented as every output presents kg."""

from __future__ import annotations

from decimal import Decimal

import pytest

from emissions.api.serializers import SummaryGroupSerializer, SummarySerializer
from emissions.models import SUMMARY_KEYS, Emission
from emissions.summaries import emission_summary
from tests.emissions.api.payloads import activity_input


def test_an_unknown_grouping_is_refused_before_any_query():
    # No database access is allowed here: a query would fail this test with a RuntimeError.
    with pytest.raises(ValueError, match="group_by"):
        emission_summary(Emission.objects.none(), group_by="colour")


@pytest.mark.django_db
@pytest.mark.parametrize("group_by", list(SUMMARY_KEYS))
def test_each_grouping_is_one_query_in_the_documented_shape(
    api, org, electricity_factor, group_by, django_assert_num_queries
):
    assert (
        api.post(
            "/api/v1/activities/", [activity_input(amount="2"), activity_input(amount="1")], format="json"
        ).status_code
        == 201
    )
    with django_assert_num_queries(1):
        summary = emission_summary(Emission.objects.for_org(org.pk), group_by=group_by)
    assert list(summary) == list(SummarySerializer().fields)
    assert all(list(group) == list(SummaryGroupSerializer().fields) for group in summary["groups"])
    stored = sum(Emission.objects.for_org(org.pk).values_list("co2e_kg", flat=True), Decimal(0))
    assert Decimal(summary["total_co2e_kg"]) == stored > 0
    assert summary["total_co2e_t"] == format(stored.scaleb(-3).quantize(Decimal("1e-9")), "f")
    assert summary["count"] == 2
    assert sum(Decimal(group["share"]) for group in summary["groups"]) == Decimal("100.00")
