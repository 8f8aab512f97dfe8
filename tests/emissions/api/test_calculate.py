"""POST /api/v1/calculate/ and /api/v1/calculate/batch/."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from calculator.shapes import (
    CalculationResultDict,
    ConversionDict,
    DataQualityDict,
    ExchangeRateUseDict,
    FactorRefDict,
    NoteDict,
    ReferenceRowDict,
)
from emissions.api import views
from emissions.models import ActivityRecord, Emission
from perf import admission
from perf.rows import RenderedJSONResponse
from tests.emissions.api.payloads import (
    HUB_BIODIESEL,
    biodiesel_input,
    electricity_input,
    freight_input,
    steel_spend_input,
    supplier_specific_input,
    supplier_with_factor,
)
from tests.factories import EmissionFactorFactory, ExchangeRateFactory, PriceIndexFactory, SupplierFactory

pytestmark = pytest.mark.django_db

URL = reverse("calculate")
BATCH_URL = reverse("calculate-batch")


def test_spend_steel_1000_usd_2022(api, steel_factor):
    body = steel_spend_input(unit="USD", currency="USD", spend_year=2022)
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["co2e_kg"] == "787.000000"
    assert data["factor"]["id"] == steel_factor.pk
    assert data["factor"]["activity"] == "naics:331110"
    assert data["factor"]["source"] == "epa_supply_chain"
    assert data["factor"]["co2e_per_unit"] == "0.787000000000000"
    assert data["method"] == "spend"
    assert data["category"] == 1


def assert_result_shape(data: dict) -> None:
    """``data`` has exactly the keys of the one definition of a result (calculator.shapes), in its order."""
    assert list(data) == list(CalculationResultDict.__annotations__)
    assert list(data["factor"]) == list(FactorRefDict.__annotations__)
    assert list(data["data_quality"]) == list(DataQualityDict.__annotations__)
    for note in [*data["fallbacks"], *data["warnings"]]:
        assert list(note) == list(NoteDict.__annotations__)


def test_spend_in_another_currency_and_year_answers_its_conversion_in_the_result_shape(api, steel_factor):
    ExchangeRateFactory.create(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.1"), source="fx")
    PriceIndexFactory.create(currency="USD", year=2022, value=Decimal("100"), source="cpi")
    PriceIndexFactory.create(currency="USD", year=2024, value=Decimal("110"), source="cpi")
    body = steel_spend_input(unit="", currency="EUR", spend_year=2024)
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["co2e_kg"] == "787.000000"  # 1000 x 1.1 x 100 / 110 x 0.787
    assert_result_shape(data)
    conversion = data["conversion"]
    assert list(conversion) == list(ConversionDict.__annotations__)
    assert list(conversion["exchange_rate"]) == list(ExchangeRateUseDict.__annotations__)
    assert list(conversion["price_index"]) == ["set", "from", "to"]
    for row in [
        *conversion["exchange_rate"]["rows"],
        conversion["price_index"]["from"],
        conversion["price_index"]["to"],
    ]:
        assert list(row) == list(ReferenceRowDict.__annotations__)
    assert conversion["exchange_rate"]["rows"][0]["source"] == "fx"
    assert [conversion["price_index"][end]["year"] for end in ("from", "to")] == [2024, 2022]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("exchange_rate_set", "nope", "No exchange-rate set 'nope' is loaded: check the name"),
        ("price_index_set", "nope", "No price-index set 'nope' is loaded: check the name"),
        ("exchange_rate_set", "Budget 2025", "A set name is lower-case letters"),
        ("price_index_set", "x" * 33, "Ensure this field has no more than 32 characters."),
    ],
)
def test_a_reference_set_that_is_not_there_is_a_400_on_its_field(api, steel_factor, field, value, message):
    ExchangeRateFactory.create(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.1"))
    PriceIndexFactory.create(currency="USD", year=2022, value=Decimal("100"))
    PriceIndexFactory.create(currency="USD", year=2024, value=Decimal("110"))
    body = steel_spend_input(unit="", currency="EUR", spend_year=2024, **{field: value})
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]


def test_calculate_answers_the_result_shape(api, electricity_factor):
    # A region that falls back, so the notes' shape is checked too.
    response = api.post(URL, electricity_input(region="FR"), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["fallbacks"]
    assert_result_shape(response.json())


def test_batch_answers_the_result_shape_per_item(api, electricity_factor):
    response = api.post(BATCH_URL, {"items": [electricity_input(region="FR"), electricity_input()]}, format="json")
    assert response.status_code == 200, response.json()
    for item in response.json()["results"]:
        assert_result_shape(item)


def test_electricity_1_mwh(api, electricity_factor):
    response = api.post(URL, electricity_input(), format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["co2e_kg"] == "177.000000"
    assert data["factor"]["id"] == electricity_factor.pk
    assert data["factor"]["activity"] == "desnz:7_400_4000_5"
    assert data["factor"]["unit"] == "kWh"
    assert data["input"]["unit"] == "MWh"


def test_diesel_1_cubic_metre(api, diesel_factor):
    body = {"category": 3, "method": "activity", "activity": "desnz:1_101_1011_8", "amount": "1", "unit": "m³"}
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["co2e_kg"] == "2570.820000"
    assert data["factor"]["id"] == diesel_factor.pk
    assert data["factor"]["name"] == "Diesel (average biofuel blend)"


def test_factor_id_pins_the_factor(api, electricity_factor):
    body = electricity_input(activity="", factor_id=electricity_factor.pk, amount="10", unit="kWh")
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["co2e_kg"] == "1.770000"


def test_calculate_stores_nothing(api, electricity_factor):
    api.post(URL, electricity_input(), format="json")
    assert ActivityRecord.objects.count() == 0
    assert Emission.objects.count() == 0


def test_own_supplier_is_accepted(api, org, electricity_factor):
    supplier = SupplierFactory(organization=org)
    response = api.post(URL, electricity_input(supplier=supplier.pk), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["input"]["supplier_id"] == supplier.pk


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"unit": "furlongs_per_parsec"}, "unit"),
        ({"unit": "kg"}, "unit"),
        ({"amount": "-1"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"amount": "-Infinity"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"activity": "desnz:no_such_factor"}, "activity"),
        ({"activity": ""}, "activity"),
        ({"category": 0}, "category"),
        ({"category": 16}, "category"),
        ({"method": "guess"}, "method"),
        ({"currency": "usd"}, "currency"),
        ({"supplier": 999_999}, "supplier"),
        ({"mass": "5", "mass_unit": "t", "method": "distance"}, "distance"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, electricity_factor, overrides, field):
    response = api.post(URL, electricity_input(**overrides), format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body, body
    assert all(isinstance(message, str) and message for message in body[field])


def test_missing_required_fields(api):
    response = api.post(URL, {}, format="json")
    assert response.status_code == 400
    assert {"category", "method"} <= set(response.json())


def test_amount_and_unit_required_for_activity(api, electricity_factor):
    body = {"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5"}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json() == {"amount": ["This field is required."], "unit": ["This field is required."]}


def test_spend_without_unit_is_in_its_currency(api, steel_factor):
    response = api.post(URL, steel_spend_input(spend_year=2022), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["co2e_kg"] == "787.000000"
    assert response.json()["input"]["unit"] == "USD"


def test_distance_as_mass_times_distance_needs_no_amount(api, freight_factor):
    response = api.post(URL, freight_input(), format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    # 20 t x 60 km = 1,200 t*km x 0.17146 kg CO2e per t*km
    assert data["co2e_kg"] == "205.752000"
    assert data["converted_amount"] == "1200"
    assert (data["input"]["amount"], data["input"]["unit"]) == ("1200.000000", "t*km")


def test_mass_times_distance_too_large(api, freight_factor):
    response = api.post(URL, freight_input(mass="1000000000000", distance="1000000000"), format="json")
    assert response.status_code == 400
    assert response.json() == {"mass": ["mass x distance is too large."]}


# -- batch ----------------------------------------------------------------------------------------


def test_batch_isolates_a_bad_item_and_keeps_order(api, electricity_factor, diesel_factor):
    items = [
        electricity_input(amount="1"),
        electricity_input(amount="2"),
        electricity_input(unit="parsec"),
        {"category": 3, "method": "activity", "activity": "desnz:1_101_1011_8", "amount": "1", "unit": "m**3"},
        electricity_input(amount="-3"),
        electricity_input(amount="3"),
    ]
    response = api.post(BATCH_URL, {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert len(results) == 6
    assert results[0]["co2e_kg"] == "177.000000"
    assert results[1]["co2e_kg"] == "354.000000"
    assert "unit" in results[2]["error"]
    assert results[3]["co2e_kg"] == "2570.820000"
    assert results[3]["factor"]["id"] == diesel_factor.pk
    assert "amount" in results[4]["error"]
    assert results[5]["co2e_kg"] == "531.000000"


def test_answers_are_drf_s_bytes_with_or_without_the_row_writer(api, settings, electricity_factor, steel_factor):
    """The single and batch answers, written with orjson (``perf.rows.written_response``) or by DRF's renderer
    (``LIST_ROWS`` off), are the same bytes and headers; the browsable API still answers."""
    items = [electricity_input(amount="1"), electricity_input(unit="parsec"), steel_spend_input(unit="USD")]
    requests = [(URL, items[0]), (BATCH_URL, {"items": items})]

    kinds: list[type] = []

    def answers(accept: str = "application/json") -> list[tuple[int, bytes, list[tuple[str, str]]]]:
        # One request id for all: each response echoes its request's X-Request-ID.
        sent = [
            api.post(url, body, format="json", HTTP_ACCEPT=accept, HTTP_X_REQUEST_ID="same") for url, body in requests
        ]
        kinds.extend(type(r) for r in sent)
        return [(r.status_code, r.content, sorted(r.items())) for r in sent]

    written = answers()
    assert kinds == [RenderedJSONResponse, RenderedJSONResponse]  # written by orjson
    html = answers("text/html")
    settings.LIST_ROWS = False
    kinds.clear()
    assert answers() == written
    assert RenderedJSONResponse not in kinds  # written by DRF's renderer
    assert [status for status, _, _ in written] == [200, 200]
    results = json.loads(written[1][1])["results"]
    assert results[0]["co2e_kg"] == "177.000000" and "unit" in results[1]["error"]
    assert [(status, b"<html" in body) for status, body, _ in html] == [(200, True), (200, True)]


def test_batch_checks_suppliers_per_item(api, org, other_org, electricity_factor):
    mine = SupplierFactory(organization=org)
    theirs = SupplierFactory(organization=other_org)
    items = [electricity_input(supplier=mine.pk), electricity_input(supplier=theirs.pk)]
    results = api.post(BATCH_URL, {"items": items}, format="json").json()["results"]
    assert results[0]["co2e_kg"] == "177.000000"
    assert "supplier" in results[1]["error"]


def test_batch_shares_one_resolver(api, electricity_factor, django_assert_max_num_queries):
    """100 identical lookups cost no more queries than a handful: the resolver memoizes."""
    items = [electricity_input() for _ in range(100)]
    with django_assert_max_num_queries(10):
        response = api.post(BATCH_URL, {"items": items}, format="json")
    assert response.status_code == 200
    assert {r["co2e_kg"] for r in response.json()["results"]} == {"177.000000"}


@pytest.mark.parametrize("items", [[], "nope", None])
def test_batch_items_shape(api, items):
    response = api.post(BATCH_URL, {"items": items}, format="json")
    assert response.status_code == 400
    assert "items" in response.json()


def test_batch_more_than_1000_items(api):
    response = api.post(BATCH_URL, {"items": [electricity_input()] * 1001}, format="json")
    assert response.status_code == 400
    assert "items" in response.json()


def test_batch_item_not_an_object_fails_alone(api, electricity_factor):
    response = api.post(BATCH_URL, {"items": [electricity_input(), 5]}, format="json")
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["co2e_kg"] == "177.000000"
    assert "non_field_errors" in results[1]["error"]


def test_batch_null_item_fails_alone(api, electricity_factor):
    response = api.post(BATCH_URL, {"items": [electricity_input(), None, [1]]}, format="json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert results[0]["co2e_kg"] == "177.000000"
    assert results[1] == {"error": {"non_field_errors": ["Each item must be an object; got null."]}}
    assert results[2] == {"error": {"non_field_errors": ["Each item must be an object; got list."]}}


# -- supplier-specific without an activity ------------------------------------------------------------


def test_supplier_specific_without_activity_uses_the_suppliers_newest_factor(api, org):
    supplier, factor = supplier_with_factor(org)
    response = api.post(URL, supplier_specific_input(supplier), format="json")
    assert response.status_code == 200, response.json()
    data = response.json()
    assert data["factor"]["id"] == factor.pk
    assert data["co2e_kg"] == "25.000000"  # 10 kg x 2.5 kg CO2e/kg
    assert data["data_quality"]["reliability"] == 1  # the supplier's own data


def test_supplier_specific_without_activity_or_supplier(api):
    body = {"category": 1, "method": "supplier_specific", "amount": "10", "unit": "kg"}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["supplier"]


def test_supplier_specific_without_activity_for_a_supplier_with_no_factor(api, org):
    supplier = SupplierFactory.create(organization=org)
    response = api.post(URL, supplier_specific_input(supplier), format="json")
    assert response.status_code == 400
    assert "activity" in response.json()  # the calculator asks for an activity for the average-data fallback


def test_other_methods_still_need_factor_id_or_activity(api):
    response = api.post(URL, {"category": 1, "method": "activity", "amount": "10", "unit": "kg"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"activity": ["Give either factor_id or activity."]}


# -- mass x distance with amount -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"amount": "5", "unit": "t*km"}, {"amount": "5"}, {"unit": "t*km"}],
)
def test_mass_times_distance_and_a_different_amount_is_rejected(api, freight_factor, extra):
    response = api.post(URL, freight_input(**extra), format="json")
    assert response.status_code == 400
    message = (
        "Give amount + unit, or mass, mass_unit, distance and distance_unit; both only if they agree. "
        "(mass x distance is 1200.000000 t*km)"
    )
    assert response.json() == {name: [message] for name in extra}


def test_mass_times_distance_with_its_own_product_is_accepted(api, freight_factor):
    # The stored form of a mass x distance activity carries both; posting it back must work.
    response = api.post(URL, freight_input(amount="1200", unit="t*km"), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["co2e_kg"] == "205.752000"


# -- batch query count per distinct supplier -------------------------------------------------------------


def supplier_items(org, count: int) -> list[dict]:
    """A spend item and a supplier-specific item for each of ``count`` distinct suppliers."""
    items = []
    for _ in range(count):
        supplier, _ = supplier_with_factor(org)
        items.append(steel_spend_input(spend_year=2022, supplier=supplier.pk))
        items.append(supplier_specific_input(supplier, amount="4"))
    return items


def test_batch_query_count_does_not_grow_with_distinct_suppliers(api, org, steel_factor, cold_cache):
    counts = []
    for suppliers in (1, 50):
        items = supplier_items(org, suppliers)
        cold_cache()  # the uncached path
        with CaptureQueriesContext(connection) as captured:
            response = api.post(BATCH_URL, {"items": items}, format="json")
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["co2e_kg"] for r in results] == ["787.000000", "10.000000"] * suppliers, results
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts


# -- exact and unambiguous ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unit", "amount", "factor_unit", "per_unit", "expected"),
    [
        # DESNZ 2025 5_305_3127_9 per mile: exactly 0.3901175 kg -> 0.390118 (half-even, rounded once).
        ("km", "0.360426", "mile", "1.74192", "0.390118"),
        # EPA Hub 2024 blast furnace gas per scf: exactly 5784.7260625 kg -> 5784.726062.
        ("m**3", "6489.277344", "ft**3", "0.025242441", "5784.726062"),
    ],
)
def test_a_tie_of_the_exact_value_is_rounded_half_even_once(api, unit, amount, factor_unit, per_unit, expected):
    factor = EmissionFactorFactory.create(unit=factor_unit, co2e_per_unit=Decimal(per_unit))
    body = {"category": 4, "method": "activity", "activity": factor.activity, "amount": amount, "unit": unit}
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["co2e_kg"] == expected


@pytest.mark.parametrize(
    ("text", "listed"),
    [
        ("mt", "t, tonne, short_ton, long_ton, Mt (megatonne)"),
        ("MT", "t, tonne, short_ton, long_ton, Mt (megatonne)"),
        ("tons", "t, tonne, short_ton, long_ton"),
        ("therm", "therm_us, therm_ec"),
    ],
)
def test_an_ambiguous_unit_is_a_400_naming_the_field_and_the_alternatives(api, electricity_factor, text, listed):
    response = api.post(URL, {**electricity_input(), "unit": text}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "unit": [f"Unit '{text}' is ambiguous: '{text}' can mean different units. Write one of: {listed}."]
    }


def test_an_ambiguous_mass_unit_is_a_400_naming_mass_unit(api, freight_factor):
    body = {
        "category": 4,
        "method": "distance",
        "activity": freight_factor.activity,
        "mass": "20",
        "mass_unit": "tons",
        "distance": "60",
        "distance_unit": "km",
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    (message,) = response.json()["mass_unit"]
    assert "'tons' is ambiguous" in message
    assert "short_ton" in message


# -- biogenic CO2 and GWP sets, on the publishers' own files -----------------------------------------


def test_hub_biodiesel_reports_biogenic_co2_apart_from_co2e(api, hub_imported):
    data = api.post(URL, biodiesel_input(), format="json").json()
    # 100 gal x (0.14 g CH4 x 28 + 0.01 g N2O x 265) = 0.657 kg CO2e; 100 gal x 9.45 kg = 945 kg biogenic CO2.
    assert (data["co2e_kg"], data["biogenic_co2_kg"]) == ("0.657000", "945.000000")
    assert data["gases"] == {"CH4": "0.392000", "N2O": "0.265000"}
    assert data["factor"]["activity"] == HUB_BIODIESEL
    assert (data["factor"]["co2e_per_unit"], data["factor"]["biogenic_co2_per_unit"]) == (
        "0.006570000000000",
        "9.450000000000000",
    )


def test_a_factor_without_a_biogenic_figure_gives_null(api, electricity_factor):
    data = api.post(URL, electricity_input(), format="json").json()
    assert (data["co2e_kg"], data["biogenic_co2_kg"], data["factor"]["biogenic_co2_per_unit"]) == (
        "177.000000",
        None,
        None,
    )


def test_batch_results_carry_biogenic_co2(api, hub_imported):
    items = [biodiesel_input(), biodiesel_input(amount="1", unit="L")]
    response = api.post(BATCH_URL, {"items": items}, format="json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [(r["co2e_kg"], r["biogenic_co2_kg"]) for r in results] == [
        ("0.657000", "945.000000"),
        # 1 L = 1/3.785411784 US gallon, each figure rounded once from the exact product.
        ("0.001736", "2.496426"),
    ]


def test_a_gas_without_dataset_version_uses_the_datasets_gwp_set(api, hub_imported):
    body = {"category": 1, "method": "activity", "activity": "gwp:CH4", "amount": "10", "unit": "kg"}
    data = api.post(URL, body, format="json").json()
    # AR5 (the DESNZ 2025 and EPA basis): 10 kg x 28, not AR6's 27.9.
    assert (data["co2e_kg"], data["factor"]["dataset_version"]) == ("280.000000", "AR5")
    assert [note["code"] for note in data["fallbacks"]] == ["gwp_set_default"]
    assert "gwp_set_mismatch" not in [note["code"] for note in data["warnings"]]

    data = api.post(URL, {**body, "dataset_version": "AR6"}, format="json").json()
    assert (data["co2e_kg"], data["factor"]["dataset_version"]) == ("279.000000", "AR6")
    assert "gwp_set_mismatch" in [note["code"] for note in data["warnings"]]


def test_a_bulk_batch_is_refused_with_retry_after_when_the_bulk_slots_are_busy(api, electricity_factor, settings):
    """Bulk work is refused first (perf.admission): a large batch gets 503 + Retry-After and nothing is calculated,
    while a small batch and single calculations are served as usual."""
    settings.ADMISSION_HEAVY_SLOTS = 1
    settings.ADMISSION_HEAVY_WAIT = 0
    settings.ADMISSION_RETRY_AFTER_JITTER = False  # Retry-After is then the delay itself, whatever the base
    admission.reset()
    slots = admission.gate().heavy_slots
    assert slots.acquire(blocking=False) is not None  # another bulk request runs
    try:
        bulk = {"items": [electricity_input(amount=str(n + 1)) for n in range(200)]}
        assert len(json.dumps(bulk)) >= views.BULK_BODY_BYTES
        refused = api.post(BATCH_URL, bulk, format="json")
        assert refused.status_code == 503
        assert refused["Retry-After"] == str(settings.ADMISSION_RETRY_AFTER)
        assert "retry" in refused.json()["detail"]
        small = api.post(BATCH_URL, {"items": [electricity_input()]}, format="json")
        assert small.status_code == 200
        assert api.post(URL, electricity_input(), format="json").status_code == 200
    finally:
        slots.release()
        admission.reset()
    served = api.post(BATCH_URL, bulk, format="json")
    assert served.status_code == 200
    assert len(served.json()["results"]) == 200


# -- input a user would not expect to be taken ----------------------------------------------------------------


def test_unknown_fields_are_a_400_naming_them(api, electricity_factor):
    response = api.post(URL, electricity_input(amout="2", scope=3), format="json")
    assert response.status_code == 400
    assert response.json() == {"amout": ["Unknown field."], "scope": ["Unknown field."]}


def test_an_amount_with_underscores_is_a_400_not_a_thousand(api, electricity_factor):
    response = api.post(URL, electricity_input(amount="1_000"), format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["amount"]


def test_batch_item_with_an_unknown_field_fails_alone(api, electricity_factor):
    response = api.post(BATCH_URL, {"items": [electricity_input(), electricity_input(amout="2")]}, format="json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert results[0]["co2e_kg"] == "177.000000"
    assert results[1] == {"error": {"amout": ["Unknown field."]}}


def test_batch_envelope_with_an_unknown_field_is_a_400_naming_it(api, electricity_factor):
    response = api.post(BATCH_URL, {"items": [electricity_input()], "item": []}, format="json")
    assert response.status_code == 400
    assert response.json() == {"item": ["Unknown field."]}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1e-400", "1E+999999999"])
def test_batch_item_with_an_out_of_range_json_number_fails_alone(api, electricity_factor, number):
    # As text: a Python float cannot hold these numbers.
    good = json.dumps(electricity_input())
    bad = json.dumps(electricity_input(amount="AMOUNT")).replace('"AMOUNT"', number)
    response = api.post(BATCH_URL, f'{{"items": [{good}, {bad}, {good}]}}', content_type="application/json")
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [result.get("co2e_kg") for result in results] == ["177.000000", None, "177.000000"]
    assert list(results[1]["error"]) == ["amount"]


def test_a_supplier_id_of_non_ascii_digits_fails_its_item_alone(api, electricity_factor):
    # "²" is a digit to str.isdigit() but not to int(): the batch's supplier lookup must not take it for an id.
    response = api.post(
        BATCH_URL, {"items": [electricity_input(supplier="\u00b2"), electricity_input()]}, format="json"
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert "supplier" in first["error"]
    assert second["co2e_kg"] == "177.000000"
