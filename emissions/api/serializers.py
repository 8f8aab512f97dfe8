"""Request validation and response shapes for API v1.

Input serializers check shapes only (types, ranges, choices, tenancy of referenced ids); how
the fields of a calculation relate is ``calculator.inputs``' rule, which they call, and the
calculator checks meaning (units, factors, rates). Output serializers read rows loaded with
``with_related()`` so that lists run a constant number of queries.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.utils.dateparse import parse_datetime
from django_countries import countries
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from calculator import rules
from emissions.inputs import (
    MAX_YEAR,
    MIN_YEAR,
    CalculationInputSerializer,
    KnownFieldsSerializer,
    PlainDecimalField,
    PlainIntegerField,
    refuse_formula,
)
from emissions.models import (
    CO2E_DIGITS,
    FACTOR_DIGITS,
    SUMMARY_KEYS,
    ActivityRecord,
    AuditEvent,
    Emission,
    EmissionFactor,
    Method,
    Supplier,
    kg_to_tonnes,
)
from perf.rows import Computed

MAX_BATCH_ITEMS = 1000
GAS_NAME_RE = re.compile(r"^[A-Za-z0-9_\-\.]{1,32}$")
# FIELD_NAMES: the public API has fields named ``source`` and ``label``. DRF's SerializerMetaclass pops
# declared fields off the class, so they never shadow ``Field.source``/``Field.label`` at runtime, but the
# stubs cannot express that and report an [assignment] clash (typeddjango/djangorestframework-stubs#158,
# #78, both open); those declarations carry a targeted ignore rather than renaming public fields.


# -- factors ----------------------------------------------------------------------------------


class FactorSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="dataset.source", read_only=True)  # type: ignore[assignment]  # FIELD_NAMES
    dataset_version = serializers.CharField(source="dataset.version", read_only=True)
    dataset_name = serializers.CharField(source="dataset.name", read_only=True)
    basis_year = serializers.IntegerField(source="dataset.basis_year", read_only=True)

    class Meta:
        model = EmissionFactor
        fields = [
            "id",
            "source",
            "dataset_version",
            "dataset_name",
            "basis_year",
            "activity",
            "name",
            "category",
            "region",
            "year",
            "unit",
            "unit_label",
            "currency",
            "co2e_per_unit",
            "biogenic_co2_per_unit",
            "gwp_set",
            "gases",
            "supplier",
            "extra",
        ]
        read_only_fields = fields


# -- suppliers --------------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "string",
        "enum": ["", *(code for code, _ in countries)],
        "description": "ISO 3166-1 alpha-2 code (any case), or empty",
    }
)
class CountryCodeField(serializers.CharField):
    """A country code; ``SupplierSerializer.validate_country`` checks it (the schema lists the codes)."""


class SupplierSerializer(KnownFieldsSerializer, serializers.ModelSerializer):
    """Supplier fields; ``supplier_create`` / ``supplier_update`` check ``external_id`` uniqueness.

    ``external_id`` and ``name`` are columns of the CSV export: text a spreadsheet would run is refused
    (``emissions.inputs.refuse_formula``).
    """

    country = CountryCodeField(
        max_length=2, required=False, allow_blank=True, help_text="ISO 3166-1 alpha-2 code, e.g. US"
    )

    class Meta:
        model = Supplier
        fields = ["id", "external_id", "name", "country", "naics", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        # As field validators (not validate_<field>), so that the schema states the rule (emissions.api.schema).
        extra_kwargs = {"external_id": {"validators": [refuse_formula]}, "name": {"validators": [refuse_formula]}}
        # The (organization, external_id) constraint is left to the service, which maps the database's
        # violation to the same field error race-free (a pre-check here would cost a query and still race).
        validators: list[Any] = []

    def validate_country(self, value: str) -> str:
        if value == "":
            return value
        code = value.upper()
        if len(code) != 2 or not countries.alpha2(code):
            raise serializers.ValidationError(f"'{value}' is not an ISO 3166-1 alpha-2 country code.")
        return code


class SupplierFactorInputSerializer(KnownFieldsSerializer):
    """A factor a supplier provided: every shape ``supplier_factor_create`` expects (its precondition).

    The service checks what needs the units registry or the database: unit, region, price year, uniqueness.
    ``activity`` and ``dataset_version`` are columns of the CSV export: text a spreadsheet would run is refused.
    """

    activity = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=128,
        validators=[refuse_formula],
        help_text="Lookup key; default supplier:<external_id>:<slug of name>. Use it as the activity of a "
        "supplier_specific calculation, or leave the activity out there to use the supplier's newest factor.",
    )
    name = serializers.CharField(max_length=500)
    unit = serializers.CharField(
        max_length=64, help_text="Unit of the activity (kg, kWh, t*km, ...) or, for a spend factor, a currency code"
    )
    co2e_per_unit = PlainDecimalField(
        max_digits=FACTOR_DIGITS["max_digits"],
        decimal_places=FACTOR_DIGITS["decimal_places"],
        min_value=Decimal(0),
        help_text="kg CO2e per unit, decimal string",
    )
    year = PlainIntegerField(min_value=MIN_YEAR, max_value=MAX_YEAR)
    region = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=16,
        help_text="ISO 3166-1 alpha-2 or GLOBAL; default: the supplier's country, else GLOBAL",
    )
    gases = serializers.DictField(
        child=PlainDecimalField(
            max_digits=FACTOR_DIGITS["max_digits"],
            decimal_places=FACTOR_DIGITS["decimal_places"],
            min_value=Decimal(0),
        ),
        required=False,
        help_text='kg CO2e per unit for each gas, decimal strings, e.g. {"CO2": "2.4", "CH4": "0.1"}',
    )
    dataset_version = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        validators=[refuse_formula],
        help_text='Supplier dataset version; default "current"',
    )

    def validate_gases(self, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for gas in value:
            if not GAS_NAME_RE.match(gas):
                raise serializers.ValidationError(f"'{gas}' is not a gas name such as CO2, CH4 or N2O.")
        return value


class SupplierRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class RawItemField(serializers.Field):
    """A batch item as the parser decoded it, unchecked: ``emissions.inputs.validate_items`` validates each on its own.

    Not DRF's ``JSONField``: that one re-encodes the value to check it is JSON, and fails the whole batch on an
    item holding a Decimal (any JSON number with an exponent or a fraction, ``emissions.api.parsers``).
    """

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class CalculationBatchSerializer(KnownFieldsSerializer):
    """The batch envelope. Items stay raw here: each is validated on its own so one bad item fails alone."""

    # allow_null: a null item is that item's error (emissions.inputs.validate_items), not the whole batch's.
    items = serializers.ListField(child=RawItemField(allow_null=True), min_length=1, max_length=MAX_BATCH_ITEMS)


class CalculationBatchRequestSerializer(serializers.Serializer):
    """Schema of the batch request body (documentation only)."""

    items = serializers.ListField(
        child=CalculationInputSerializer(),
        min_length=1,
        max_length=MAX_BATCH_ITEMS,
        help_text=f"1-{MAX_BATCH_ITEMS} calculation inputs",
    )


# -- results (the schema of calculator.shapes.CalculationResultDict) --------------------------------


class NoteSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class DataQualitySerializer(serializers.Serializer):
    technology = serializers.IntegerField(min_value=1, max_value=5)
    time = serializers.IntegerField(min_value=1, max_value=5)
    geography = serializers.IntegerField(min_value=1, max_value=5)
    completeness = serializers.IntegerField(min_value=1, max_value=5)
    reliability = serializers.IntegerField(min_value=1, max_value=5)
    score = serializers.CharField(help_text="Mean of the five indicators, one decimal")


class FactorRefSerializer(serializers.Serializer):
    """The factor a result used (``CalculationResult.factor_dict()``)."""

    id = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]  # FIELD_NAMES
    dataset_version = serializers.CharField()
    activity = serializers.CharField()
    name = serializers.CharField()
    region = serializers.CharField()
    year = serializers.IntegerField()
    unit = serializers.CharField()
    co2e_per_unit = serializers.CharField(help_text="kg CO2e per unit, decimal string")
    biogenic_co2_per_unit = serializers.CharField(
        allow_null=True, help_text="kg biogenic CO2 per unit (not in CO2e); null when the publisher gives none"
    )


class ReferenceRowSerializer(serializers.Serializer):
    """A stored reference row a conversion used (``calculator.shapes.ReferenceRowDict``)."""

    currency = serializers.CharField()
    quote_currency = serializers.CharField(
        allow_null=True, help_text="An exchange rate: 1 currency = value quote_currency; null for a price index"
    )
    year = serializers.IntegerField()
    value = serializers.CharField(help_text="Decimal string, as stored")
    source = serializers.CharField()  # type: ignore[assignment]  # FIELD_NAMES


class ExchangeRateUseSerializer(serializers.Serializer):
    set = serializers.CharField(help_text="The exchange-rate set")
    year = serializers.IntegerField(help_text="The rate's year: the spend year, or the set's newest (a fallback)")
    value = serializers.CharField(help_text="The rate applied: 1 currency in factor_currency (12 places at most)")
    how = serializers.ChoiceField(
        choices=["direct", "inverse", "cross"], help_text="A stored row, its inverse, or a cross rate through USD"
    )
    rows = ReferenceRowSerializer(many=True)


class PriceIndexUseSerializer(serializers.Serializer):
    """The index rows of the spend year (``from``) and of the factor's price year (``to``)."""

    set = serializers.CharField(help_text="The price-index set")
    to = ReferenceRowSerializer(help_text="The factor's price year")

    def get_fields(self) -> dict[str, serializers.Field]:
        # ``from`` is a Python keyword, so it cannot be declared above; the public order is set, from, to.
        fields = super().get_fields()
        spend = ReferenceRowSerializer(help_text="The spend year (or the set's newest year, when a fallback says so)")
        return {"set": fields["set"], "from": spend, "to": fields["to"]}


class ConversionSerializer(serializers.Serializer):
    """How a spend amount reached the factor's currency and price year (``calculator.shapes.ConversionDict``)."""

    amount = serializers.CharField()
    currency = serializers.CharField()
    spend_year = serializers.IntegerField()
    factor_currency = serializers.CharField()
    price_year = serializers.IntegerField(help_text="The factor's price year")
    exchange_rate = ExchangeRateUseSerializer(allow_null=True, help_text="null when no currency conversion")
    price_index = PriceIndexUseSerializer(allow_null=True, help_text="null when the spend year is the price year")


@extend_schema_field(ConversionSerializer(allow_null=True))
class ConversionField(serializers.JSONField):
    """A stored ``Emission.conversion``, written as stored (``perf.rows`` copies a JSON column; the schema is
    ``ConversionSerializer``'s, the shape the calculator stored)."""


# The shape is calculator.shapes.CalculationResultDict, which CalculationResult.as_dict() returns and the
# calculate views answer with; tests hold these fields (and the nested ones) to its keys, in order.
class CalculationResultSerializer(serializers.Serializer):
    """Shape of ``CalculationResult.as_dict()``; used for the schema, the view returns the dict."""

    co2e_kg = serializers.CharField(help_text="Decimal string")
    biogenic_co2_kg = serializers.CharField(
        allow_null=True,
        help_text="Biogenic CO2 of combustion, reported outside the scopes and not in co2e_kg; "
        "null when the factor has no biogenic figure",
    )
    gases = serializers.DictField(child=serializers.CharField(), help_text="kg CO2e per gas, decimal strings")
    factor = FactorRefSerializer()
    method = serializers.ChoiceField(choices=Method.choices)
    category = serializers.IntegerField()
    converted_amount = serializers.CharField(allow_null=True, help_text="Amount in the factor's unit")
    conversion = ConversionSerializer(
        allow_null=True, help_text="Spend: the rate and index rows the amount was converted with; else null"
    )
    data_quality = DataQualitySerializer()
    fallbacks = NoteSerializer(many=True)
    warnings = NoteSerializer(many=True)
    input = serializers.DictField(help_text="Echo of the input, empty values left out")


@extend_schema_field(
    {
        "oneOf": [
            {"$ref": "#/components/schemas/CalculationResult"},
            {
                "type": "object",
                "properties": {
                    "error": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}
                },
                "required": ["error"],
            },
        ]
    }
)
class BatchItemField(serializers.DictField):
    pass


class CalculationBatchResultSerializer(serializers.Serializer):
    results = serializers.ListField(child=BatchItemField())


# -- stored activities and emissions ---------------------------------------------------------------


class _TonnesField(serializers.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=30, decimal_places=rules.CO2E_T_PLACES, read_only=True, **kwargs)


# What list pages written from value rows (perf.rows.RowShape of EmissionSerializer and ActivitySerializer) need
# besides the serializers' fields: the model property a field reads, as the column and function it is computed by.
STORED_RESULT_COMPUTED: Computed = {(Emission, "co2e_tonnes"): ("co2e_kg", kg_to_tonnes)}


class EmissionFactorRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    source = serializers.CharField(source="dataset.source", read_only=True)  # type: ignore[assignment]  # FIELD_NAMES
    activity = serializers.CharField(read_only=True)


class _StoredResultSerializer(serializers.ModelSerializer):
    """The result fields every view of a stored ``Emission`` shows; subclasses add the factor and their ``Meta``."""

    co2e_t = _TonnesField(source="co2e_tonnes")
    data_quality = DataQualitySerializer(read_only=True)
    fallbacks = NoteSerializer(many=True, read_only=True)
    warnings = NoteSerializer(many=True, read_only=True)
    conversion = ConversionField(
        read_only=True, allow_null=True, help_text="Spend: the rate and index rows the amount was converted with"
    )


class EmissionSerializer(_StoredResultSerializer):
    """A stored result. Precondition: loaded with ``Emission.objects.with_related()``."""

    supplier = SupplierRefSerializer(read_only=True, allow_null=True)
    factor = EmissionFactorRefSerializer(read_only=True)

    class Meta:
        model = Emission
        fields = [
            "id",
            "activity",
            "period_start",
            "period_end",
            "category",
            "method",
            "co2e_kg",
            "co2e_t",
            "biogenic_co2_kg",
            "gases",
            "data_quality",
            "fallbacks",
            "warnings",
            "conversion",
            "calculated_at",
            "supplier",
            "factor",
        ]
        read_only_fields = fields


class EmissionFactorDetailSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    source = serializers.CharField(source="dataset.source", read_only=True)  # type: ignore[assignment]  # FIELD_NAMES
    dataset_version = serializers.CharField(source="dataset.version", read_only=True)
    activity = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)
    region = serializers.CharField(read_only=True)
    year = serializers.IntegerField(read_only=True)
    unit = serializers.CharField(read_only=True)
    co2e_per_unit = serializers.DecimalField(max_digits=30, decimal_places=15, read_only=True)
    biogenic_co2_per_unit = serializers.DecimalField(max_digits=30, decimal_places=15, read_only=True, allow_null=True)


class ActivityEmissionSerializer(_StoredResultSerializer):
    """The result embedded in an activity."""

    factor = EmissionFactorDetailSerializer(read_only=True)

    class Meta:
        model = Emission
        fields = [
            "id",
            "co2e_kg",
            "co2e_t",
            "biogenic_co2_kg",
            "gases",
            "factor",
            "data_quality",
            "fallbacks",
            "warnings",
            "conversion",
            "calculated_at",
        ]
        read_only_fields = fields


class ActivitySerializer(serializers.ModelSerializer):
    """A stored activity with its result. Precondition: loaded with ``ActivityRecord.objects.with_related()``."""

    supplier = SupplierRefSerializer(read_only=True, allow_null=True)
    # A missing emission (rows not written through the API) serializes as null.
    emission = ActivityEmissionSerializer(read_only=True, allow_null=True)

    class Meta:
        model = ActivityRecord
        fields = [
            "id",
            "category",
            "method",
            "factor",
            "activity",
            "region",
            "year",
            "source",
            "dataset_version",
            "amount",
            "unit",
            "currency",
            "spend_year",
            "exchange_rate_set",
            "price_index_set",
            "mass",
            "mass_unit",
            "distance",
            "distance_unit",
            "period_start",
            "period_end",
            "external_ref",
            "supplier",
            "created_at",
            "emission",
        ]
        read_only_fields = fields


# -- summary ------------------------------------------------------------------------------------


class SummaryGroupSerializer(serializers.Serializer):
    key = serializers.JSONField(help_text="Category number, supplier id (null = none), 'YYYY-MM' or method")
    label = serializers.CharField()  # type: ignore[assignment]  # FIELD_NAMES
    co2e_kg = serializers.CharField()
    co2e_t = serializers.CharField()
    biogenic_co2_kg = serializers.CharField(
        allow_null=True, help_text="Biogenic CO2 (not in co2e_kg); null when no emission of the group has a figure"
    )
    count = serializers.IntegerField()
    share = serializers.CharField(help_text="Percent of the total, 2 decimals")


class SummarySerializer(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=list(SUMMARY_KEYS))
    total_co2e_kg = serializers.CharField()
    total_co2e_t = serializers.CharField()
    total_biogenic_co2_kg = serializers.CharField(
        allow_null=True, help_text="Biogenic CO2 (not in total_co2e_kg); null when no emission has a figure"
    )
    count = serializers.IntegerField()
    groups = SummaryGroupSerializer(
        many=True, help_text="Largest co2e_kg first (ties by key); for group_by=month chronological, oldest first"
    )


# -- history (the audit trail of one emission) --------------------------------------------------------------------


class HistoryFactorSerializer(serializers.Serializer):
    """The factor a version names; ``activity``, ``source`` and ``dataset_version`` are null when the factor no
    longer exists (a supplier's own factor deleted since; its deletion is in the audit log)."""

    id = serializers.IntegerField(read_only=True)
    activity = serializers.CharField(read_only=True, allow_null=True)
    source = serializers.CharField(read_only=True, allow_null=True)  # type: ignore[assignment]  # FIELD_NAMES
    dataset_version = serializers.CharField(read_only=True, allow_null=True)


class EmissionValuesSerializer(serializers.Serializer):
    """An emission's stored values in one version. In ``previous`` only the changed fields are present."""

    activity = serializers.IntegerField(read_only=True, required=False)
    supplier = serializers.IntegerField(read_only=True, required=False, allow_null=True)
    category = serializers.IntegerField(read_only=True, required=False)
    method = serializers.CharField(read_only=True, required=False)
    period_start = serializers.DateField(read_only=True, required=False)
    period_end = serializers.DateField(read_only=True, required=False)
    co2e_kg = serializers.DecimalField(read_only=True, required=False, **CO2E_DIGITS)
    biogenic_co2_kg = serializers.DecimalField(read_only=True, required=False, allow_null=True, **CO2E_DIGITS)
    gases = serializers.DictField(child=serializers.CharField(), read_only=True, required=False)
    data_quality = DataQualitySerializer(read_only=True, required=False)
    fallbacks = NoteSerializer(many=True, read_only=True, required=False)
    warnings = NoteSerializer(many=True, read_only=True, required=False)
    conversion = ConversionField(read_only=True, required=False, allow_null=True)
    calculated_at = serializers.DateTimeField(read_only=True, required=False)
    factor = HistoryFactorSerializer(read_only=True, required=False)


def emission_values(columns: dict[str, Any], factors: dict[int, EmissionFactor]) -> dict[str, Any]:
    """An audit row's columns (``AuditEvent.row`` or ``changed``) as ``EmissionValuesSerializer`` reads them:
    foreign keys by their API name, the factor with its dataset, timestamps parsed. Ids of the row and of its
    organization are left out (the URL names both)."""
    values: dict[str, Any] = {}
    for column, value in columns.items():
        if column in ("id", "organization_id"):
            continue
        if column == "factor_id":
            factor = factors.get(value)
            values["factor"] = {
                "id": value,
                "activity": factor.activity if factor else None,
                "source": factor.dataset.source if factor else None,
                "dataset_version": factor.dataset.version if factor else None,
            }
        elif column.endswith("_id"):
            values[column.removesuffix("_id")] = value
        elif column == "calculated_at" and isinstance(value, str):
            values[column] = parse_datetime(value)
        else:
            values[column] = value
    return values


class EmissionVersionSerializer(serializers.Serializer):
    """One recorded change of an emission. Precondition: ``context["factors"]`` holds the factors its values name
    (``emissions.audit.emission_history``) and the event was loaded ``with_actor()``."""

    id = serializers.IntegerField(read_only=True, help_text="The audit event's id (ascending = oldest first)")
    action = serializers.ChoiceField(choices=AuditEvent.Action.choices, read_only=True)
    at = serializers.DateTimeField(source="occurred_at", read_only=True, help_text="Start of the writing transaction")
    actor = serializers.CharField(
        source="actor_username", read_only=True, allow_null=True, help_text="Username; null for none or a deleted user"
    )
    actor_id = serializers.IntegerField(read_only=True, allow_null=True)
    request_id = serializers.CharField(read_only=True, help_text="The writing request's X-Request-ID; empty for none")
    job_id = serializers.IntegerField(read_only=True, allow_null=True)
    changed = serializers.SerializerMethodField(help_text="Fields an update changed (empty for insert and delete)")
    values = serializers.SerializerMethodField(help_text="The emission after the change (as deleted, for delete)")
    previous = serializers.SerializerMethodField(help_text="For an update, the changed fields' previous values")

    def get_changed(self, event: AuditEvent) -> list[str]:
        return sorted(emission_values(event.changed or {}, {}))

    @extend_schema_field(EmissionValuesSerializer)
    def get_values(self, event: AuditEvent) -> dict[str, Any]:
        return EmissionValuesSerializer(emission_values(event.row, self.context["factors"])).data

    @extend_schema_field(EmissionValuesSerializer(allow_null=True))
    def get_previous(self, event: AuditEvent) -> dict[str, Any] | None:
        if event.changed is None:
            return None
        values = emission_values(event.changed, self.context["factors"])
        # Only the changed fields: DRF would write a missing nullable one as null.
        return {key: value for key, value in EmissionValuesSerializer(values).data.items() if key in values}
