"""/api/v1/emissions/: keyset-paginated list, detail, summary."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone

from emissions.api.serializers import SummaryGroupSerializer, SummarySerializer
from emissions.models import ID_MAX, SUMMARY_KEYS, Emission, Method, Organization
from tests.factories import EmissionFactorFactory, EmissionFactory, FactorDatasetFactory, SupplierFactory

pytestmark = pytest.mark.django_db

LIST = reverse("emission-list")
SUMMARY = reverse("emission-summary")


def emission_in(org: Organization, start: dt.date, **kwargs: Any) -> Emission:
    """A stored activity + emission whose period starts at ``start``."""
    activity = {key.removeprefix("activity__"): kwargs.pop(key) for key in list(kwargs) if key.startswith("activity__")}
    return EmissionFactory.create(
        organization=org,
        activity__period_start=start,
        activity__period_end=start + dt.timedelta(days=27),
        **{f"activity__{key}": value for key, value in activity.items()},
        **kwargs,
    )


def test_row_shape(api, org):
    emission = emission_in(org, dt.date(2025, 1, 1), co2e_kg=Decimal("1234.5"))
    response = api.get(LIST)
    assert response.status_code == 200
    row = response.json()["results"][0]
    assert row == {
        "id": emission.pk,
        "activity": emission.activity_id,
        "period_start": "2025-01-01",
        "period_end": "2025-01-28",
        "category": 1,
        "method": "activity",
        "co2e_kg": "1234.500000",
        "co2e_t": "1.234500000",
        "biogenic_co2_kg": None,
        "gases": {},
        "data_quality": emission.data_quality,
        "fallbacks": [],
        "warnings": [],
        "conversion": None,
        "calculated_at": row["calculated_at"],
        "supplier": {"id": emission.supplier_id, "name": emission.supplier.name},
        "factor": {"id": emission.factor_id, "source": "desnz", "activity": emission.factor.activity},
    }


def test_supplier_null(api, org):
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=None)
    assert api.get(LIST).json()["results"][0]["supplier"] is None


def test_detail(api, org):
    emission = emission_in(org, dt.date(2025, 1, 1))
    response = api.get(reverse("emission-detail", args=[emission.pk]))
    assert response.status_code == 200
    assert response.json()["id"] == emission.pk


def test_filters(api, org):
    supplier = SupplierFactory(organization=org)
    jan = emission_in(org, dt.date(2025, 1, 1), activity__category=1)
    feb = emission_in(org, dt.date(2025, 2, 1), activity__category=4, activity__supplier=supplier)
    mar = emission_in(org, dt.date(2025, 3, 1), activity__category=4, activity__method=Method.SPEND)

    def ids(**params):
        response = api.get(LIST, params)
        assert response.status_code == 200, response.json()
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [mar.pk, feb.pk, jan.pk]
    assert ids(category=4) == [mar.pk, feb.pk]
    assert ids(supplier=supplier.pk) == [feb.pk]
    assert ids(method="spend") == [mar.pk]
    assert ids(period_from="2025-02-01") == [mar.pk, feb.pk]
    assert ids(period_to="2025-02-28") == [feb.pk, jan.pk]
    assert ids(period_from="2025-02-01", period_to="2025-02-28") == [feb.pk]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("category", "16"),
        ("period_from", "yesterday"),
        ("method", "x"),
        ("supplier", "abc"),
        # Decimals are refused, not truncated to an id (1.5 used to match supplier 1).
        ("supplier", "1.5"),
        ("supplier", "1.0"),
        ("supplier", "1e3"),
        ("supplier", "-1"),
        ("supplier", str(ID_MAX + 1)),  # beyond bigint
    ],
)
def test_bad_filter_values(api, param, value):
    response = api.get(LIST, {param: value})
    assert response.status_code == 400
    assert param in response.json()


def test_decimal_supplier_filter_matches_nothing_silently_no_more(api, org):
    supplier = SupplierFactory(organization=org)
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=supplier)
    assert api.get(LIST, {"supplier": str(supplier.pk)}).json()["results"][0]["supplier"]["id"] == supplier.pk
    response = api.get(LIST, {"supplier": f"{supplier.pk}.5"})
    assert response.status_code == 400
    assert response.json() == {"supplier": ["Enter a whole number."]}


# -- keyset pagination -----------------------------------------------------------------------------


def walk(api, url: str, direction: str = "next") -> list[list[int]]:
    pages = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.json()
        pages.append([row["id"] for row in response.json()["results"]])
        url = response.json()[direction]
    return pages


def test_walks_every_page_in_order_with_ties(api, org):
    # 23 rows over 4 period starts: many ties on period_start, broken by id descending.
    starts = [dt.date(2025, month, 1) for month in (1, 2, 2, 3, 3, 3, 4)]
    rows = [emission_in(org, starts[i % len(starts)]) for i in range(23)]
    expected = [e.pk for e in sorted(rows, key=lambda e: (e.period_start, e.pk), reverse=True)]

    pages = walk(api, f"{LIST}?limit=5")
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [pk for page in pages for pk in page] == expected


def test_previous_links_walk_back(api, org):
    rows = [emission_in(org, dt.date(2025, 1 + i % 3, 1)) for i in range(10)]
    expected = [e.pk for e in sorted(rows, key=lambda e: (e.period_start, e.pk), reverse=True)]

    first = api.get(f"{LIST}?limit=4").json()
    second = api.get(first["next"]).json()
    last = api.get(second["next"]).json()
    assert [row["id"] for row in last["results"]] == expected[8:10]
    assert last["next"] is None
    assert "before=" in last["previous"]
    assert "after=" not in last["previous"]
    assert walk(api, last["previous"], direction="previous") == [expected[4:8], expected[0:4]]
    # Going back to the first page and then forward again lands on the same second page.
    back_to_first = api.get(second["previous"]).json()
    assert back_to_first["previous"] is None
    assert [row["id"] for row in api.get(back_to_first["next"]).json()["results"]] == expected[4:8]


def test_first_page_has_no_previous(api, org):
    emission_in(org, dt.date(2025, 1, 1))
    body = api.get(LIST).json()
    assert body["previous"] is None
    assert body["next"] is None


def test_default_limit_is_100(api, org):
    for _ in range(101):
        emission_in(org, dt.date(2025, 1, 1))
    body = api.get(LIST).json()
    assert len(body["results"]) == 100
    assert body["next"] is not None


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten"])
def test_invalid_limit(api, limit):
    response = api.get(LIST, {"limit": limit})
    assert response.status_code == 400
    assert "limit" in response.json()


def make_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()


@pytest.mark.parametrize(
    ("param", "cursor"),
    [
        ("after", "%%%"),
        ("after", make_cursor("2025-01-01")),
        ("after", make_cursor("not-a-date", "5")),
        ("before", make_cursor("2025-01-01", "x")),
        ("before", make_cursor("2025-01-01", "99999999999999999999999")),
    ],
)
def test_invalid_cursor(api, org, param, cursor):
    emission_in(org, dt.date(2025, 1, 1))
    response = api.get(LIST, {param: cursor})
    assert response.status_code == 400
    assert param in response.json()


def test_list_query_count_is_constant(api, org, django_assert_num_queries, cold_cache):
    emission_in(org, dt.date(2025, 1, 1))
    cold_cache()  # the uncached path
    with django_assert_num_queries(
        2
    ):  # token (user, membership, org joined), one keyset page with supplier/factor/dataset
        assert len(api.get(LIST).json()["results"]) == 1
    for _ in range(99):
        emission_in(org, dt.date(2025, 1, 1))
    cold_cache()  # the uncached path
    with django_assert_num_queries(2):  # a full default page
        assert len(api.get(LIST).json()["results"]) == 100


# -- summary -----------------------------------------------------------------------------------------


@pytest.fixture
def summary_data(org):
    acme = SupplierFactory(organization=org, name="Acme Steel")
    beta = SupplierFactory(organization=org, name="Beta Freight")
    # The one emission with a biogenic figure (a biomass fuel's): 12.5 kg of biogenic CO2 beside its CO2e.
    emission_in(
        org,
        dt.date(2025, 1, 1),
        co2e_kg=Decimal("600"),
        biogenic_co2_kg=Decimal("12.5"),
        activity__category=1,
        activity__supplier=acme,
    )
    emission_in(
        org,
        dt.date(2025, 1, 15),
        co2e_kg=Decimal("150.5"),
        activity__category=4,
        activity__supplier=beta,
        activity__method=Method.DISTANCE,
    )
    emission_in(org, dt.date(2025, 2, 1), co2e_kg=Decimal("249.5"), activity__category=1, activity__supplier=None)
    return acme, beta


def test_summary_by_category(api, summary_data):
    response = api.get(SUMMARY, {"group_by": "category"})
    assert response.status_code == 200
    assert response.json() == {
        "group_by": "category",
        "total_co2e_kg": "1000.000000",
        "total_co2e_t": "1.000000000",
        "total_biogenic_co2_kg": "12.500000",
        "count": 3,
        "groups": [
            {
                "key": 1,
                "label": "1 Purchased goods and services",
                "co2e_kg": "849.500000",
                "co2e_t": "0.849500000",
                # The sum of the group's figures; the other emission of the group has none (not a zero).
                "biogenic_co2_kg": "12.500000",
                "count": 2,
                "share": "84.95",
            },
            {
                "key": 4,
                "label": "4 Upstream transportation and distribution",
                "co2e_kg": "150.500000",
                "co2e_t": "0.150500000",
                "biogenic_co2_kg": None,  # no emission of the group has a biogenic figure
                "count": 1,
                "share": "15.05",
            },
        ],
    }


def test_summary_by_supplier(api, summary_data):
    acme, beta = summary_data
    groups = api.get(SUMMARY, {"group_by": "supplier"}).json()["groups"]
    assert [(g["key"], g["label"], g["co2e_kg"], g["share"]) for g in groups] == [
        (acme.pk, "Acme Steel", "600.000000", "60.00"),
        (None, "No supplier", "249.500000", "24.95"),
        (beta.pk, "Beta Freight", "150.500000", "15.05"),
    ]


def test_summary_by_month(api, summary_data):
    groups = api.get(SUMMARY, {"group_by": "month"}).json()["groups"]
    assert [(g["key"], g["label"], g["co2e_kg"], g["count"]) for g in groups] == [
        ("2025-01", "January 2025", "750.500000", 2),
        ("2025-02", "February 2025", "249.500000", 1),
    ]


def test_summary_by_month_is_chronological_not_by_size(api, org):
    """Months form a time series: oldest first even when a later month emits more."""
    for start, kg in [(dt.date(2025, 3, 1), "5"), (dt.date(2024, 12, 1), "1"), (dt.date(2025, 1, 1), "900")]:
        emission_in(org, start, co2e_kg=Decimal(kg))
    groups = api.get(SUMMARY, {"group_by": "month"}).json()["groups"]
    assert [g["key"] for g in groups] == ["2024-12", "2025-01", "2025-03"]
    # Other groupings stay a ranking, largest first.
    emission_in(org, dt.date(2025, 1, 1), co2e_kg=Decimal("10"), activity__category=4)
    by_category = api.get(SUMMARY, {"group_by": "category"}).json()["groups"]
    assert [g["key"] for g in by_category] == [1, 4]


def test_summary_by_method_with_filters(api, summary_data):
    acme, _ = summary_data
    body = api.get(SUMMARY, {"group_by": "method", "period_to": "2025-02-15"}).json()
    assert [(g["key"], g["label"], g["co2e_kg"]) for g in body["groups"]] == [
        ("activity", "Average-data (activity)", "600.000000"),
        ("distance", "Distance-based", "150.500000"),
    ]
    assert body["total_co2e_kg"] == "750.500000"
    body = api.get(SUMMARY, {"group_by": "category", "supplier": acme.pk}).json()
    assert body["total_co2e_kg"] == "600.000000"
    assert body["groups"][0]["share"] == "100.00"


def test_summary_empty(api):
    body = api.get(SUMMARY, {"group_by": "category"}).json()
    assert body == {
        "group_by": "category",
        "total_co2e_kg": "0.000000",
        "total_co2e_t": "0.000000000",
        "total_biogenic_co2_kg": None,
        "count": 0,
        "groups": [],
    }


@pytest.mark.parametrize("group_by", SUMMARY_KEYS)
def test_summary_answers_the_documented_shape(api, summary_data, group_by):
    body = api.get(SUMMARY, {"group_by": group_by}).json()
    assert list(body) == list(SummarySerializer().fields)
    assert body["groups"]
    for group in body["groups"]:
        assert list(group) == list(SummaryGroupSerializer().fields)


@pytest.mark.parametrize("group_by", ["", "year", "CATEGORY"])
def test_summary_invalid_group_by(api, group_by):
    response = api.get(SUMMARY, {"group_by": group_by})
    assert response.status_code == 400
    assert "group_by" in response.json()


# Committed data, the request in autocommit, as requests run: inside a transaction that wrote emissions, a summary
# first applies that transaction's pending rollup changes (emissions.rollups.rollups_flush), one statement more.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("group_by", SUMMARY_KEYS)
def test_summary_is_one_aggregate_query(api, summary_data, group_by, django_assert_num_queries):
    with django_assert_num_queries(2):  # token (user, membership, org joined), aggregate of the rollups
        assert api.get(SUMMARY, {"group_by": group_by}).status_code == 200


# -- pages written from value rows (perf.rows) -------------------------------------------------------


@pytest.fixture
def varied_page(org):
    """Enough emissions for three pages of 2, every branch of the row shape among them."""
    epa = FactorDatasetFactory.create(source="epa_hub", version="2024")
    supplier = SupplierFactory(organization=org, name='Überseeküche \u2013 株式会社 \u2028 "q" \\')
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=None, biogenic_co2_kg=Decimal("0.000001"))
    emission_in(
        org,
        dt.date(2025, 1, 1),
        activity__supplier=supplier,
        factor=EmissionFactorFactory.create(dataset=epa),
        co2e_kg=Decimal("999999999999999999.999999"),
        gases={"CO2": "1.5", "CH4": 1e-05, "N2O": 2**70},
        fallbacks=[{"code": "region", "detail": "GB → GLOBAL"}],
        warnings=[{"code": "w", "detail": "日本"}],
    )
    emission_in(org, dt.date(2025, 2, 1), co2e_kg=Decimal("0"), activity__category=4)
    emission_in(org, dt.date(2025, 3, 1), co2e_kg=Decimal("0.000001"), activity__category=4)
    emission_in(org, dt.date(2024, 12, 1), activity__method=Method.SPEND, activity__supplier=supplier)


def _same(served, drf):
    assert served.content == drf.content
    assert served.items() == drf.items()  # Content-Type, Content-Length, Vary, ...


def test_pages_are_drf_s_bytes(api, varied_page, rows_and_drf):
    url, seen = LIST + "?limit=2", 0
    while url:
        served, drf = rows_and_drf(url)
        _same(served, drf)
        seen += len(served.json()["results"])
        url = served.json()["next"]
    assert seen == 5
    # Backwards from the last page, through the previous links.
    last = rows_and_drf(LIST, {"limit": 2, "period_to": "2024-12-31"})[0].json()["results"][0]
    cursor = base64.urlsafe_b64encode(json.dumps([last["period_start"], str(last["id"])]).encode()).decode()
    served, drf = rows_and_drf(LIST, {"limit": 2, "before": cursor})
    _same(served, drf)
    assert served.json()["previous"] is not None and served.json()["next"] is not None


@pytest.mark.parametrize(
    "params",
    [{"category": 4}, {"supplier": "x"}, {"method": "spend"}, {"period_from": "2025-02-01"}, {"limit": 1000}],
)
def test_filtered_pages_are_drf_s_bytes(api, org, varied_page, rows_and_drf, params):
    if params.get("supplier") == "x":
        params = {"supplier": Emission.objects.exclude(supplier=None).values_list("supplier", flat=True).first()}
    _same(*rows_and_drf(LIST, params))


def test_time_zone_of_the_request_is_drf_s(api, varied_page, rows_and_drf):
    # The current time zone (what DRF's DateTimeField converts to), not the TIME_ZONE setting: changing that
    # reconnects the database.
    with timezone.override("America/New_York"):
        served, drf = rows_and_drf(LIST)
    _same(served, drf)
    assert served.json()["results"][0]["calculated_at"][-6:] in ("-04:00", "-05:00")


def test_cached_first_page_is_the_rows_page(api, varied_page, rows_and_drf, cold_cache):
    _, drf = rows_and_drf(LIST)
    cold_cache()
    first = api.get(LIST, HTTP_ACCEPT="application/json")  # computed and stored
    again = api.get(LIST, HTTP_ACCEPT="application/json")  # from the cache
    assert first.content == again.content == drf.content
    assert first["ETag"] == again["ETag"]


def test_deep_page_headers_with_the_cache_on_are_drf_s(api, varied_page):
    url = api.get(LIST, {"limit": 2}, HTTP_ACCEPT="application/json").json()["next"]
    # One request id for both: each response echoes its request's (emissions.audit), a generated one differs.
    served = api.get(url, HTTP_ACCEPT="application/json", HTTP_X_REQUEST_ID="deep-page")
    with override_settings(LIST_ROWS=False):
        drf = api.get(url, HTTP_ACCEPT="application/json", HTTP_X_REQUEST_ID="deep-page")
    _same(served, drf)
    assert "ETag" in served


def test_indented_and_browsable_renderings_keep_drf_s_path(api, varied_page):
    indented = api.get(LIST, HTTP_ACCEPT="application/json; indent=2")
    assert indented.status_code == 200 and b'\n  "next"' in indented.content
    html = api.get(LIST, {"format": "api"})
    assert html.status_code == 200 and b"<html" in html.content
