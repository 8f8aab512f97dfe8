"""List pages written from value rows straight to JSON bytes: a DRF serializer's output, without its per-field cost.

DRF serializes a page field by field: each row becomes a model instance (and one per related object),
each field is looked up through its ``source`` and converted by its ``to_representation``, and the
renderer then walks the resulting dicts again with ``json.dumps``. ``RowShape`` compiles a serializer
class once into the columns a ``values_list()`` query reads and, per field, a converter doing what that
DRF field does with the column's value. A page is then one query of tuples, one dict per row and one
``orjson.dumps``, and its bytes are those DRF's ``JSONRenderer`` writes for the same rows.

**The serializer stays the one definition of the shape.** Its readable fields, in order, become the
row's keys; each field's class decides its converter. Supported: ``IntegerField``, ``CharField``,
``ChoiceField``, ``DecimalField`` (as a string: ``COERCE_DECIMAL_TO_STRING``), ``DateField`` and
``DateTimeField`` (ISO 8601), ``JSONField``, ``PrimaryKeyRelatedField``, nested serializers over a
single-valued relation (forward or reverse one-to-one, foreign key; a null relation is ``null``) and
nested serializers (``many`` or not) over a JSON column's objects. A field sourced from a model property
is declared by the caller as ``computed``: the column it derives from and the function (the one the
property uses). Anything else (a method field, a field class overriding ``to_representation``, a
``source`` through a nullable relation inside a nested object) raises ``UnsupportedField`` when the
shape is compiled, so a field added to the serializer can never serialize differently here unnoticed.

**Byte equality with DRF's renderer.** orjson writes strings, integers, ``None``, booleans and dates as
``json.dumps(ensure_ascii=False, separators=(",", ":"))`` does, but not every float (``1e-05`` vs
``0.00001``) nor integers beyond 64 bits. Converted fields never hold those; a JSON column's value passes
through as is only when it holds nothing else (``_plain``), else it is embedded as DRF's encoder writes
it (``orjson.Fragment``). U+2028/U+2029 are escaped as ``JSONRenderer`` does. JSON columns are read as text
and loaded by orjson (Django's ``json.loads`` costs several times more); where orjson would read a value
otherwise (a float, which may be an integer beyond 64 bits) the text is loaded by ``json.loads`` and
converted as DRF would (``_JsonConverter``). ``renders_rows`` says
whether a renderer is the configuration this reproduces (DRF's ``JSONRenderer``, compact, UTF-8, no
indent); any other rendering (the browsable API, ``; indent=4``) goes through DRF.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Model, QuerySet
from django.db.models.functions import Cast
from rest_framework import ISO_8601, relations, serializers
from rest_framework import fields as drf_fields
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.encoders import JSONEncoder

from perf.gcpause import collection_paused
from perf.pagination import path_field

Row = Sequence[Any]
Converter = Callable[[Any], Any]
# A field's converter for one page: made per page (``_Leaf.bind``) from what can change between requests
# (the decimal context, the current time zone), as DRF reads them per field call.
Binder = Callable[[], Converter]
# (model, attribute) -> (the column it is computed from, the function computing it).
Computed = dict[tuple[type[Model], str], tuple[str, Converter]]


class UnsupportedField(TypeError):
    """A serializer field whose output ``RowShape`` cannot reproduce from a column value; the message names it."""


def _name(field: serializers.Field) -> str:
    """A bound field's name (its key in the output)."""
    assert field.field_name is not None, "the serializer's fields are bound"
    return field.field_name


def _same(cls: type, base: type, *methods: str) -> bool:
    """Whether ``cls`` resolves ``methods`` to ``base``'s own: its output is ``base``'s for the same input."""
    return all(getattr(cls, name) is getattr(base, name) for name in methods)


# -- JSON -------------------------------------------------------------------------------------------

_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1


def _plain(value: Any) -> bool:
    """Whether orjson writes ``value`` exactly as ``json.dumps`` does: str keys, no float, no integer beyond 64 bits.

    Runs on every JSON value of a page: the common leaves (strings, small integers) are tested inline.
    """
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind is str or value is None or kind is bool or (kind is int and _INT_MIN <= value <= _UINT_MAX)
    for item in items:
        leaf = type(item)
        if leaf is str or item is None or leaf is bool or (leaf is int and _INT_MIN <= item <= _UINT_MAX):
            continue
        if (leaf is not dict and leaf is not list) or not _plain(item):
            return False
    return True


def _drf_json(value: Any) -> orjson.Fragment:
    """``value`` as ``JSONRenderer`` writes it (its encoder and settings), for orjson to embed verbatim."""
    text = json.dumps(
        value,
        cls=JSONEncoder,
        ensure_ascii=False,
        allow_nan=not api_settings.STRICT_JSON,
        separators=(",", ":"),
    )
    return orjson.Fragment(text.encode())


def json_value(value: Any) -> Any:
    """A value bound for orjson that no converter made (a JSON column's, DRF's own output): as is when orjson
    writes it as DRF's renderer would, else pre-rendered by DRF's encoder."""
    return value if _plain(value) else _drf_json(value)


# A fast converter's answer when the value is not of the shape it covers: the exact converter then runs.
_MISS: Any = object()


@dataclass(frozen=True, slots=True)
class _JsonConverter:
    """What a field makes of a JSON column's value: ``fast`` on orjson's reading of the text (or ``_MISS``), else
    ``exact`` on ``json.loads``'s, which is what Django's ``JSONField.from_db_value`` hands DRF.

    orjson and ``json.loads`` read a text into equal values but for integers beyond 64 bits (orjson: a float) and
    what orjson refuses (``1e400``, a lone surrogate escape). A fast converter misses on any float, so whatever it
    answers was read alike by both.
    """

    fast: Converter
    exact: Converter


def _from_text(converter: _JsonConverter) -> Binder:
    """A JSON column read as text (``RowShape`` selects it so): loaded, converted; JSON ``null`` is ``None``.

    Per page, each distinct text is converted once: rows of one list often share a column's text (the same data
    quality scores, the same fallback notes, an empty list of warnings), and the conversion depends on the text
    alone. Rows with equal texts then hold the same (read-only) converted value."""
    fast, exact = converter.fast, converter.exact

    def convert(text: str) -> Any:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = _MISS
        if value is None:
            return None
        if value is not _MISS:
            result = fast(value)
            if result is not _MISS:
                return result
        value = json.loads(text)
        return None if value is None else exact(value)

    def bind() -> Converter:
        memo: dict[str, Any] = {}

        def from_text(text: Any) -> Any:
            if type(text) is str:
                result = memo.get(text, _MISS)
                if result is _MISS:
                    result = memo[text] = convert(text)
                return result
            return None if text is None else exact(text)

        return from_text

    return bind


def dumps(data: Any) -> bytes:
    """``data`` as DRF's ``JSONRenderer`` (compact, UTF-8, strict) writes it. Precondition: every value in ``data``
    came from a ``RowShape`` converter or ``json_value``, or is a str, int within 64 bits, bool, None or date."""
    body = orjson.dumps(data)
    # JSONRenderer escapes the two line separators that JavaScript string literals cannot hold.
    if b"\xe2\x80\xa8" in body or b"\xe2\x80\xa9" in body:
        body = body.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    return body


def renders_rows(renderer: BaseRenderer, media_type: str | None) -> bool:
    """Whether ``renderer`` answering ``media_type`` writes what ``dumps`` does: DRF's ``JSONRenderer`` (or a
    subclass keeping its ``render``) with its encoder, compact, non-ASCII as UTF-8, no indent."""
    return (
        isinstance(renderer, JSONRenderer)
        and _same(type(renderer), JSONRenderer, "render", "get_indent")
        and renderer.encoder_class is JSONEncoder
        and renderer.compact
        and not renderer.ensure_ascii
        and renderer.charset is None
        and renderer.get_indent(media_type or "", {}) is None
    )


class RenderedJSONResponse(Response):
    """A DRF ``Response`` whose JSON body is already written (``dumps``); it renders as ``JSONRenderer`` would have.

    Precondition: the request's accepted renderer passed ``renders_rows``. DRF's ``finalize_response`` and the
    response cache (``perf.conditional``) handle it as any ``Response``: the headers come out the same.
    """

    def __init__(self, body: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body = body

    @property
    def rendered_content(self) -> bytes:  # type: ignore[override]  # the stubs type Django's as a str-or-bytes
        # Response.rendered_content's headers for a renderer without a charset, without calling the renderer.
        renderer = self.accepted_renderer
        self["Content-Type"] = self.content_type if self.content_type is not None else renderer.media_type
        return self.body


# -- converters (each is the DRF field's to_representation for a value that is not None) --------------


def _integer(value: Any) -> Any:
    return value if type(value) is int else int(value)


def _integer_column(value: Any) -> Any:
    # A column that is not an integer (a decimal, a text): its int() may be beyond 64 bits.
    return json_value(_integer(value))


def _text(value: Any) -> Any:
    return value if type(value) is str else str(value)


def _constant(convert: Converter) -> Binder:
    return lambda: convert


def _choice(field: serializers.ChoiceField) -> Binder:
    mapping = field.choice_strings_to_values

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int:  # a column's value: no Enum member to unwrap
            return value if value == "" else mapping.get(str(value), value)
        return field.to_representation(value)

    return _constant(convert)


def _decimal(field: serializers.DecimalField) -> Binder:
    if not getattr(field, "coerce_to_string", api_settings.COERCE_DECIMAL_TO_STRING) or field.localize:
        raise UnsupportedField(f"{field.field_name}: only decimals coerced to plain strings are supported")
    places, digits, rounding, normalize = field.decimal_places, field.max_digits, field.rounding, field.normalize_output
    quantum = None if places is None else decimal.Decimal(".1") ** places
    written = _written_decimal(places, digits, normalize)

    def bind() -> Converter:
        # DecimalField.quantize copies the thread's context per value; it is the same for the whole page.
        context = decimal.getcontext().copy()
        if digits is not None:
            context.prec = digits

        def convert(value: Any) -> str:
            if type(value) is str and written is not None and written(value) is not None:
                return value
            if not isinstance(value, decimal.Decimal):
                value = decimal.Decimal(str(value).strip())
            if quantum is not None:
                value = value.quantize(quantum, rounding=rounding, context=context)
            if normalize:
                value = value.normalize()
            return f"{value:f}"

        return convert

    return bind


def _written_decimal(places: int | None, digits: int | None, normalize: bool) -> Callable[[str], Any] | None:
    """A test (a pattern's ``fullmatch``) of the texts a ``DecimalField`` of ``places`` and ``digits`` writes as they
    are: with exactly ``places`` decimals, no leading zero, at most ``digits`` digits (as PostgreSQL writes a
    ``numeric(digits, places)`` column's value), ``quantize`` changes nothing and ``{:f}`` gives the text back.
    Checked per value: a text of another form (another scale, an exponent, ``NaN``) is converted as DRF does.
    None when no text is written as it is (no fixed number of places, or ``normalize_output``)."""
    if places is None or normalize or (digits is not None and digits < places):
        return None
    # The coefficient's digits are the integer part's (none for a leading 0) and the decimals.
    whole = "(?:0|[1-9][0-9]*)"
    if digits is not None:
        whole = "0" if digits == places else f"(?:0|[1-9][0-9]{{0,{digits - places - 1}}})"
    decimals = f"\\.[0-9]{{{places}}}" if places else ""
    return re.compile(f"-?{whole}{decimals}").fullmatch


def _decimal_from_text(function: Converter) -> Converter:
    """``function`` of a decimal column's value read as text (``RowShape.text_loaded``), or of its ``Decimal``."""
    to_decimal = decimal.Decimal
    return lambda value: function(to_decimal(value) if type(value) is str else value)


def _from_iso_text(binder: Binder, field: serializers.DateTimeField) -> Binder:
    """A datetime column read as text (``RowShape`` selects it so), parsed by ``datetime.fromisoformat``, then
    ``binder``'s converter. Django's psycopg loader for ``timestamptz`` parses in Python, several times slower; the
    text is the ISO form psycopg itself requires (``DateStyle`` ISO) in the connection's time zone, whose offset it
    carries (``+00``), so both give the same instant.

    When the field writes UTC (the page's time zone is UTC) and the text is a UTC instant in PostgreSQL's form
    (``2026-01-02 03:04:05.67+00``: whole seconds without a fraction, the fraction's trailing zeros dropped), the
    text is rewritten to DRF's (``2026-01-02T03:04:05.670000Z``) without making a datetime; any other text is
    parsed."""

    def bind() -> Converter:
        convert = binder()
        parse = dt.datetime.fromisoformat
        if not _writes_utc(field):
            return lambda text: convert(parse(text) if type(text) is str else text)
        match = _PG_UTC.fullmatch

        def from_text(text: Any) -> Any:
            if type(text) is str:
                found = match(text)
                if found is not None:
                    day, time, fraction = found.groups()
                    if fraction is None:
                        return f"{day}T{time}Z"
                    return f"{day}T{time}.{fraction:0<6}Z"
                return convert(parse(text))
            return convert(text)

        return from_text

    return bind


# A UTC instant as PostgreSQL writes a timestamptz (DateStyle ISO, TimeZone UTC): a four-digit year, whole seconds,
# then a fraction of 1 to 6 digits without trailing zeros (none when it is zero), then the offset.
_PG_UTC = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{0,5}[1-9]))?\+00")


def _writes_utc(field: serializers.DateTimeField) -> bool:
    """Whether ``field`` writes an aware datetime in UTC for this page: its time zone (DRF's ``enforce_timezone``)
    is UTC itself, not a zone that is at UTC on some dates."""
    zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()
    return zone is dt.UTC or getattr(zone, "key", None) == "UTC"


def _iso_format(field: serializers.Field, default: str) -> None:
    output_format = getattr(field, "format", default)
    if output_format is None or output_format.lower() != ISO_8601:
        raise UnsupportedField(f"{field.field_name}: only ISO 8601 dates and datetimes are supported")


def _date(field: serializers.DateField) -> Binder:
    _iso_format(field, api_settings.DATE_FORMAT)

    def convert(value: Any) -> Any:
        # orjson writes a date as its isoformat(), which is what DateField returns.
        if type(value) is dt.date or isinstance(value, str):
            return value
        return field.to_representation(value)

    return _constant(convert)


def _datetime(field: serializers.DateTimeField) -> Binder:
    _iso_format(field, api_settings.DATETIME_FORMAT)

    def bind() -> Converter:
        # DateTimeField.enforce_timezone reads the current time zone per value; it is the same for the whole page.
        zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()

        def convert(value: Any) -> Any:
            if zone is None or not isinstance(value, dt.datetime) or value.tzinfo is None:
                return field.to_representation(value)  # naive, a string, no time zone: DRF's own branches
            try:
                text = value.astimezone(zone).isoformat()
            except OverflowError:
                return field.to_representation(value)  # DRF's validation error
            return text[:-6] + "Z" if text.endswith("+00:00") else text

        return convert

    return bind


def _leaf_binder(field: serializers.Field, model_field: models.Field | None) -> Binder | None:
    """The converter of a field reading one column (None: the value as is)."""
    cls = type(field)
    if isinstance(field, relations.PrimaryKeyRelatedField) and _same(
        cls, relations.PrimaryKeyRelatedField, "to_representation", "get_attribute", "use_pk_only_optimization"
    ):
        if field.pk_field is not None:
            raise UnsupportedField(f"{field.field_name}: pk_field is not supported")
        return None  # the column is the related row's id: PKOnlyObject's pk
    if isinstance(field, serializers.ChoiceField) and _same(cls, serializers.ChoiceField, "to_representation"):
        return _choice(field)
    if isinstance(field, serializers.DecimalField) and _same(
        cls, serializers.DecimalField, "to_representation", "quantize"
    ):
        return _decimal(field)
    if isinstance(field, serializers.DateTimeField) and _same(
        cls, serializers.DateTimeField, "to_representation", "enforce_timezone", "default_timezone"
    ):
        return _datetime(field)
    if isinstance(field, serializers.DateField) and _same(cls, serializers.DateField, "to_representation"):
        return _date(field)
    if isinstance(field, serializers.BigIntegerField) and _same(cls, serializers.BigIntegerField, "to_representation"):
        if getattr(field, "coerce_to_string", api_settings.COERCE_BIGINT_TO_STRING):
            return _constant(str)
        return None if isinstance(model_field, models.IntegerField) else _constant(_integer_column)
    if isinstance(field, serializers.IntegerField) and _same(cls, serializers.IntegerField, "to_representation"):
        return None if isinstance(model_field, models.IntegerField) else _constant(_integer_column)
    if isinstance(field, serializers.CharField) and _same(cls, serializers.CharField, "to_representation"):
        return _constant(_text)
    if isinstance(field, serializers.JSONField) and _same(cls, serializers.JSONField, "to_representation"):
        if field.binary:
            raise UnsupportedField(f"{field.field_name}: binary JSON is not supported")
        if isinstance(model_field, models.JSONField) and model_field.decoder is None:
            return _from_text(_JsonConverter(_plain_or_miss, json_value))
        return _constant(json_value)
    raise UnsupportedField(f"{field.field_name}: {cls.__name__} has no row converter; declare it computed or extend")


# -- JSON objects (a nested serializer over a JSON column's value) -------------------------------------


def _plain_or_miss(value: Any) -> Any:
    return value if _plain(value) else _MISS


def _json_object(serializer: serializers.Serializer) -> _JsonConverter:
    """The nested serializer's output for a JSON object, key by key; DRF's own for anything its keys do not cover.

    Fast: every key present with a value of the type the field writes (an int for an ``IntegerField``, a str for a
    ``CharField``), which the field writes unchanged: one dict display, generated per serializer.
    """
    fields: list[tuple[str, str, type]] = []
    for field in serializer._readable_fields:
        cls = type(field)
        attrs = field.source_attrs
        if len(attrs) != 1 or not _same(cls, drf_fields.Field, "get_attribute"):
            raise UnsupportedField(f"{field.field_name}: nested JSON fields read one key")
        if isinstance(field, serializers.IntegerField) and _same(cls, serializers.IntegerField, "to_representation"):
            fields.append((_name(field), attrs[0], int))
        elif isinstance(field, serializers.CharField) and _same(cls, serializers.CharField, "to_representation"):
            fields.append((_name(field), attrs[0], str))
        else:
            raise UnsupportedField(f"{field.field_name}: {cls.__name__} in a JSON object has no converter")
    casts = {int: _integer, str: _text}

    def exact(value: Any) -> Any:
        if type(value) is dict:
            try:
                # json_value: an int() beyond 64 bits, written as DRF's renderer writes it.
                return json_value(
                    {name: None if (item := value[key]) is None else casts[kind](item) for name, key, kind in fields}
                )
            except KeyError:
                pass  # a missing key: DRF's default, None, skip or error, as the field says
        return json_value(serializer.to_representation(value))

    lookups = "; ".join(f"v{i} = d[{key!r}]" for i, (_, key, _) in enumerate(fields))
    checks = " or ".join(f"type(v{i}) is not {kind.__name__}" for i, (_, _, kind) in enumerate(fields)) or "False"
    display = ", ".join(f"{name!r}: v{i}" for i, (name, _, _) in enumerate(fields))
    source = (
        "def fast(d):\n"
        "    if type(d) is not dict:\n        return MISS\n"
        f"    try:\n        {lookups or 'pass'}\n    except KeyError:\n        return MISS\n"
        f"    if {checks}:\n        return MISS\n"
        f"    return {{{display}}}\n"
    )
    return _JsonConverter(_compiled(source, "fast", MISS=_MISS), exact)


def _json_nested(field: serializers.BaseSerializer) -> _JsonConverter:
    if isinstance(field, serializers.ListSerializer) and _same(
        type(field), serializers.ListSerializer, "to_representation"
    ):
        child = field.child
        if not isinstance(child, serializers.Serializer):
            raise UnsupportedField(f"{field.field_name}: a list of {type(child).__name__}")
        item = _json_object(child)
        item_fast, item_exact = item.fast, item.exact

        def fast(value: Any) -> Any:
            if type(value) is not list:
                return _MISS
            converted = []
            for element in value:
                result = item_fast(element)
                if result is _MISS:
                    return _MISS
                converted.append(result)
            return converted

        def exact(value: Any) -> Any:
            if type(value) is list:
                return [item_exact(element) for element in value]
            return json_value(field.to_representation(value))

        return _JsonConverter(fast, exact)
    if isinstance(field, serializers.Serializer) and _same(type(field), serializers.Serializer, "to_representation"):
        return _json_object(field)
    raise UnsupportedField(f"{field.field_name}: {type(field).__name__} over a JSON value")


def _compiled(source: str, name: str, **namespace: Any) -> Any:
    """The function ``name`` that ``source`` defines. The sources here hold field names and JSON keys (``repr()``
    quoted), indexes and local names only: generated code runs a field's conversion without a call per field."""
    exec(compile(source, f"<perf.rows {name}>", "exec"), namespace)
    return namespace[name]


# -- compiling a serializer -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    column: int
    binder: Binder | None


@dataclass(frozen=True, slots=True)
class _Object:
    """A nested serializer over a relation: ``None`` when the related row's key (``key``) is null."""

    key: int
    fields: _Fields


_Fields = tuple[tuple[str, _Leaf | _Object], ...]


class RowShape:
    """A serializer compiled to ``columns`` (for ``values_list``) and a per-page row writer (``rows``).

    ``computed`` declares fields sourced from a model property: ``{(model, attribute): (column, function)}``,
    the function being what the property computes from that column (the converter of the field's class
    then applies, as to the property's value). Raises ``UnsupportedField`` for a field it cannot reproduce.

    ``text_loaded``: the PostgreSQL types (``numeric``) whose values the row writer takes as their text as well as
    the Python value Django's cursor would give. A page query may load them so (``perf.keyset_sql.execute``): a
    ``numeric(p, s)`` column's text is already what its ``DecimalField`` writes, without a ``Decimal`` made,
    quantized and formatted per value.
    """

    def __init__(self, serializer_class: type[serializers.ModelSerializer], *, computed: Computed | None = None):
        self.serializer = serializer_class()
        self.computed: Computed = dict(computed or {})
        self._columns: dict[str, tuple[int, str | Cast]] = {}
        self._numeric_readers: list[bool] = []
        model = serializer_class.Meta.model
        self.root = self._compile(self.serializer, model, prefix="")
        numeric_text = bool(self._numeric_readers) and all(self._numeric_readers)
        self.text_loaded: frozenset[str] = frozenset({"numeric"} if numeric_text else ())
        self.columns: tuple[str | Cast, ...] = tuple(column for _, column in self._columns.values())
        self._make_writer, self._binders = _generate(self.root)

    def _column(self, path: str) -> int:
        return self._column_index(path, path)

    def _json_column(self, path: str) -> int:
        # Read as text and loaded by orjson (_from_text): Django's from_db_value (json.loads) costs several times more.
        return self._text_column(path)

    def _text_column(self, path: str) -> int:
        return self._column_index(f"{path}::text", Cast(path, output_field=models.TextField()))

    def _column_index(self, name: str, column: str | Cast) -> int:
        if name not in self._columns:
            self._columns[name] = (len(self._columns), column)
        return self._columns[name][0]

    def _compile(self, serializer: serializers.Serializer, model: type[Model], prefix: str) -> tuple[Any, ...]:
        if not _same(type(serializer), serializers.Serializer, "to_representation"):
            raise UnsupportedField(f"{type(serializer).__name__} overrides to_representation")
        fields: list[tuple[str, _Leaf | _Object]] = []
        for field in serializer._readable_fields:
            fields.append((_name(field), self._field(field, model, prefix)))
        return tuple(fields)

    def _field(self, field: serializers.Field, model: type[Model], prefix: str) -> _Leaf | _Object:
        name = _name(field)
        attrs = list(field.source_attrs)
        # A PrimaryKeyRelatedField's own get_attribute is checked with its converter.
        own_lookup = isinstance(field, relations.PrimaryKeyRelatedField)
        if not attrs or not (own_lookup or _same(type(field), drf_fields.Field, "get_attribute")):
            raise UnsupportedField(f"{name}: source '*' or a custom get_attribute")
        # Every relation before the last attribute must always be there: through a null one DRF skips the key.
        for attr in attrs[:-1]:
            relation = self._model_field(model, attr, name)
            if not relation.is_relation or relation.many_to_many or relation.one_to_many or relation.null:
                raise UnsupportedField(f"{name}: source through '{attr}', not a non-null single relation")
            assert relation.related_model is not None and not isinstance(relation.related_model, str)
            model = relation.related_model
        path = prefix + "__".join(attrs)
        last = attrs[-1]
        if (model, last) in self.computed:
            column, function = self.computed[(model, last)]
            source = _column_field(model, column)
            if isinstance(source, models.DecimalField):  # function takes a Decimal, made of the text
                self._reads_numeric(source, takes_text=True)
                function = _decimal_from_text(function)
            else:
                self._reads_numeric(source, takes_text=False)
            base = _leaf_binder(field, None)
            index = self._column(prefix + "".join(f"{attr}__" for attr in attrs[:-1]) + column)
            if base is None:
                return _Leaf(index, _constant(function))
            return _Leaf(index, _compose(function, base))
        model_field = self._model_field(model, last, name)
        if isinstance(field, serializers.BaseSerializer):
            if isinstance(model_field, models.JSONField) and model_field.decoder is None:
                return _Leaf(self._json_column(path), _from_text(_json_nested(field)))
            if not model_field.is_relation or model_field.many_to_many or model_field.one_to_many:
                raise UnsupportedField(f"{name}: a nested serializer over '{last}', not a single relation or JSON")
            if not isinstance(field, serializers.Serializer):
                raise UnsupportedField(f"{name}: {type(field).__name__} over a relation")
            related = model_field.related_model
            assert related is not None and not isinstance(related, str)
            key = self._column(f"{path}__{related._meta.pk.name}")
            self._reads_numeric(related._meta.pk, takes_text=False)
            return _Object(key, self._compile(field, related, prefix=f"{path}__"))
        if model_field.is_relation and not isinstance(field, relations.PrimaryKeyRelatedField):
            raise UnsupportedField(f"{name}: {type(field).__name__} over the relation '{last}'")
        binder = _leaf_binder(field, model_field)
        # _decimal's converter takes a numeric column's text; no other converter does.
        self._reads_numeric(model_field, takes_text=isinstance(field, serializers.DecimalField))
        if isinstance(model_field, models.JSONField) and model_field.decoder is None:
            return _Leaf(self._json_column(path), binder)
        if type(model_field) is models.DateTimeField and isinstance(field, serializers.DateTimeField):
            assert binder is not None
            return _Leaf(self._text_column(path), _from_iso_text(binder, field))
        return _Leaf(self._column(path), binder)

    def _reads_numeric(self, model_field: Any, *, takes_text: bool) -> None:
        """Note whether a column's reader takes its text, if the column may be a ``numeric`` (a decimal, a relation
        to a decimal key, or a column of unknown type)."""
        while model_field is not None and model_field.is_relation:
            model_field = getattr(model_field, "target_field", None)
        if model_field is None or isinstance(model_field, models.DecimalField):
            self._numeric_readers.append(takes_text)

    @staticmethod
    def _model_field(model: type[Model], attr: str, name: str) -> Any:
        try:
            return model._meta.get_field(attr)
        except Exception as exc:  # FieldDoesNotExist: a property or method
            raise UnsupportedField(f"{name}: '{attr}' is no field of {model.__name__}; declare it computed") from exc

    # -- writing ------------------------------------------------------------------------------------

    def rows(self, values: Iterable[Row]) -> list[dict[str, Any]]:
        """The serializer's output (``many=True``) for ``values``: tuples of ``columns``, in that order. Rows with
        equal JSON column texts share the converted value: the output is read, not changed."""
        write = self._make_writer(*(binder() for binder in self._binders))
        return list(map(write, values))


def _column_field(model: type[Model], path: str) -> Any:
    """The model field a ``values_list`` path (``supplier__name``) reads; None when it is not one."""
    try:
        return path_field(model, path)
    except FieldDoesNotExist:  # a transform, an annotation
        return None


def _generate(root: _Fields) -> tuple[Callable[..., Callable[[Row], Any]], list[Binder]]:
    """A maker of the row writer (one dict display per row, nested ones for related objects) and the binders
    whose converters it takes, in order. Generated once per shape: a loop over per-field callables costs a call
    per field and row, most of the writing time of a page."""
    binders: list[Binder] = []

    def expression(node: _Leaf | _Object) -> str:
        if isinstance(node, _Object):
            return f"(None if row[{node.key}] is None else {display(node.fields)})"
        if node.binder is None:
            return f"row[{node.column}]"
        binders.append(node.binder)
        name = f"c{len(binders) - 1}"
        return f"(None if (v := row[{node.column}]) is None else {name}(v))"

    def display(fields: _Fields) -> str:
        return "{" + ", ".join(f"{name!r}: {expression(node)}" for name, node in fields) + "}"

    body = display(root)
    parameters = ", ".join(f"c{i}" for i in range(len(binders)))
    source = f"def make({parameters}):\n    def write(row):\n        return {body}\n    return write\n"
    return _compiled(source, "make"), binders


def _compose(function: Converter, binder: Binder) -> Binder:
    def bind() -> Converter:
        convert = binder()
        return lambda value: None if (computed := function(value)) is None else convert(computed)

    return bind


# -- views -----------------------------------------------------------------------------------------


def _rows_wanted(request: Request) -> bool:
    """Whether ``request`` is answered from value rows: ``LIST_ROWS`` on, and its rendering ``dumps``'s."""
    return settings.LIST_ROWS and renders_rows(request.accepted_renderer, request.accepted_media_type)


def _written(data: Callable[[], Any]) -> bytes:
    """``dumps(data())`` with the cyclic collector paused. Writing rows allocates a few containers per row and field
    (dicts, the JSON columns' values): with the collector on, it runs several times per page over objects that all
    die by reference counting right after (what is written is bounded: a page, a create's items, a calculation batch's
    results). Nothing here waits on I/O, so no other greenlet runs while it is off; the data is freed before the
    collector is back on."""
    with collection_paused():
        return dumps(data())


def written_response(request: Request, data: Any, *, status: int = 200) -> Response:
    """``Response(data, status=status)``, its body written by ``dumps`` when the request is answered so
    (``LIST_ROWS`` on and DRF's ``JSONRenderer`` rendering it, as for list pages): the same bytes, without the
    stdlib encoder walking ``data`` (a tenth of a 100-item calculation batch's CPU). Any other rendering gets DRF's
    ``Response``. ``data`` holding anything orjson writes otherwise than DRF (``json_value``: a float, an integer
    beyond 64 bits, a key that is not a string) is written whole by DRF's encoder."""
    if not _rows_wanted(request):
        return Response(data, status=status)
    return RenderedJSONResponse(_written(lambda: json_value(data)), status=status)


class RowListMixin:
    """A list action answered from value rows (``RowShape`` of the view's ``serializer_class``) when the response
    is rendered as JSON (``renders_rows``) and the pagination class pages value rows (``paginate_rows``, and
    ``get_paginated_data`` for the page's body); DRF's ``ListModelMixin.list`` otherwise (the browsable API, an
    indented rendering, no pagination, ``LIST_ROWS`` off).

    ``row_computed``: the shape's ``computed`` fields. The shape is compiled once per view class, on first use.
    """

    row_computed: Computed = {}
    _row_shapes: dict[type, RowShape] = {}

    @classmethod
    def row_shape(cls) -> RowShape:
        shape = RowListMixin._row_shapes.get(cls)
        if shape is None:
            shape = RowListMixin._row_shapes[cls] = RowShape(cls.serializer_class, computed=cls.row_computed)  # type: ignore[attr-defined]
        return shape

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        view: Any = self
        paginator = view.paginator
        if not _rows_wanted(request) or paginator is None or not hasattr(paginator, "paginate_rows"):
            return super().list(request, *args, **kwargs)  # type: ignore[misc]
        shape = self.row_shape()
        queryset: QuerySet = view.filter_queryset(view.get_queryset())
        rows = paginator.paginate_rows(queryset, request, view, shape.columns, text_loaded=shape.text_loaded)
        return RenderedJSONResponse(_written(lambda: paginator.get_paginated_data(shape.rows(rows))))

    def rows_response(self, queryset: QuerySet, ids: Sequence[Any], *, many: bool, status: int) -> Response | None:
        """The rows of ``queryset`` whose primary keys are ``ids``, in that order, written as the view's serializer
        writes them (a list when ``many``, else the one row), in a response of ``status``: one query, no serializer.
        None when the request is not answered from rows (``list``'s conditions); then serialize as usual.

        None too when a row of ``ids`` is no longer in ``queryset`` (deleted since it was written): the caller's own
        objects then answer.
        """
        if not _rows_wanted(self.request):  # type: ignore[attr-defined]
            return None
        shape = self.row_shape()
        found = {row[0]: row[1:] for row in queryset.filter(pk__in=ids).values_list("pk", *shape.columns)}
        if len(found) < len(set(ids)):
            return None

        def data() -> Any:
            rows = shape.rows(found[pk] for pk in ids)
            return rows if many else rows[0]

        body = _written(data)
        return RenderedJSONResponse(body, status=status)
