"""perf.rows: serializers compiled to value-row writers whose JSON is DRF's, byte for byte."""

from __future__ import annotations

import datetime as dt
import gc
import json
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from emissions.api.serializers import STORED_RESULT_COMPUTED, ActivitySerializer, EmissionSerializer
from emissions.models import ActivityRecord, Emission
from perf import keyset_sql, rows
from perf.rows import RowShape, UnsupportedField
from tests.factories import EmissionFactorFactory, EmissionFactory, FactorDatasetFactory, SupplierFactory

# JSON texts as a jsonb column may hold them: floats orjson writes otherwise, integers beyond 64 bits (orjson reads
# them as floats), numbers beyond a double, escapes, the two line separators JSONRenderer escapes.
JSON_TEXTS = [
    '{"CO2": "2.4", "CH4": "0.1"}',
    '{"a": 1e-05, "b": 0.1, "c": 1.0, "d": -0.0, "e": 1e+16}',
    '{"big": 123456789012345678901234567890, "neg": -99999999999999999999}',
    '{"edge": 18446744073709551615, "low": -9223372036854775808}',
    "[1e400]",
    '{"s": "a\\u0000\\u001f\\"\\\\\\n\\t/\u2028\u2029\u00e9\U0001f600", "k": "12345678901234567890"}',
    '{"nested": [{"x": [1, 2.5, null, true, false]}], "empty": {}}',
    "null",
    '"text"',
    "[]",
]


def drf_json(data: Any) -> bytes:
    return JSONRenderer().render(data)


def from_text(converter: Any, text: str) -> Any:
    """What a row's JSON column (read as text) becomes through ``converter``."""
    return rows._from_text(converter)()(text)


PASS_THROUGH = rows._JsonConverter(rows._plain_or_miss, rows.json_value)


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_json_columns_are_written_as_drf_writes_what_json_loads_reads(text):
    value = json.loads(text)  # what Django's JSONField.from_db_value hands DRF
    try:
        expected = drf_json({"v": value})
    except ValueError:  # infinity: not JSON, a 500 either way
        with pytest.raises(ValueError):
            rows.dumps({"v": from_text(PASS_THROUGH, text)})
        return
    assert rows.dumps({"v": from_text(PASS_THROUGH, text)}) == expected


class Quality(serializers.Serializer):
    level = serializers.IntegerField()
    score = serializers.CharField()


class Quality_(serializers.Serializer):
    notes = Quality(many=True)


@pytest.mark.parametrize(
    "text",
    [
        '{"score": "1.5", "level": 2, "extra": 1}',  # jsonb's key order, a key the serializer leaves out
        '{"score": 1.5, "level": 2.0}',  # floats: int() and str() of them
        '{"score": "x", "level": 123456789012345678901234567890}',  # beyond 64 bits: json.loads's int
        '{"score": "x", "level": true}',  # int(True)
        '{"score": null, "level": 1}',
        '{"score": "\u2028", "level": -1}',
        "[]",
    ],
)
def test_json_objects_are_the_nested_serializer_s(text):
    value = json.loads(text)
    converter = rows._json_object(Quality())
    try:
        expected = drf_json({"v": Quality().to_representation(value)})
    except AttributeError:  # not an object: DRF's error (a 500), raised alike
        with pytest.raises(AttributeError):
            from_text(converter, text)
        return
    assert rows.dumps({"v": from_text(converter, text)}) == expected
    listed = rows._json_nested(Quality_().fields["notes"])
    many = f"[{text}, {text}]"
    assert rows.dumps(from_text(listed, many)) == drf_json(Quality(many=True).to_representation(json.loads(many)))


def test_a_page_converts_each_distinct_json_text_once(monkeypatch):
    loads = []
    real = rows.orjson.loads
    monkeypatch.setattr(rows.orjson, "loads", lambda text: loads.append(text) or real(text))
    converter = rows._json_object(Quality())
    page = rows._from_text(converter)()
    shared, other = '{"score": "1", "level": 1}', '{"score": "2", "level": 2}'
    first, second, third = page(shared), page(other), page(shared)
    assert loads == [shared, other]  # the repeated text is not loaded again
    assert third is first and first == {"score": "1", "level": 1} and second == {"score": "2", "level": 2}
    assert page(None) is None
    # A float misses the fast converter: the exact one runs once too, and its answer is kept alike.
    floats = '{"score": 1.5, "level": 2.0}'
    assert rows.dumps(page(floats)) == rows.dumps(page(floats)) == drf_json(Quality().to_representation(
        json.loads(floats)))  # fmt: skip
    assert loads.count(floats) == 1
    # The next page starts afresh.
    rows._from_text(converter)()(shared)
    assert loads.count(shared) == 2


def test_a_missing_key_is_drf_s_error():
    with pytest.raises(KeyError):
        from_text(rows._json_object(Quality()), '{"score": "1"}')
    with pytest.raises(KeyError):
        Quality().to_representation({"score": "1"})


@pytest.mark.parametrize("text", JSON_TEXTS)
def test_json_values_are_written_as_drf_writes_them(text):
    value = json.loads(text)
    try:
        expected = drf_json({"v": value})
    except ValueError:  # infinity: not JSON, a 500 either way
        with pytest.raises(ValueError):
            rows.dumps({"v": rows.json_value(value)})
        return
    assert rows.dumps({"v": rows.json_value(value)}) == expected


def test_plain_refuses_what_orjson_writes_otherwise():
    assert rows._plain({"a": ["b", 1, None, True, {"c": 2**64 - 1}]})
    assert not rows._plain({"a": [0.5]})
    assert not rows._plain({"a": 2**64})
    assert not rows._plain({1: "a"})  # json.dumps writes "1"; orjson refuses it
    assert not rows._plain(Decimal("1"))


def test_dumps_escapes_line_separators_as_drf():
    data = {"name": "a\u2028b\u2029c", "ok": "é"}
    assert rows.dumps(data) == drf_json(data)
    assert b"\\u2028" in rows.dumps(data)


def test_renders_rows_only_for_drf_s_compact_json():
    json_renderer = JSONRenderer()
    assert rows.renders_rows(json_renderer, "application/json")
    assert not rows.renders_rows(json_renderer, "application/json; indent=4")
    assert not rows.renders_rows(BrowsableAPIRenderer(), "text/html")

    class Ascii(JSONRenderer):
        ensure_ascii = True

    class Custom(JSONRenderer):
        def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
            return b"{}"

    assert not rows.renders_rows(Ascii(), "application/json")
    assert not rows.renders_rows(Custom(), "application/json")


# Decimal texts: PostgreSQL's for numeric(p, s) columns (written as they are), and others (converted as DRF does).
DECIMAL_TEXTS = [
    "0.000000",
    "1.500000",
    "-0.000000",
    "-12.345678",
    "123456789012345678.123456",  # 24 digits: the most a numeric(24, 6) holds
    "1234567890123456789.123456",  # 25: DRF refuses it (quantize beyond max_digits)
    "1.5",  # another scale: quantized
    "1.50000000",  # rounded
    "01.500000",  # a leading zero
    "1E+3",
    "NaN",
    " 2.000000 ",
    "12",
]


@pytest.mark.parametrize(("digits", "places"), [(24, 6), (30, 9), (6, 0), (6, 6), (None, 2)])
@pytest.mark.parametrize("text", DECIMAL_TEXTS)
def test_decimal_texts_are_written_as_drf_writes_their_decimal(text, digits, places):
    field = serializers.DecimalField(max_digits=digits, decimal_places=places)
    convert = rows._decimal(field)()
    try:
        expected = field.to_representation(Decimal(text))  # what psycopg's Decimal of the text becomes
    except ArithmeticError:
        with pytest.raises(ArithmeticError):
            convert(text)
        return
    assert convert(text) == expected
    assert convert(Decimal(text)) == expected


def test_only_fixed_places_without_normalizing_are_written_as_they_are():
    assert rows._written_decimal(6, 24, normalize=False) is not None
    assert rows._written_decimal(None, 24, normalize=False) is None
    assert rows._written_decimal(6, 24, normalize=True) is None
    assert rows._written_decimal(6, 4, normalize=False) is None  # fewer digits than places: DRF refuses all but 0
    normalized = serializers.DecimalField(max_digits=24, decimal_places=6, normalize_output=True)
    assert rows._decimal(normalized)()("1.500000") == "1.5"


# -- RowShape -------------------------------------------------------------------------------------


def test_columns_follow_the_serializer():
    shape = RowShape(EmissionSerializer, computed=STORED_RESULT_COMPUTED)
    names = [column if isinstance(column, str) else str(column.source_expressions[0].name) for column in shape.columns]
    assert names == [
        "id",
        "activity",
        "period_start",
        "period_end",
        "category",
        "method",
        "co2e_kg",  # co2e_t: computed from it, read once
        "biogenic_co2_kg",
        "gases",
        "data_quality",
        "fallbacks",
        "warnings",
        "conversion",
        "calculated_at",
        "supplier__id",
        "supplier__name",
        "factor__id",
        "factor__dataset__source",
        "factor__activity",
    ]


def test_a_property_field_must_be_declared():
    with pytest.raises(UnsupportedField, match="co2e_tonnes"):
        RowShape(EmissionSerializer)


def test_fields_it_cannot_reproduce_are_refused():
    class WithMethod(serializers.ModelSerializer):
        extra = serializers.SerializerMethodField()

        class Meta:
            model = Emission
            fields = ["id", "extra"]

        def get_extra(self, obj: Emission) -> str:
            return "x"

    class ThroughNullable(serializers.ModelSerializer):
        supplier_name = serializers.CharField(source="supplier.name")

        class Meta:
            model = Emission
            fields = ["id", "supplier_name"]

    class OwnRepresentation(serializers.CharField):
        def to_representation(self, value: Any) -> str:
            return value.upper()

    class Overridden(serializers.ModelSerializer):
        method = OwnRepresentation()

        class Meta:
            model = Emission
            fields = ["id", "method"]

    for serializer in (WithMethod, ThroughNullable, Overridden):
        with pytest.raises(UnsupportedField):
            RowShape(serializer)


@pytest.fixture
def varied(org) -> list[Emission]:
    """Emissions covering every branch of the shape: nulls, non-ASCII, notes, datasets, decimal extremes, JSON."""
    epa = FactorDatasetFactory.create(source="epa_hub", version="2024")
    desnz = FactorDatasetFactory.create(source="desnz", version="2025")
    supplier = SupplierFactory.create(organization=org, name='Überseeküche \u2013 株式会社 \u2028 "quoted" \\ é')
    made = [
        EmissionFactory.create(
            organization=org,
            activity__supplier=None,
            factor=EmissionFactorFactory.create(dataset=epa, activity="epa:ü"),
            co2e_kg=Decimal("123456789012345678.123456"),
            biogenic_co2_kg=Decimal("0.000001"),
            gases={"CO2": "2.4", "CH4": "0.000000001", "N2O": "1E-9"},
            fallbacks=[{"code": "region", "detail": "GB → GLOBAL"}],
            warnings=[{"code": "co2e_biogenic_only", "detail": "w"}, {"code": "x", "detail": "日本"}],
        ),
        EmissionFactory.create(
            organization=org,
            activity__supplier=supplier,
            factor=EmissionFactorFactory.create(dataset=desnz),
            co2e_kg=Decimal("0"),
            biogenic_co2_kg=None,
            gases={"float": 1e-05, "big": 2**70, "nested": [1.5, {"x": None}]},
            # In jsonb's key order (by length), not the serializer's.
            data_quality={
                "time": 3,
                "score": "3.0",
                "geography": 3,
                "technology": 3,
                "reliability": 3,
                "completeness": 3,
            },
        ),
        EmissionFactory.create(organization=org, co2e_kg=Decimal("0.000001"), activity__period_start=dt.date(5, 1, 1)),
    ]
    # A datetime with microseconds and one without.
    Emission.objects.filter(pk=made[0].pk).update(calculated_at=dt.datetime(2025, 3, 1, 12, 0, 0, 5, tzinfo=dt.UTC))
    Emission.objects.filter(pk=made[1].pk).update(calculated_at=dt.datetime(2025, 3, 1, 23, 30, tzinfo=dt.UTC))
    return made


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"])
def test_emission_rows_are_the_serializer_s_json(varied, zone):
    shape = RowShape(EmissionSerializer, computed=STORED_RESULT_COMPUTED)
    queryset = Emission.objects.with_related().order_by("pk")
    with timezone.override(zone):
        expected = drf_json(EmissionSerializer(queryset, many=True).data)
        written = rows.dumps(shape.rows(queryset.values_list(*shape.columns)))
    assert written == expected
    first = json.loads(written)[0]
    assert list(first) == list(EmissionSerializer.Meta.fields)  # keys in the serializer's order
    assert first["supplier"] is None and first["biogenic_co2_kg"] == "0.000001"
    assert first["co2e_t"] == "123456789012345.678123456"  # the tonnes of the largest value, 9 places


def _text_loaded_rows(shape: RowShape, queryset: Any) -> list[tuple[Any, ...]]:
    """``queryset.values_list(*shape.columns)``'s rows with ``shape.text_loaded`` loaded as text, as pages are."""
    sql, params = queryset.values_list(*shape.columns).query.sql_with_params()
    with connection.cursor() as cursor:
        keyset_sql._load_as_text(cursor.cursor, shape.text_loaded)
        cursor.execute(sql, params)
        return list(cursor.fetchall())


@pytest.mark.django_db
@pytest.mark.parametrize("serializer", [EmissionSerializer, ActivitySerializer])
def test_rows_with_decimals_as_text_are_the_serializer_s_json(varied, org, serializer):
    ActivityRecord.objects.create(
        organization=org, category=1, method="activity", amount=Decimal("1.5"), unit="kWh",
        period_start=dt.date(2025, 1, 1), period_end=dt.date(2025, 1, 31), mass=Decimal("0.000001"),
    )  # fmt: skip
    shape = RowShape(serializer, computed=STORED_RESULT_COMPUTED)
    assert shape.text_loaded == {"numeric"}
    model = serializer.Meta.model
    queryset = model.objects.with_related().order_by("pk")
    values = _text_loaded_rows(shape, queryset)
    assert any(type(value) is str and "." in value for value in values[0])  # the decimals came as text
    assert not any(isinstance(value, Decimal) for row in values for value in row)
    assert rows.dumps(shape.rows(values)) == drf_json(serializer(queryset, many=True).data)


def test_decimals_are_text_loaded_only_when_every_reader_takes_text():
    class AsInteger(serializers.ModelSerializer):
        kg = serializers.IntegerField(source="co2e_kg")

        class Meta:
            model = Emission
            fields = ["id", "kg", "biogenic_co2_kg"]

    class AsDecimal(serializers.ModelSerializer):
        class Meta:
            model = Emission
            fields = ["id", "co2e_kg"]

    class NoDecimal(serializers.ModelSerializer):
        class Meta:
            model = Emission
            fields = ["id", "method"]

    assert RowShape(AsInteger).text_loaded == frozenset()
    assert RowShape(AsDecimal).text_loaded == {"numeric"}
    assert RowShape(NoDecimal).text_loaded == frozenset()
    # A computed field of a column that is no model field (its type unknown): nothing loaded as text.
    computed = {(Emission, "co2e_tonnes"): ("co2e_kg__abs", lambda value: value)}

    class Tonnes(serializers.ModelSerializer):
        co2e_t = serializers.DecimalField(max_digits=30, decimal_places=9, source="co2e_tonnes")

        class Meta:
            model = Emission
            fields = ["id", "co2e_kg", "co2e_t"]

    assert RowShape(Tonnes, computed=computed).text_loaded == frozenset()
    assert RowShape(Tonnes, computed=STORED_RESULT_COMPUTED).text_loaded == {"numeric"}


@pytest.mark.django_db
def test_activity_rows_are_the_serializer_s_json(varied, org):
    # One activity without an emission (rows not written through the API): its emission is null.
    ActivityRecord.objects.create(
        organization=org, category=1, method="activity", amount=Decimal("1.5"), unit="kWh",
        period_start=dt.date(2025, 1, 1), period_end=dt.date(2025, 1, 31), mass=Decimal("0.000001"),
    )  # fmt: skip
    shape = RowShape(ActivitySerializer, computed=STORED_RESULT_COMPUTED)
    queryset = ActivityRecord.objects.with_related().order_by("pk")
    written = rows.dumps(shape.rows(queryset.values_list(*shape.columns)))
    assert written == drf_json(ActivitySerializer(queryset, many=True).data)
    assert json.loads(written)[-1]["emission"] is None


# timestamptz texts as PostgreSQL writes them (DateStyle ISO), and a few it does not write, which are parsed.
DATETIME_TEXTS = [
    "2026-12-03 12:52:57.3795+00",
    "2026-12-03 12:52:57+00",
    "2026-12-03 12:52:57.000001+00",
    "2026-12-03 12:52:57.999999+00",
    "2026-12-03 12:52:57.1+00",
    "0005-01-01 00:00:00.5+00",
    "2026-12-03 12:52:57.50+00",  # a trailing zero
    "2026-12-03 12:52:57.0+00",  # a zero fraction
    "2026-12-03 13:52:57.25+01",
    "2026-12-03 07:22:57.25-05:30",
    "2026-12-03T12:52:57.25+00:00",
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/London", "Asia/Kolkata"])
@pytest.mark.parametrize("text", DATETIME_TEXTS)
def test_datetime_text_is_written_as_drf_writes_the_instant(text, zone):
    field = serializers.DateTimeField()
    with timezone.override(zone):
        written = rows._from_iso_text(rows._datetime(field), field)()(text)
        assert written == field.to_representation(dt.datetime.fromisoformat(text))


def test_a_field_with_its_own_time_zone_is_parsed():
    field = serializers.DateTimeField(default_timezone=dt.timezone(dt.timedelta(hours=2)))
    assert not rows._writes_utc(field)
    assert rows._from_iso_text(rows._datetime(field), field)()("2026-12-03 12:52:57+00") == "2026-12-03T14:52:57+02:00"
    assert rows._writes_utc(serializers.DateTimeField(default_timezone=dt.UTC))


PLAIN = {"results": [{"co2e_kg": "1.500000", "category": 1, "notes": [], "supplier": None, "ok": True}]}
WRITTEN = [
    PLAIN,  # written by orjson
    {**PLAIN, "text": "\u2028 \u00e9"},  # orjson, then the line separators escaped
    {**PLAIN, "float": 1e-05, "big": 123456789012345678901234567890},  # written whole by DRF's encoder
]


@pytest.mark.parametrize("data", WRITTEN)
@pytest.mark.parametrize("accept", ["application/json", "application/json; indent=4", "text/html"])
@pytest.mark.parametrize("list_rows", [True, False])
def test_a_written_response_is_drf_s_response(settings, accept, list_rows, data, monkeypatch):
    settings.LIST_ROWS = list_rows

    class Answer(APIView):
        permission_classes: list[Any] = []
        by_drf = False

        def get(self, request: Any) -> Any:
            if self.by_drf:
                return Response(data, status=201)
            return rows.written_response(request, data, status=201)

    def answer(**initkwargs: Any) -> Any:
        response = Answer.as_view(**initkwargs)(APIRequestFactory().get("/", HTTP_ACCEPT=accept))
        response.render()
        return response

    dumped: list[Any] = []
    dumps = rows.dumps

    def counted(value: Any) -> bytes:
        dumped.append(value)
        return dumps(value)

    monkeypatch.setattr(rows, "dumps", counted)
    written = answer()
    by_orjson = len(dumped)
    drf = answer(by_drf=True)

    if accept == "text/html":  # the browsable API's page (its CSRF token differs between any two)
        assert (written.status_code, written["Content-Type"]) == (201, drf["Content-Type"])
    else:
        assert (written.status_code, written.content, sorted(written.items())) == (
            201,
            drf.content,
            sorted(drf.items()),
        )
    by_rows = list_rows and accept == "application/json"
    assert isinstance(written, rows.RenderedJSONResponse) == by_rows
    assert by_orjson == (1 if by_rows else 0)  # written by perf.rows.dumps (a non-plain body as DRF's Fragment)


@pytest.mark.django_db
def test_a_page_is_written_with_the_collector_paused(varied, api, monkeypatch):
    written = RowShape.rows
    collector: list[bool] = []

    def rows_seen(self: RowShape, values: Any) -> list[dict[str, Any]]:
        collector.append(gc.isenabled())
        return written(self, values)

    monkeypatch.setattr(RowShape, "rows", rows_seen)
    assert gc.isenabled()
    response = api.get("/api/v1/emissions/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and len(response.json()["results"]) == len(varied)
    assert collector == [False]
    assert gc.isenabled()  # back on once the page is written
