"""/api/v1/activities/: all-or-nothing bulk create, list, detail."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from emissions.api.serializers import ActivitySerializer
from emissions.inputs import MAX_ACTIVITY_ITEMS, ActivityInputSerializer
from emissions.models import ID_MAX, ActivityRecord, Emission, Organization
from tests.emissions.api.payloads import (
    activity_input,
    biodiesel_input,
    freight_input,
    steel_spend_input,
    supplier_specific_input,
    supplier_with_factor,
)
from tests.factories import (
    ActivityRecordFactory,
    EmissionFactorFactory,
    EmissionFactory,
    FactorDatasetFactory,
    PriceIndexFactory,
    SupplierFactory,
)

pytestmark = pytest.mark.django_db

LIST = reverse("activity-list")


def emission_in(org: Organization, start: dt.date, **kwargs: Any) -> Emission:
    """A stored activity + emission for the month starting at ``start``."""
    return EmissionFactory.create(
        organization=org, activity__period_start=start, activity__period_end=start + dt.timedelta(days=27), **kwargs
    )


def test_create_one(api, org, electricity_factor):
    supplier = SupplierFactory(organization=org)
    body = activity_input(supplier=supplier.pk, external_ref="INV-7")
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["amount"] == "1.000000"
    assert data["unit"] == "MWh"
    assert data["external_ref"] == "INV-7"
    assert data["supplier"] == {"id": supplier.pk, "name": supplier.name}
    assert data["emission"]["co2e_kg"] == "177.000000"
    assert data["emission"]["co2e_t"] == "0.177000000"
    assert data["emission"]["factor"]["id"] == electricity_factor.pk

    record = ActivityRecord.objects.get(pk=data["id"])
    assert record.organization == org
    assert record.currency == ""  # not a spend line
    emission = Emission.objects.get(activity=record)
    assert emission.co2e_kg == Decimal("177")
    assert emission.organization == org
    assert emission.supplier == supplier
    assert emission.factor == electricity_factor
    assert emission.period_start == dt.date(2025, 1, 1)
    assert emission.data_quality["score"]


def test_create_list_keeps_order(api, electricity_factor, steel_factor):
    items = [
        activity_input(amount="2"),
        steel_spend_input(unit="USD", spend_year=2022, period_start="2022-03-01", period_end="2022-03-31"),
    ]
    response = api.post(LIST, items, format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert [row["emission"]["co2e_kg"] for row in data] == ["354.000000", "787.000000"]
    assert data[1]["currency"] == "USD"
    assert Emission.objects.count() == 2


def test_one_bad_item_of_50_writes_nothing(api, electricity_factor):
    items = [activity_input(amount=str(i + 1)) for i in range(50)]
    items[17] = activity_input(unit="lightyear")
    items[33] = activity_input(period_start="2025-02-01", period_end="2025-01-01")
    response = api.post(LIST, items, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [17, 33]
    assert "unit" in errors[0]["errors"]
    assert "period_end" in errors[1]["errors"]
    assert ActivityRecord.objects.count() == 0
    assert Emission.objects.count() == 0


def test_shape_and_calculation_errors_reported_together(api, electricity_factor):
    items = [activity_input(), activity_input(amount="NaN"), activity_input(activity="desnz:missing")]
    response = api.post(LIST, items, format="json")
    assert response.status_code == 400
    errors = {e["index"]: e["errors"] for e in response.json()["errors"]}
    assert set(errors) == {1, 2}
    assert "amount" in errors[1]
    assert "activity" in errors[2]
    assert ActivityRecord.objects.count() == 0


def test_other_orgs_supplier_rejected(api, other_org, electricity_factor):
    theirs = SupplierFactory(organization=other_org)
    response = api.post(LIST, [activity_input(), activity_input(supplier=theirs.pk)], format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": 1, "errors": {"supplier": [f"Unknown supplier id {theirs.pk}."]}}]
    assert ActivityRecord.objects.count() == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"period_start": "not-a-date"}, "period_start"), ({"category": 99}, "category"), ({"amount": "-5"}, "amount")],
)
def test_single_object_errors(api, electricity_factor, overrides, field):
    response = api.post(LIST, activity_input(**overrides), format="json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["index"] == 0
    assert field in response.json()["errors"][0]["errors"]


def test_empty_list(api):
    response = api.post(LIST, [], format="json")
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_list_limit(api):
    response = api.post(LIST, [{}] * 10_001, format="json")
    assert response.status_code == 400
    assert "10000" in response.json()["non_field_errors"][0]


def test_a_full_list_of_10000_is_stored(api, org, electricity_factor):
    # The documented maximum, end to end: it must fit the request body limit and be stored whole.
    body = [activity_input(external_ref=f"R-{i}") for i in range(10_000)]
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201
    data = response.json()
    assert len(data) == 10_000 and data[-1]["external_ref"] == "R-9999"
    assert {row["emission"]["co2e_kg"] for row in data} == {"177.000000"}
    assert ActivityRecord.objects.for_org(org).count() == Emission.objects.for_org(org).count() == 10_000


def longest_value(field: serializers.Field) -> Any:
    """The longest JSON value ``field`` accepts; unbounded text fails (no body limit could be promised)."""
    if isinstance(field, serializers.ChoiceField):
        return max(map(str, field.choices), key=len)
    if isinstance(field, serializers.DecimalField):
        assert field.max_digits is not None and field.decimal_places is not None
        return f"{'9' * (field.max_digits - field.decimal_places)}.{'9' * field.decimal_places}"
    if isinstance(field, serializers.CharField):
        assert field.max_length is not None, f"{field.field_name} has no max_length"
        return "x" * field.max_length
    if isinstance(field, serializers.DateField):
        return "2025-12-31"
    if isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        return ID_MAX
    raise AssertionError(f"no longest value for {field.field_name} ({type(field).__name__})")


def test_the_largest_valid_list_fits_the_request_body_limit(settings):
    item = {name: longest_value(field) for name, field in ActivityInputSerializer().fields.items()}
    body = json.dumps([item] * MAX_ACTIVITY_ITEMS)  # with json's default ", " and ": " separators
    assert len(body.encode()) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_a_body_over_the_limit_is_413_naming_it(api, org, electricity_factor, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post(LIST, [activity_input() for _ in range(20)], format="json")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "The request body is larger than the 1,000-byte limit; split it into smaller requests."
    }
    assert not ActivityRecord.objects.exists()


def test_list_newest_period_first_and_filters(api, org):
    a = emission_in(org, dt.date(2025, 1, 1), activity__category=1)
    b = emission_in(org, dt.date(2025, 3, 1), activity__category=4)
    c = emission_in(org, dt.date(2025, 2, 1), activity__category=1)
    response = api.get(LIST)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert [r["id"] for r in rows] == [b.activity_id, c.activity_id, a.activity_id]
    assert rows[0]["emission"]["co2e_kg"] == "17.700000"
    assert [r["id"] for r in api.get(LIST, {"category": 1}).json()["results"]] == [c.activity_id, a.activity_id]
    assert [r["id"] for r in api.get(LIST, {"supplier": a.supplier_id}).json()["results"]] == [a.activity_id]
    assert [r["id"] for r in api.get(LIST, {"period_from": "2025-02-01"}).json()["results"]] == [
        b.activity_id,
        c.activity_id,
    ]
    assert api.get(LIST, {"method": "spend"}).json()["results"] == []


def test_detail(api, org):
    emission = EmissionFactory(organization=org)
    response = api.get(reverse("activity-detail", args=[emission.activity_id]))
    assert response.status_code == 200
    assert response.json()["emission"]["id"] == emission.pk


def test_query_count_is_constant(api, org, django_assert_num_queries, cold_cache):
    EmissionFactory(organization=org)
    cold_cache()  # the uncached path
    with django_assert_num_queries(
        2
    ):  # token (user, membership, org joined), page with supplier/emission/factor joined
        assert len(api.get(LIST).json()["results"]) == 1
    EmissionFactory.create_batch(99, organization=org)
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # a full default page
        assert len(api.get(LIST).json()["results"]) == 100


def test_create_query_count_does_not_grow_per_item(api, org, electricity_factor, django_assert_max_num_queries):
    supplier = SupplierFactory(organization=org)
    with django_assert_max_num_queries(15):
        response = api.post(LIST, [activity_input(supplier=supplier.pk) for _ in range(200)], format="json")
    assert response.status_code == 201
    assert Emission.objects.filter(supplier=supplier).count() == 200


def test_null_item_is_that_items_error(api, electricity_factor):
    response = api.post(LIST, [activity_input(), None, activity_input()], format="json")
    assert response.status_code == 400
    assert response.json() == {
        "errors": [{"index": 1, "errors": {"non_field_errors": ["Each item must be an object; got null."]}}]
    }
    assert ActivityRecord.objects.count() == 0


# -- the period's year as the default year and spend year ---------------------------------------------


@pytest.fixture
def old_electricity_factor():
    """An older edition of the UK electricity factor (2010), beside the 2025 one."""
    dataset = FactorDatasetFactory.create(source="desnz", version="2010", basis_year=2010)
    return EmissionFactorFactory.create(
        dataset=dataset, activity="desnz:7_400_4000_5", region="GB", year=2010, unit="kWh", co2e_per_unit="0.5"
    )


def codes(notes: list[dict[str, str]]) -> list[str]:
    return [note["code"] for note in notes]


def test_year_defaults_to_the_periods_year(api, electricity_factor, old_electricity_factor):
    """A 2012 activity with no year uses the factor nearest 2012 (2010), not the newest (2025), and says so."""
    response = api.post(LIST, activity_input(period_start="2012-05-01", period_end="2012-05-31"), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["year"] == 2012  # stored: the value used, not the blank sent
    assert data["spend_year"] is None  # not a spend line
    emission = data["emission"]
    assert emission["factor"]["id"] == old_electricity_factor.pk
    assert emission["co2e_kg"] == "500.000000"  # 1 MWh x 0.5 kg CO2e/kWh
    assert codes(emission["fallbacks"]) == ["year_from_period", "year_fallback_earlier"]
    assert "2012" in emission["fallbacks"][0]["detail"]
    # |2012 - 2010| = 2 -> time score 2, one worse for the year fallback.
    assert emission["data_quality"]["time"] == 3
    assert ActivityRecord.objects.get(pk=data["id"]).year == 2012


def test_only_a_later_factor_is_a_year_fallback_with_a_poor_time_score(api, electricity_factor):
    response = api.post(LIST, activity_input(period_start="2012-05-01", period_end="2012-05-31"), format="json")
    assert response.status_code == 201, response.json()
    emission = response.json()["emission"]
    assert emission["factor"]["id"] == electricity_factor.pk
    assert codes(emission["fallbacks"]) == ["year_from_period", "year_fallback_later"]
    assert emission["data_quality"]["time"] == 5  # 13 years apart (it was 1 when the period was ignored)


def test_explicit_year_wins_over_the_period(api, electricity_factor, old_electricity_factor):
    body = activity_input(year=2025, period_start="2012-05-01", period_end="2012-05-31")
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    emission = response.json()["emission"]
    assert emission["factor"]["id"] == electricity_factor.pk
    assert emission["fallbacks"] == []


def spend_input(**overrides: Any) -> dict[str, Any]:
    """The steel spend line for March 2024, against the 2022 factor, without a spend_year."""
    return steel_spend_input(**{"year": 2022, "period_start": "2024-03-01", "period_end": "2024-03-31", **overrides})


def test_spend_year_defaults_to_the_periods_year(api, steel_factor):
    PriceIndexFactory.create(currency="USD", year=2022, value=Decimal("100"))
    PriceIndexFactory.create(currency="USD", year=2024, value=Decimal("110"))
    response = api.post(LIST, spend_input(), format="json")
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["spend_year"] == 2024
    # 1000 USD of 2024 = 1000 x 100/110 USD of 2022 (the factor's price year) x 0.787 = 715.4545...
    assert data["emission"]["co2e_kg"] == "715.454545"
    assert codes(data["emission"]["fallbacks"]) == ["spend_year_from_period"]
    assert ActivityRecord.objects.get(pk=data["id"]).spend_year == 2024


def test_spend_year_default_without_its_price_index_is_a_400_naming_spend_year(api, steel_factor):
    PriceIndexFactory.create(currency="USD", year=2022, value=Decimal("100"))
    PriceIndexFactory.create(currency="USD", year=2025, value=Decimal("110"))
    response = api.post(LIST, spend_input(), format="json")  # a 2024 period: the set has 2022 and 2025, not 2024
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["index"] == 0
    messages = error["errors"]["spend_year"]
    assert "No price index for USD 2024 in the set 'cpi-u' (it has 2022, 2025)" in messages[0]
    assert "spend_year was not given" in messages[1]
    assert ActivityRecord.objects.count() == 0


def test_spend_year_after_the_newest_price_index_is_a_stored_fallback(api, steel_factor):
    PriceIndexFactory.create(currency="USD", year=2022, value=Decimal("100"), source="test CPI")
    PriceIndexFactory.create(currency="USD", year=2023, value=Decimal("104"), source="test CPI")
    response = api.post(LIST, spend_input(), format="json")  # a 2024 period, after the set's newest year
    assert response.status_code == 201, response.json()
    emission = response.json()["emission"]
    assert codes(emission["fallbacks"]) == ["spend_year_from_period", "price_index_year_fallback"]
    assert emission["conversion"]["price_index"]["from"]["year"] == 2023
    assert emission["conversion"]["price_index"]["from"]["source"] == "test CPI"
    stored = Emission.objects.get(activity_id=response.json()["id"])
    assert stored.conversion == emission["conversion"]
    assert codes(stored.fallbacks) == ["spend_year_from_period", "price_index_year_fallback"]


def test_spend_in_the_factors_price_year_needs_no_index(api, steel_factor):
    response = api.post(LIST, spend_input(period_start="2022-03-01", period_end="2022-03-31"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["emission"]["co2e_kg"] == "787.000000"
    assert response.json()["spend_year"] == 2022


def test_calculate_endpoint_keeps_its_defaults(api, steel_factor):
    """/calculate/ has no period: no year means the newest factor, no spend_year the factor's price year."""
    response = api.post(reverse("calculate"), steel_spend_input(), format="json")
    assert response.status_code == 200, response.json()
    assert codes(response.json()["fallbacks"]) == ["spend_year_assumed"]


# -- query count per distinct supplier ------------------------------------------------------------------


def supplier_activity_items(org: Organization, count: int) -> list[dict[str, Any]]:
    """A spend line and a supplier-specific line (no activity: the supplier's own factor) per supplier."""
    items: list[dict[str, Any]] = []
    for _ in range(count):
        supplier, _ = supplier_with_factor(org)
        period = {"period_start": "2022-01-01", "period_end": "2022-01-31"}
        items.append(spend_input(supplier=supplier.pk, **period))
        items.append(supplier_specific_input(supplier, amount="4", **period))
    return items


def test_create_query_count_does_not_grow_with_distinct_suppliers(api, org, steel_factor, cold_cache):
    counts = []
    for suppliers in (1, 50):
        items = supplier_activity_items(org, suppliers)
        cold_cache()  # the uncached path
        with CaptureQueriesContext(connection) as captured:
            response = api.post(LIST, items, format="json")
        assert response.status_code == 201, response.json()
        assert [row["emission"]["co2e_kg"] for row in response.json()] == ["787.000000", "10.000000"] * suppliers
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts


def test_stored_mass_times_distance_activity_posts_back_unchanged(api, freight_factor):
    """A stored activity (amount = mass x distance, plus mass and distance) is valid input as it stands."""
    first = api.post(LIST, freight_input(period_start="2025-03-01", period_end="2025-03-31"), format="json")
    assert first.status_code == 201, first.json()
    stored = first.json()
    assert (stored["amount"], stored["unit"]) == ("1200.000000", "t*km")
    fields = ("category", "method", "activity", "amount", "unit", "mass", "mass_unit", "distance", "distance_unit")
    again = api.post(
        LIST,
        {**{f: stored[f] for f in fields}, "period_start": "2025-03-01", "period_end": "2025-03-31"},
        format="json",
    )
    assert again.status_code == 201, again.json()
    assert again.json()["emission"]["co2e_kg"] == stored["emission"]["co2e_kg"] == "205.752000"


def test_a_stored_biomass_activity_keeps_its_biogenic_co2_apart(api, org, hub_imported):
    body = {**biodiesel_input(), "period_start": "2025-01-01", "period_end": "2025-01-31"}
    response = api.post(LIST, body, format="json")
    assert response.status_code == 201, response.json()
    emission = response.json()["emission"]
    assert (emission["co2e_kg"], emission["biogenic_co2_kg"]) == ("0.657000", "945.000000")
    assert emission["factor"]["biogenic_co2_per_unit"] == "9.450000000000000"
    stored = Emission.objects.for_org(org).get()
    assert (stored.co2e_kg, stored.biogenic_co2_kg) == (Decimal("0.657"), Decimal("945"))

    detail = api.get(reverse("emission-detail", args=[stored.pk])).json()
    assert (detail["co2e_kg"], detail["biogenic_co2_kg"]) == ("0.657000", "945.000000")
    summary = api.get(reverse("emission-summary"), {"group_by": "category"}).json()
    assert (summary["total_co2e_kg"], summary["total_biogenic_co2_kg"]) == ("0.657000", "945.000000")
    assert summary["groups"][0]["biogenic_co2_kg"] == "945.000000"


def test_pages_are_drf_s_bytes(api, org, rows_and_drf):
    """List pages are written from value rows (perf.rows): DRF's bytes and headers, first, next and filtered pages."""
    supplier = SupplierFactory(organization=org, name="Zürich \u2013 東京 \u2029")
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=None, activity__mass=Decimal("0.000001"))
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=supplier, activity__category=4)
    emission_in(org, dt.date(2025, 2, 1), activity__distance=Decimal("123456789012345678.5"))
    # An activity without an emission (rows not written through the API): its emission is null.
    ActivityRecordFactory(organization=org, period_start=dt.date(2024, 5, 1), period_end=dt.date(2024, 5, 2))
    url, seen = LIST + "?limit=3", 0
    while url:
        served, drf = rows_and_drf(url)
        assert served.content == drf.content and served.items() == drf.items()
        seen += len(served.json()["results"])
        url = served.json()["next"]
    assert seen == 4
    for params in ({"category": 4}, {"supplier": supplier.pk}, {"period_to": "2024-12-31"}):
        served, drf = rows_and_drf(LIST, params)
        assert served.content == drf.content and served.items() == drf.items()


def drf_bytes(ids: list[int], *, many: bool = True) -> bytes:
    """What DRF's ``ActivitySerializer`` and ``JSONRenderer`` write for the stored activities ``ids``, in that order."""
    records = ActivityRecord.objects.with_related().in_bulk(ids)
    serializer = ActivitySerializer([records[pk] for pk in ids], many=True)
    return JSONRenderer().render(serializer.data if many else serializer.data[0])


def test_a_create_answers_drf_s_bytes_from_value_rows(api, org, electricity_factor, steel_factor):
    """The created activities are written from value rows read back (perf.rows), as DRF's serializer writes them,
    in the order sent, in one query whatever their number; one object answers one object."""
    supplier = SupplierFactory(organization=org, name="Zürich \u2013 東京 \u2029")
    items = [
        activity_input(amount="5", unit="kWh", period_start="2025-02-01", period_end="2025-02-28"),
        activity_input(amount="2", supplier=supplier.pk),
        steel_spend_input(unit="USD", spend_year=2022, period_start="2022-03-01", period_end="2022-03-31"),
        activity_input(amount="0.000001", period_start="2025-01-01", period_end="2025-01-01"),
    ]
    response = api.post(LIST, items, format="json")
    assert response.status_code == 201, response.json()
    ids = [row["id"] for row in response.json()]
    assert [row["amount"] for row in response.json()][:2] == ["5.000000", "2.000000"]  # the order sent
    assert response.json()[2]["period_start"] == "2022-03-01" and len(set(ids)) == 4
    assert response.content == drf_bytes(ids)
    one = api.post(LIST, activity_input(supplier=supplier.pk), format="json")
    assert one.status_code == 201 and one.content == drf_bytes([one.json()["id"]], many=False)
    with CaptureQueriesContext(connection) as queries:
        assert api.post(LIST, [activity_input(amount=str(i + 1)) for i in range(30)], format="json").status_code == 201
    read_back = [
        q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"emissions_activityrecord"."id" IN' in q["sql"]
    ]
    assert len(read_back) == 1


def test_a_created_row_gone_before_it_is_read_back_is_answered_from_the_objects(
    api, org, electricity_factor, monkeypatch
):
    """Deleted by another request between the commit and the read-back: the answer is still the created rows."""
    from emissions.api import views

    submit = views.activities_submit

    def submit_then_lose_one(**kwargs: Any) -> Any:
        records = submit(**kwargs)
        ActivityRecord.objects.filter(pk=records[0].pk).delete()
        return records

    monkeypatch.setattr(views, "activities_submit", submit_then_lose_one)
    response = api.post(LIST, [activity_input(amount="2"), activity_input(amount="3")], format="json")
    assert response.status_code == 201
    assert [row["amount"] for row in response.json()] == ["2.000000", "3.000000"]


def test_a_create_without_value_rows_answers_the_same_bytes(api, org, electricity_factor, settings):
    settings.LIST_ROWS = False
    response = api.post(LIST, [activity_input(amount="2"), activity_input(amount="3")], format="json")
    assert response.status_code == 201
    assert response.content == drf_bytes([row["id"] for row in response.json()])


def test_a_replayed_create_answers_the_first_answers_bytes(api, org, electricity_factor):
    items = [activity_input(amount="2"), activity_input(amount="3")]
    first = api.post(LIST, items, format="json", HTTP_IDEMPOTENCY_KEY="create-rows-1")
    again = api.post(LIST, items, format="json", HTTP_IDEMPOTENCY_KEY="create-rows-1")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.content == first.content
    assert first.content == drf_bytes([row["id"] for row in first.json()])
    assert ActivityRecord.objects.count() == 2


# -- input a user would not expect to be taken ----------------------------------------------------------------


def test_unknown_fields_are_errors_naming_them_by_index(api, electricity_factor):
    response = api.post(LIST, [activity_input(), activity_input(external_reference="INV-1")], format="json")
    assert response.status_code == 400
    assert response.json() == {"errors": [{"index": 1, "errors": {"external_reference": ["Unknown field."]}}]}
    assert not ActivityRecord.objects.exists()


def test_an_amount_with_underscores_is_an_error_not_a_thousand(api, electricity_factor):
    response = api.post(LIST, activity_input(amount="1_000"), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"][0]["errors"]) == ["amount"]
    assert not ActivityRecord.objects.exists()


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "-"])
def test_external_ref_a_spreadsheet_would_run_is_an_error_naming_it(api, electricity_factor, text):
    response = api.post(LIST, [activity_input(external_ref="INV-1"), activity_input(external_ref=text)], format="json")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["index"] == 1
    assert list(error["errors"]) == ["external_ref"]
    assert "Must not start with" in error["errors"]["external_ref"][0]
    assert not ActivityRecord.objects.exists()


@pytest.mark.parametrize("number", ["1e400", "1e-400"])
def test_an_out_of_range_json_number_is_that_items_error(api, electricity_factor, number):
    good = json.dumps(activity_input())
    bad = json.dumps(activity_input(amount="AMOUNT")).replace('"AMOUNT"', number)
    response = api.post(LIST, f"[{good}, {bad}, {good}]", content_type="application/json")
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["index"], list(error["errors"])) == (1, ["amount"])
    assert not ActivityRecord.objects.exists()
