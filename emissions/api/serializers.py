"""Request validation and response shapes for API v1.

Input serializers check shapes only (types, ranges, choices, tenancy of referenced ids); how
the fields of a calculation relate is ``calculator.inputs``' rule, which they call, and the
calculator checks meaning (units, factors, rates). Output serializers read rows loaded with
``with_related()`` so that lists run a constant number of queries.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django_countries import countries
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from calculator import inputs, rules
from calculator.types import CalculationError, CalculationInput
from emissions.models import (
    AMOUNT_DIGITS,
    FACTOR_DIGITS,
    ID_MAX,
    SUMMARY_KEYS,
    ActivityRecord,
    Category,
    Emission,
    EmissionFactor,
    FactorDataset,
    Method,
    Supplier,
    currency_validator,
)
from emissions.services.activities import ActivityInput, FieldErrors

MAX_BATCH_ITEMS = 1000
MAX_ACTIVITY_ITEMS = 10_000
MIN_YEAR, MAX_YEAR = rules.YEAR_MIN, rules.YEAR_MAX
GAS_NAME_RE = re.compile(r"^[A-Za-z0-9_\-\.]{1,32}$")
# The validated data's key for the CalculationInput that CalculationInputSerializer.validate built.
CALCULATION = "calculation_input"
# The fields of CalculationInputSerializer that calculator.inputs.calculation_input takes by the same name:
# the calculator input's, but ``supplier`` for its ``supplier_id``.
INPUT_FIELDS = tuple(field.name for field in dataclasses.fields(CalculationInput) if field.name != "supplier_id")
# FIELD_NAMES: the public API has fields named ``source`` and ``label``. DRF's SerializerMetaclass pops
# declared fields off the class, so they never shadow ``Field.source``/``Field.label`` at runtime, but the
# stubs cannot express that and report an [assignment] clash (typeddjango/djangorestframework-stubs#158,
# #78, both open); those declarations carry a targeted ignore rather than renaming public fields.


def _amount_field(**kwargs: Any) -> serializers.DecimalField:
    # DRF's DecimalField rejects NaN and +/-Infinity; min_value rejects negatives.
    return serializers.DecimalField(
        max_digits=AMOUNT_DIGITS["max_digits"],
        decimal_places=AMOUNT_DIGITS["decimal_places"],
        min_value=Decimal(0),
        **kwargs,
    )


def _year_field(help_text: str) -> serializers.IntegerField:
    """An optional year in MIN_YEAR..MAX_YEAR; null or missing leaves the default ``help_text`` describes."""
    return serializers.IntegerField(
        required=False, allow_null=True, min_value=MIN_YEAR, max_value=MAX_YEAR, help_text=help_text
    )


def _id_field(help_text: str) -> serializers.IntegerField:
    # Bounded to bigint so an oversized id is a 400 on its field, not a database error.
    return serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=ID_MAX, help_text=help_text)


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


class SupplierSerializer(serializers.ModelSerializer):
    """Supplier fields; ``supplier_create`` / ``supplier_update`` check ``external_id`` uniqueness."""

    country = serializers.CharField(
        max_length=2, required=False, allow_blank=True, help_text="ISO 3166-1 alpha-2 code, e.g. US"
    )

    class Meta:
        model = Supplier
        fields = ["id", "external_id", "name", "country", "naics", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
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


class SupplierFactorInputSerializer(serializers.Serializer):
    """A factor a supplier provided: every shape ``supplier_factor_create`` expects (its precondition).

    The service checks what needs the units registry or the database: unit, region, price year, uniqueness.
    """

    activity = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Lookup key; default supplier:<external_id>:<slug of name>. Use it as the activity of a "
        "supplier_specific calculation, or leave the activity out there to use the supplier's newest factor.",
    )
    name = serializers.CharField(max_length=500)
    unit = serializers.CharField(
        max_length=64, help_text="Unit of the activity (kg, kWh, t*km, ...) or, for a spend factor, a currency code"
    )
    co2e_per_unit = serializers.DecimalField(
        max_digits=FACTOR_DIGITS["max_digits"],
        decimal_places=FACTOR_DIGITS["decimal_places"],
        min_value=Decimal(0),
        help_text="kg CO2e per unit, decimal string",
    )
    year = serializers.IntegerField(min_value=MIN_YEAR, max_value=MAX_YEAR)
    region = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=16,
        help_text="ISO 3166-1 alpha-2 or GLOBAL; default: the supplier's country, else GLOBAL",
    )
    gases = serializers.DictField(
        child=serializers.DecimalField(
            max_digits=FACTOR_DIGITS["max_digits"],
            decimal_places=FACTOR_DIGITS["decimal_places"],
            min_value=Decimal(0),
        ),
        required=False,
        help_text='kg CO2e per unit for each gas, decimal strings, e.g. {"CO2": "2.4", "CH4": "0.1"}',
    )
    dataset_version = serializers.CharField(
        required=False, allow_blank=True, max_length=32, help_text='Supplier dataset version; default "current"'
    )

    def validate_gases(self, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for gas in value:
            if not GAS_NAME_RE.match(gas):
                raise serializers.ValidationError(f"'{gas}' is not a gas name such as CO2, CH4 or N2O.")
        return value


class SupplierRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


# -- calculation input --------------------------------------------------------------------------


class CalculationInputSerializer(serializers.Serializer):
    """One activity to calculate.

    ``supplier`` must be one of the caller's suppliers. Precondition: ``context`` holds
    ``organization_id``; bulk callers may add ``supplier_ids`` (the caller's supplier ids among
    those submitted) so that N items cost one query instead of N.
    """

    category = serializers.IntegerField(
        min_value=rules.CATEGORY_MIN,
        max_value=rules.CATEGORY_MAX,
        help_text=f"Scope 3 category, {rules.CATEGORY_MIN}-{rules.CATEGORY_MAX}",
    )
    method = serializers.ChoiceField(choices=Method.choices)
    factor_id = _id_field("Pin one factor; otherwise give activity")
    activity = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Factor activity key; required unless factor_id is given or the method is supplier_specific "
        "(then the supplier's newest own factor is used)",
    )
    region = serializers.CharField(required=False, allow_blank=True, max_length=16)
    year = _year_field("Factor year to look for; default: the newest factor")
    source = serializers.ChoiceField(  # type: ignore[assignment]  # FIELD_NAMES
        choices=FactorDataset.Source.choices, required=False, allow_blank=True
    )
    dataset_version = serializers.CharField(required=False, allow_blank=True, max_length=32)
    amount = _amount_field(required=False, help_text="Required, except for distance given as mass x distance")
    unit = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="Required, except for spend (defaults to the currency) and mass x distance",
    )
    currency = serializers.RegexField(
        rules.CURRENCY_PATTERN,
        required=False,
        max_length=3,
        error_messages={"invalid": currency_validator.message},
        help_text=f"Spend only; default {rules.DEFAULT_CURRENCY}",
    )
    spend_year = _year_field("Price year of the amount (spend); default: the factor's price year")
    mass = _amount_field(required=False, allow_null=True)
    mass_unit = serializers.CharField(required=False, allow_blank=True, max_length=32)
    distance = _amount_field(required=False, allow_null=True)
    distance_unit = serializers.CharField(required=False, allow_blank=True, max_length=32)
    supplier = _id_field("Supplier id")

    def validate_supplier(self, value: int | None) -> int | None:
        if value is None:
            return None
        known = self.context.get("supplier_ids")
        if known is not None:
            found = value in known
        else:
            found = Supplier.objects.for_org(self.context["organization_id"]).filter(pk=value).exists()
        if not found:
            # Same message whether the id does not exist or belongs to another organization.
            raise serializers.ValidationError(f"Unknown supplier id {value}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # How the fields relate (factor or activity, amount or mass x distance, spend's unit) is the
        # calculator's rule (calculator.inputs); its errors name the fields, as a serializer's do.
        # The input is built here, once per item, and kept in the validated data (``calculation_input``).
        try:
            attrs[CALCULATION] = inputs.calculation_input(
                **{name: attrs[name] for name in INPUT_FIELDS if name in attrs}, supplier_id=attrs.get("supplier")
            )
        except CalculationError as exc:
            raise serializers.ValidationError(exc.errors) from None
        return attrs

    def to_calculation_input(self) -> CalculationInput:
        """The validated data as the calculator's input. Precondition: ``is_valid()`` returned True."""
        return calculation_input(self.validated_data)


def calculation_input(data: Mapping[str, Any]) -> CalculationInput:
    """The ``CalculationInput`` that ``CalculationInputSerializer`` validation built (by
    ``calculator.inputs.calculation_input``). Precondition: ``data`` is that serializer's validated data."""
    calculation: CalculationInput = data[CALCULATION]
    return calculation


def _as_id(value: Any) -> int | None:
    """``value`` as a primary key the way IntegerField would read it, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= ID_MAX else None


def referenced_supplier_ids(items: list[Any]) -> set[int]:
    """The well-formed supplier ids raw ``items`` refer to (whoever owns them); no query."""
    referenced = (_as_id(item.get("supplier")) for item in items if isinstance(item, dict))
    return {pk for pk in referenced if pk is not None}


def supplier_ids_in(items: list[Any], organization_id: int) -> set[int]:
    """The caller's supplier ids among those referenced by raw ``items``, in one query."""
    wanted = referenced_supplier_ids(items)
    if not wanted:
        return set()
    return set(Supplier.objects.for_org(organization_id).filter(pk__in=wanted).values_list("pk", flat=True))


class CalculationBatchSerializer(serializers.Serializer):
    """The batch envelope. Items stay raw here: each is validated on its own so one bad item fails alone."""

    # allow_null: a null item is that item's error (validate_items), not the whole batch's.
    items = serializers.ListField(
        child=serializers.JSONField(allow_null=True), min_length=1, max_length=MAX_BATCH_ITEMS
    )


class CalculationBatchRequestSerializer(serializers.Serializer):
    """Schema of the batch request body (documentation only)."""

    items = CalculationInputSerializer(many=True, help_text=f"1-{MAX_BATCH_ITEMS} calculation inputs")


class ActivityInputSerializer(CalculationInputSerializer):
    """A calculation input plus the reporting period it covers."""

    year = _year_field("Factor year to look for; default: period_start's year (stored, and noted in the fallbacks)")
    spend_year = _year_field(
        "Price year of the amount (spend); default: period_start's year (stored, and noted in the fallbacks), "
        "so a factor of another price year needs both years' price index"
    )
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    external_ref = serializers.CharField(required=False, allow_blank=True, max_length=128)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs["period_end"] < attrs["period_start"]:
            raise serializers.ValidationError({"period_end": ["period_end must be on or after period_start."]})
        return attrs


def activity_input(data: dict[str, Any]) -> ActivityInput:
    """Validated ``ActivityInputSerializer`` data as the service's input.

    ``year``/``spend_year`` stay None when not sent; the service fills them from the period
    (``calculator.engine.period_defaults``), so every caller gets the same rule.
    """
    return ActivityInput(
        calculation=calculation_input(data),
        period_start=data["period_start"],
        period_end=data["period_end"],
        external_ref=data.get("external_ref", ""),
    )


def plain_errors(detail: dict[str, Any]) -> dict[str, Any]:
    """Serializer errors as plain JSON data (``ErrorDetail`` -> ``str``)."""
    return {key: _plain_error(value) for key, value in detail.items()}


def _plain_error(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _plain_error(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_plain_error(value) for value in detail]
    return str(detail)


def validate_items(
    serializer: serializers.Serializer, items: list[Any]
) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """``(validated data, None)`` or ``(None, {field: [messages]})`` for each raw item, in order.

    One serializer instance validates every item: DRF builds (deep-copies) a serializer's
    fields once per instance, which dominates the cost when done 10,000 times.
    """
    outcomes: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
    for item in items:
        if not isinstance(item, dict):
            # null, a number or a list in place of an item fails that item, not the whole request.
            kind = "null" if item is None else type(item).__name__
            outcomes.append((None, {"non_field_errors": [f"Each item must be an object; got {kind}."]}))
            continue
        try:
            outcomes.append((serializer.run_validation(item), None))
        except serializers.ValidationError as exc:
            outcomes.append((None, plain_errors(serializers.as_serializer_error(exc))))
    return outcomes


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


def category_label(value: int) -> str:
    return str(Category(value).label)


def method_label(value: str) -> str:
    return str(Method(value).label)


def calculation_inputs(raw_items: list[Any], *, organization_id: int) -> list[CalculationInput | FieldErrors]:
    """Each raw batch item validated: its ``CalculationInput`` or its field errors, in order (one supplier query)."""
    context = {"organization_id": organization_id, "supplier_ids": supplier_ids_in(raw_items, organization_id)}
    outcomes = validate_items(CalculationInputSerializer(context=context), raw_items)
    return [calculation_input(data) if errors is None else errors for data, errors in outcomes]  # type: ignore[arg-type]  # data is set without errors


def activity_inputs(body: Any, *, organization_id: int) -> list[ActivityInput | FieldErrors]:
    """The activities of a create request's body (one object or a list), each validated: its ``ActivityInput``
    or its field errors, in order (one supplier query).

    Raises ``ValidationError`` when the body holds no activity or more than ``MAX_ACTIVITY_ITEMS``.
    """
    raw_items = body if isinstance(body, list) else [body]
    if not raw_items:
        raise serializers.ValidationError({"non_field_errors": ["Send one activity object or a non-empty list."]})
    if len(raw_items) > MAX_ACTIVITY_ITEMS:
        raise serializers.ValidationError(
            {"non_field_errors": [f"At most {MAX_ACTIVITY_ITEMS} activities per request."]}
        )
    context = {"organization_id": organization_id, "supplier_ids": supplier_ids_in(raw_items, organization_id)}
    outcomes = validate_items(ActivityInputSerializer(context=context), raw_items)
    return [activity_input(data) if errors is None else errors for data, errors in outcomes]  # type: ignore[arg-type]  # data is set without errors
