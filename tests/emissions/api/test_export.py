"""GET /api/v1/emissions/export.csv: streamed CSV of the caller's emissions, with the list's filters."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import cast

import pytest
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from emissions.api.export import COLUMNS, LINES_PER_BLOCK, _keeping, csv_lines
from emissions.cache import emissions_added, emissions_changed
from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    FactorDataset,
    Method,
    Organization,
    Supplier,
)
from perf.cache import tiered
from tests.factories import EmissionFactory, SupplierFactory

pytestmark = pytest.mark.django_db

URL = reverse("emission-export")
QUALITY = {"technology": 2, "time": 1, "geography": 1, "completeness": 2, "reliability": 2, "score": "1.6"}


def emission_in(org: Organization, start: dt.date, **kwargs) -> Emission:
    activity = {key.removeprefix("activity__"): kwargs.pop(key) for key in list(kwargs) if key.startswith("activity__")}
    return EmissionFactory.create(
        organization=org,
        activity__period_start=start,
        activity__period_end=start + dt.timedelta(days=27),
        **{f"activity__{key}": value for key, value in activity.items()},
        **kwargs,
    )


def insert_pairs(
    org: Organization, supplier: Supplier, factor: EmissionFactor, periods: list[tuple[dt.date, dt.date, Decimal]]
) -> list[Emission]:
    """Activities (period start, end and amount each) with their emissions, in two bulk inserts: as the services
    insert them, without signals (factories would take a query or five per row, and invalidate as a save does)."""
    records = ActivityRecord.objects.bulk_create(
        ActivityRecord(
            organization=org,
            supplier=supplier,
            category=1,
            method=Method.ACTIVITY,
            activity=factor.activity,
            amount=amount,
            unit="kWh",
            period_start=period_start,
            period_end=period_end,
        )
        for period_start, period_end, amount in periods
    )
    return Emission.objects.bulk_create(
        Emission(
            organization=org,
            activity=record,
            supplier=supplier,
            category=1,
            method=Method.ACTIVITY,
            period_start=record.period_start,
            period_end=record.period_end,
            factor=factor,
            co2e_kg=record.amount * factor.co2e_per_unit,
            data_quality=QUALITY,
        )
        for record in records
    )


def bulk_emissions(org: Organization, supplier: Supplier, factor: EmissionFactor, n: int) -> None:
    """``n`` activities with emissions, amounts 0 to n - 1, each of one day of 2024-2025."""
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i % 700) for i in range(n)]
    insert_pairs(org, supplier, factor, [(day, day, Decimal(i)) for i, day in enumerate(days)])


def body(response: HttpResponseBase) -> bytes:
    """A 200's whole body, streamed (computed) or not (kept from an earlier request)."""
    assert response.status_code == 200
    if isinstance(response, StreamingHttpResponse):
        return b"".join(cast(Iterator[bytes], response.streaming_content))
    return cast(HttpResponse, response).content


def read(response: HttpResponseBase) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body(response).decode())))


def exported_ids(api, **params) -> list[int]:
    return [int(row[0]) for row in read(api.get(URL, params))[1:]]


def test_header_values_and_download_headers(api, org):
    supplier = SupplierFactory.create(organization=org, external_id="ERP-1", name='Steel, "Sheffield" Ltd')
    emission = emission_in(
        org,
        dt.date(2025, 1, 1),
        activity__supplier=supplier,
        co2e_kg=Decimal("1234.5"),
        fallbacks=[
            {"code": "region_fallback", "detail": "No factor for region FR; used GLOBAL"},
            {"code": "year_fallback_earlier", "detail": "No factor for year 2026; used 2025"},
        ],
    )
    response = api.get(URL)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="emissions-acme-{timezone.localdate().isoformat()}.csv"'
    )
    rows = read(response)
    assert rows[0] == list(COLUMNS)
    # Columns added later come last, so readers that take columns by position keep working.
    assert rows[0][-1] == "biogenic_co2_kg"
    factor = emission.factor
    listed = api.get(reverse("emission-list")).json()["results"][0]
    assert rows[1:] == [
        [
            str(emission.pk),
            "2025-01-01",
            "2025-01-28",
            "1",
            "activity",
            "ERP-1",
            'Steel, "Sheffield" Ltd',  # quoted by the csv module, read back intact
            "desnz",
            factor.dataset.version,
            factor.activity,
            "1234.500000",
            "1.234500000",
            "1.6",
            "region_fallback;year_fallback_earlier",
            listed["calculated_at"],  # same form as the JSON API
            "",  # no biogenic figure: empty, not a zero
        ]
    ]


def test_biogenic_co2_is_its_own_column_beside_co2e(api, org):
    emission_in(org, dt.date(2025, 1, 1), co2e_kg=Decimal("0.657"), biogenic_co2_kg=Decimal("945"))
    row = dict(zip(COLUMNS, read(api.get(URL))[1], strict=True))
    assert (row["co2e_kg"], row["co2e_t"], row["biogenic_co2_kg"]) == ("0.657000", "0.000657000", "945.000000")


def test_row_without_supplier_has_empty_supplier_columns(api, org):
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=None)
    row = dict(zip(COLUMNS, read(api.get(URL))[1], strict=True))
    assert (row["supplier_external_id"], row["supplier_name"], row["fallbacks"]) == ("", "", "")


def test_filters_and_order_match_the_list(api, org):
    supplier = SupplierFactory(organization=org)
    jan = emission_in(org, dt.date(2025, 1, 1), activity__category=1)
    feb = emission_in(org, dt.date(2025, 2, 1), activity__category=4, activity__supplier=supplier)
    mar = emission_in(org, dt.date(2025, 3, 1), activity__category=4, activity__method=Method.SPEND)

    assert exported_ids(api) == [mar.pk, feb.pk, jan.pk]
    assert exported_ids(api, category=4) == [mar.pk, feb.pk]
    assert exported_ids(api, supplier=supplier.pk) == [feb.pk]
    assert exported_ids(api, method="spend") == [mar.pk]
    assert exported_ids(api, period_from="2025-02-01") == [mar.pk, feb.pk]
    assert exported_ids(api, period_to="2025-02-28") == [feb.pk, jan.pk]
    for params in ({}, {"category": 4}, {"period_from": "2025-02-01", "period_to": "2025-02-28"}):
        listed = [row["id"] for row in api.get(reverse("emission-list"), params).json()["results"]]
        assert exported_ids(api, **params) == listed


def test_fields_formatted_by_the_database_are_the_bytes_python_formats(org):
    """PostgreSQL formats the fields (``text_values``); the Python formatter is the reference it must match."""
    odd = SupplierFactory.create(organization=org, external_id="", name='Line\nbreak, "quoted"; =SUM(A1)')
    plain = SupplierFactory.create(organization=org, external_id="=ERP-7", name="\t-Plain")
    rows = [
        emission_in(org, dt.date(2025, 1, 1), activity__supplier=odd, co2e_kg=Decimal("0"), fallbacks=[]),
        emission_in(
            org,
            dt.date(2025, 2, 1),
            activity__supplier=plain,
            co2e_kg=Decimal("123456789012345678.123456"),
            biogenic_co2_kg=Decimal("0.000001"),
            fallbacks=[{"code": "a"}, "not a note", {"detail": "no code"}, {"code": "b", "detail": "x"}],
            data_quality={},
        ),
        emission_in(org, dt.date(2025, 3, 1), activity__supplier=None, co2e_kg=Decimal("0.000001"), fallbacks={}),
        emission_in(org, dt.date(2025, 4, 1), co2e_kg=Decimal("2.5"), fallbacks="not a list"),
    ]
    # Whole seconds (isoformat then writes no fraction) and a microsecond.
    Emission.objects.filter(pk=rows[0].pk).update(calculated_at=dt.datetime(2025, 5, 1, 12, 0, tzinfo=dt.UTC))
    Emission.objects.filter(pk=rows[1].pk).update(calculated_at=dt.datetime(2025, 5, 1, 0, 0, 0, 1, tzinfo=dt.UTC))
    queryset = Emission.objects.for_org(org)

    in_database = "".join(csv_lines(queryset, as_text=True, chunk_size=3))
    in_python = "".join(csv_lines(queryset, as_text=False))

    assert in_database == in_python
    parsed = list(csv.reader(io.StringIO(in_database)))
    assert [row[0] for row in parsed[1:]] == [str(row.pk) for row in reversed(rows)]
    by_id = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in parsed[1:]}
    second = by_id[str(rows[1].pk)]
    assert (second["co2e_kg"], second["co2e_t"]) == ("123456789012345678.123456", "123456789012345.678123456")
    assert (second["fallbacks"], second["data_quality_score"], second["biogenic_co2_kg"]) == ("a;;b", "", "0.000001")
    assert second["calculated_at"] == "2025-05-01T00:00:00.000001Z"
    first = by_id[str(rows[0].pk)]
    assert (first["calculated_at"], first["supplier_name"]) == ("2025-05-01T12:00:00Z", odd.name)
    assert by_id[str(rows[3].pk)]["co2e_t"] == "0.002500000"


FORMULAS = ['=HYPERLINK("http://evil","x")', "+1", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1", "\r=1", "-"]


@pytest.mark.parametrize("as_text", [True, False])
def test_text_a_spreadsheet_would_run_is_neutralized_with_a_quote(org, as_text):
    """OWASP's CSV injection advice: a text cell starting with = + - @ tab or CR gets a leading single quote,
    in both formatting paths; stored before the input refused such text, or written by other means."""
    emissions = []
    for n, text in enumerate(FORMULAS):
        supplier = SupplierFactory.create(organization=org, external_id=text + str(n), name=text)
        emission = emission_in(org, dt.date(2025, 1, n + 1), activity__supplier=supplier)
        EmissionFactor.objects.filter(pk=emission.factor_id).update(activity=text + "act")
        FactorDataset.objects.filter(pk=emission.factor.dataset_id).update(version=text + "v")
        emissions.append(emission)
    queryset = Emission.objects.for_org(org)

    parsed = list(csv.reader(io.StringIO("".join(csv_lines(queryset, as_text=as_text)))))

    by_id = {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in parsed[1:]}
    for n, (emission, text) in enumerate(zip(emissions, FORMULAS, strict=True)):
        row = by_id[str(emission.pk)]
        assert row["supplier_external_id"] == "'" + text + str(n)
        assert row["supplier_name"] == "'" + text
        assert row["factor_activity"] == "'" + text + "act"
        assert row["factor_dataset_version"] == "'" + text + "v"


def test_numeric_and_harmless_cells_are_never_quoted(org):
    supplier = SupplierFactory.create(organization=org, external_id="ERP-1", name="A-1 Steel = best @ price")
    emission_in(org, dt.date(2025, 1, 1), activity__supplier=supplier, data_quality={**QUALITY, "score": "-1.0"})
    queryset = Emission.objects.for_org(org)
    in_database = "".join(csv_lines(queryset, as_text=True))
    assert in_database == "".join(csv_lines(queryset, as_text=False))
    row = dict(zip(COLUMNS, list(csv.reader(io.StringIO(in_database)))[1], strict=True))
    assert (row["supplier_external_id"], row["supplier_name"]) == ("ERP-1", "A-1 Steel = best @ price")
    assert row["data_quality_score"] == "-1.0"
    assert "'" not in in_database


def test_options_answers_json_metadata_like_other_endpoints(api):
    response = api.options(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["renders"] == ["text/csv"]
    assert set(data) == set(api.options(reverse("emission-list")).json())


@pytest.mark.parametrize(("param", "value"), [("category", "16"), ("supplier", "1.5"), ("period_from", "soon")])
def test_bad_filter_is_a_json_400(api, param, value):
    response = api.get(URL, {param: value}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert param in response.json()


def test_any_accept_header_gets_csv(api, org):
    emission_in(org, dt.date(2025, 1, 1))
    for accept in ("text/csv", "application/json", "*/*", "text/html"):
        response = api.get(URL, HTTP_ACCEPT=accept)
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert len(read(response)) == 2


def test_no_token_is_401_json():
    from rest_framework.test import APIClient

    response = APIClient().get(URL)
    assert response.status_code == 401
    assert "detail" in response.json()


def query_count(api) -> tuple[int, int]:
    """(queries until the response object exists, queries after its body was read)."""
    with CaptureQueriesContext(connection) as queries:
        response = api.get(URL)
        before_body = len(queries)
        read(response)
    return before_body, len(queries)


def test_query_count_is_constant(api, org, electricity_factor, cold_cache):
    supplier = SupplierFactory.create(organization=org)
    bulk_emissions(org, supplier, electricity_factor, 1)
    # token (user, membership, organization joined); the data query runs only when the body is read.
    cold_cache()  # the uncached path
    assert query_count(api) == (1, 2)
    bulk_emissions(org, supplier, electricity_factor, 199)
    cold_cache()  # the uncached path
    assert query_count(api) == (1, 2)
    assert len(exported_ids(api)) == 200


def test_large_export_streams_in_blocks(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    bulk_emissions(org, supplier, electricity_factor, 5000)
    response = api.get(URL)
    assert isinstance(response, StreamingHttpResponse)
    assert response.streaming
    chunks = iter(cast(Iterator[bytes], response.streaming_content))
    # The header comes first, on its own: nothing was read from the database to produce it.
    assert next(chunks).decode().startswith("id,period_start,")
    blocks = list(chunks)
    assert len(blocks) == 5000 // LINES_PER_BLOCK
    assert all(block.count(b"\n") == LINES_PER_BLOCK for block in blocks)
    total = sum(Decimal(row[COLUMNS.index("co2e_kg")]) for row in csv.reader(io.StringIO(b"".join(blocks).decode())))
    assert total == sum(Decimal(i) * electricity_factor.co2e_per_unit for i in range(5000))


# -- kept bodies and conditional GET ---------------------------------------------------------------

MARCH = {"period_from": "2025-03-01", "period_to": "2025-03-31"}


def added(org: Organization, supplier: Supplier, factor: EmissionFactor, start: dt.date) -> int:
    """One activity and its emission inserted as the services insert them (``insert_pairs``), then the caches
    invalidated as they invalidate them (``emissions_added``). The new emission's id."""
    (emission,) = insert_pairs(org, supplier, factor, [(start, start + dt.timedelta(days=27), Decimal(1))])
    emissions_added(org.pk, [start])
    return emission.pk


def export_queries(api, params: dict[str, str], **headers: str) -> tuple[HttpResponseBase, bytes, list[str]]:
    """(the response, its body, the SQL it ran, the body's included)."""
    with CaptureQueriesContext(connection) as queries:
        response = api.get(URL, params, **headers)
        content = body(response) if response.status_code == 200 else b""
    return response, content, [query["sql"] for query in queries]


def reads_emissions(statements: list[str]) -> bool:
    return any('"emissions_emission"' in sql for sql in statements)


def test_a_month_export_is_kept_until_that_month_gets_rows(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    first_id = added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    first, computed, statements = export_queries(api, MARCH)
    assert isinstance(first, StreamingHttpResponse) and reads_emissions(statements)
    assert [int(row[0]) for row in read(HttpResponse(computed))[1:]] == [first_id]
    # The same export again: the kept body, same bytes and ETag, no query at all (the token is cached too).
    again, kept, statements = export_queries(api, MARCH)
    assert not isinstance(again, StreamingHttpResponse) and statements == []
    assert (kept, again["ETag"], again["Content-Type"]) == (computed, first["ETag"], first["Content-Type"])
    assert again["Content-Disposition"] == first["Content-Disposition"]
    # Rows added to April and to the previous year leave March's export kept.
    added(org, supplier, electricity_factor, dt.date(2025, 4, 1))
    added(org, supplier, electricity_factor, dt.date(2024, 3, 1))
    tiered().clear_local()  # as another worker would after CACHE_L1_TTL
    still, kept_still, statements = export_queries(api, MARCH)
    assert statements == [] and (kept_still, still["ETag"]) == (computed, first["ETag"])
    # A row added to March: computed again, with the new row, under a new ETag; then kept again.
    new_id = added(org, supplier, electricity_factor, dt.date(2025, 3, 2))
    changed, recomputed, statements = export_queries(api, MARCH)
    assert reads_emissions(statements) and changed["ETag"] != first["ETag"]
    assert [int(row[0]) for row in read(HttpResponse(recomputed))[1:]] == [new_id, first_id]
    assert export_queries(api, MARCH)[1:] == (recomputed, [])


def test_a_changed_row_recomputes_every_export(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    first = export_queries(api, MARCH)[0]
    emissions_changed(org.pk)  # a recalculation, an edit, a referenced supplier's new name
    response, _, statements = export_queries(api, MARCH)
    assert reads_emissions(statements) and response["ETag"] != first["ETag"]


def test_the_etag_answers_304_until_the_rows_change(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    first = api.get(URL, MARCH)
    body(first)
    assert first["ETag"].startswith('"') and first["Cache-Control"] == "private, max-age=0"
    assert first["Vary"] == "Authorization"
    not_modified, content, statements = export_queries(api, MARCH, HTTP_IF_NONE_MATCH=first["ETag"])
    assert (not_modified.status_code, not_modified["ETag"], content, statements) == (304, first["ETag"], b"", [])
    assert (not_modified["Cache-Control"], not_modified["Vary"]) == (first["Cache-Control"], first["Vary"])
    added(org, supplier, electricity_factor, dt.date(2025, 3, 2))
    changed, content, _ = export_queries(api, MARCH, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and changed["ETag"] != first["ETag"] and content.count(b"\n") == 3


def test_a_body_over_the_limit_is_streamed_and_not_kept(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    with override_settings(EXPORT_CACHE_MAX_BYTES=len(",".join(COLUMNS)) + 10):  # the header fits, a row does not
        first, computed, _ = export_queries(api, MARCH)
        again, content, statements = export_queries(api, MARCH)
    assert isinstance(again, StreamingHttpResponse) and reads_emissions(statements)
    assert content == computed and again["ETag"] == first["ETag"]  # still revalidated by its ETag


def test_a_body_is_kept_only_once_sent_whole():
    stored: list[bytes] = []
    whole = _keeping(iter([b"a", b"b"]), 2, stored.append)
    assert list(whole) == [b"a", b"b"] and stored == [b"ab"]
    # The client went away after the first block (the server closes the generator): nothing is kept.
    left = _keeping(iter([b"a", b"b"]), 2, stored.append)
    assert next(left) == b"a"
    left.close()
    # Over the limit: passed on whole, not kept.
    assert list(_keeping(iter([b"a", b"bc"]), 2, stored.append)) == [b"a", b"bc"]
    assert stored == [b"ab"]


def test_an_unknown_parameter_is_answered_but_not_kept(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    params = {**MARCH, "x": "1"}
    first, computed, _ = export_queries(api, params)
    again, content, statements = export_queries(api, params)
    assert reads_emissions(statements) and content == computed and again["ETag"] == first["ETag"]


def test_a_kept_export_is_the_callers_organizations_only(api, other_api, org, other_org, electricity_factor):
    ours = added(org, SupplierFactory.create(organization=org), electricity_factor, dt.date(2025, 3, 1))
    theirs = added(other_org, SupplierFactory.create(organization=other_org), electricity_factor, dt.date(2025, 3, 1))
    for _ in range(2):  # computed, then kept
        assert [int(row[0]) for row in read(api.get(URL, MARCH))[1:]] == [ours]
        assert [int(row[0]) for row in read(other_api.get(URL, MARCH))[1:]] == [theirs]
    assert api.get(URL, MARCH)["ETag"] != other_api.get(URL, MARCH)["ETag"]


@override_settings(CACHE_ENABLED=False)
def test_without_the_cache_every_export_is_computed(api, org, electricity_factor):
    supplier = SupplierFactory.create(organization=org)
    added(org, supplier, electricity_factor, dt.date(2025, 3, 1))
    for _ in range(2):
        response, _, statements = export_queries(api, MARCH)
        assert isinstance(response, StreamingHttpResponse) and reads_emissions(statements)
        assert "ETag" not in response
