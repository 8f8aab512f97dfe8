"""Validation of calculation and activity inputs, shared by every way in: the API and ``import_activities``.

DRF serializers check each field's shape (types, ranges, choices, tenancy of referenced ids); how the
fields of a calculation relate is ``calculator.inputs``' rule, which they call; the calculator checks
meaning (units, factors, rates). ``validate_items`` validates many raw items with one serializer,
each failing alone, and ``calculation_inputs`` / ``activity_inputs`` turn a request's items into the
services' inputs or field errors. The API's envelopes and response shapes stay in
``emissions.api.serializers``.

Rules every write shares, here so that the API and the import apply the same: a field the serializer does not
have is an error naming it (``KnownFieldsSerializer``); numbers are plain ASCII decimals (``PlainDecimalField``,
``PlainIntegerField``); text that reaches a CSV export must not start a spreadsheet formula (``refuse_formula``).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from calculator import inputs, rules
from calculator.types import CalculationError, CalculationInput
from emissions.models import (
    AMOUNT_DIGITS,
    FORMULA_MESSAGE,
    FORMULA_PREFIXES,
    ID_MAX,
    FactorDataset,
    Method,
    Supplier,
    currency_validator,
    set_name_validator,
)
from emissions.services.activities import ActivityInput, FieldErrors
from perf.admission import cooperate
from perf.serializer_fields import CopiedFieldsMixin

MAX_ACTIVITY_ITEMS = 10_000
MIN_YEAR, MAX_YEAR = rules.YEAR_MIN, rules.YEAR_MAX
# The validated data's key for the CalculationInput that CalculationInputSerializer.validate built.
CALCULATION = "calculation_input"
# The fields of CalculationInputSerializer that calculator.inputs.calculation_input takes by the same name:
# the calculator input's, but ``supplier`` for its ``supplier_id``.
INPUT_FIELDS = tuple(field.name for field in dataclasses.fields(CalculationInput) if field.name != "supplier_id")


# -- text a spreadsheet would run ------------------------------------------------------------------------------

# FORMULA_PREFIXES and FORMULA_MESSAGE: emissions.models, whose validators refuse them too (the comment there says why).


def neutralized(text: str) -> str:
    """``text`` with a leading single quote when a spreadsheet would read it as a formula (OWASP's CSV advice): what
    the exports write of text users typed, whatever the database holds."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def refuse_formula(value: str) -> None:
    """A field validator: ``value`` must not start with one of ``FORMULA_PREFIXES``."""
    if value.startswith(FORMULA_PREFIXES):
        raise serializers.ValidationError(FORMULA_MESSAGE)


# -- fields that take only what a user would expect -------------------------------------------------------------

# Python's int() and Decimal() accept more than a plain number: digit separators ("1_000" is 1000) and any script's
# digits (Arabic-Indic or full-width ones). A user who types "1_000" did not mean a thousand, nor wants a stray
# non-ASCII digit taken as a number: only ASCII digits, an optional sign, decimal point and exponent are numbers
# here. JSON numbers arrive as int or Decimal (the API's parser), whose text is always plain.
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# DRF's IntegerField also takes "3.0" (its re_decimal), which stays accepted.
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]+(?:\.0*)?")


class PlainDecimalField(serializers.DecimalField):
    """DRF's ``DecimalField`` (which already refuses NaN and Infinity) that refuses text other than a plain decimal."""

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, str) and len(data) <= self.MAX_STRING_LENGTH and not _PLAIN_DECIMAL.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


class PlainIntegerField(serializers.IntegerField):
    """DRF's ``IntegerField`` that refuses text other than plain ASCII digits (and DRF's ".0" suffix)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and len(data) <= self.MAX_STRING_LENGTH and not _PLAIN_INTEGER.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


# Sent by the browsable API's HTML forms along with the fields (Django's CSRF form field), never a field itself.
_FORM_CSRF_FIELD = "csrfmiddlewaretoken"
UNKNOWN_FIELD = "Unknown field."


class KnownFieldsSerializer(CopiedFieldsMixin, serializers.Serializer):
    """A serializer that refuses a body naming a field it does not have, with ``{name: ["Unknown field."]}`` per
    field, together with the other fields' errors; DRF's default is to drop it silently, so a misspelt optional
    field ("amout") would be taken as not given.

    Its declared fields are copied per instance by ``CopiedFieldsMixin`` (most of validating one calculation input
    was DRF's deep copy of its 19 fields): a subclass must not change a field's validators or error messages in
    place.

    Read-only fields count as known: a client may send back what it read (``id``, ``created_at``), which is ignored.
    Mix it in before ``ModelSerializer``.
    """

    def to_internal_value(self, data: Any) -> Any:
        unknown: dict[str, list[str]] = {}
        if isinstance(data, Mapping):
            fields = self.fields
            unknown = {str(name): [UNKNOWN_FIELD] for name in data if name not in fields and name != _FORM_CSRF_FIELD}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **unknown}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


def amount_field(**kwargs: Any) -> serializers.DecimalField:
    # DRF's DecimalField rejects NaN and +/-Infinity; min_value rejects negatives.
    return PlainDecimalField(
        max_digits=AMOUNT_DIGITS["max_digits"],
        decimal_places=AMOUNT_DIGITS["decimal_places"],
        min_value=Decimal(0),
        **kwargs,
    )


def year_field(help_text: str) -> serializers.IntegerField:
    """An optional year in MIN_YEAR..MAX_YEAR; null or missing leaves the default ``help_text`` describes."""
    return PlainIntegerField(
        required=False, allow_null=True, min_value=MIN_YEAR, max_value=MAX_YEAR, help_text=help_text
    )


def set_name_field(help_text: str) -> serializers.RegexField:
    """An optional reference set's name (``rules.is_set_name``); blank or missing: the default set."""
    return serializers.RegexField(
        rules.SET_NAME_PATTERN,
        required=False,
        allow_blank=True,
        max_length=rules.SET_NAME_MAX_LENGTH,
        error_messages={"invalid": set_name_validator.message},
        help_text=help_text,
    )


def id_field(help_text: str) -> serializers.IntegerField:
    # Bounded to bigint so an oversized id is a 400 on its field, not a database error.
    return PlainIntegerField(required=False, allow_null=True, min_value=1, max_value=ID_MAX, help_text=help_text)


# -- calculation and activity inputs --------------------------------------------------------------------------


class CalculationInputSerializer(KnownFieldsSerializer):
    """One activity to calculate.

    ``supplier`` must be one of the caller's suppliers. Precondition: ``context`` holds
    ``organization_id``; bulk callers may add ``supplier_ids`` (the caller's supplier ids among
    those submitted) so that N items cost one query instead of N.
    """

    category = PlainIntegerField(
        min_value=rules.CATEGORY_MIN,
        max_value=rules.CATEGORY_MAX,
        help_text=f"Scope 3 category, {rules.CATEGORY_MIN}-{rules.CATEGORY_MAX}",
    )
    method = serializers.ChoiceField(choices=Method.choices)
    factor_id = id_field("Pin one factor; otherwise give activity")
    activity = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=128,
        help_text="Factor activity key; required unless factor_id is given or the method is supplier_specific "
        "(then the supplier's newest own factor is used)",
    )
    region = serializers.CharField(required=False, allow_blank=True, max_length=16)
    year = year_field("Factor year to look for; default: the newest factor")
    source = serializers.ChoiceField(  # type: ignore[assignment]  # FIELD_NAMES
        choices=FactorDataset.Source.choices, required=False, allow_blank=True
    )
    dataset_version = serializers.CharField(required=False, allow_blank=True, max_length=32)
    amount = amount_field(required=False, help_text="Required, except for distance given as mass x distance")
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
    spend_year = year_field("Price year of the amount (spend); default: the factor's price year")
    exchange_rate_set = set_name_field(
        f"Spend only: the exchange-rate set to convert with; default {rules.DEFAULT_EXCHANGE_RATE_SET} "
        "(ECB annual averages)"
    )
    price_index_set = set_name_field(
        f"Spend only: the price-index set to move the amount between years with; default "
        f"{rules.DEFAULT_PRICE_INDEX_SET} (US CPI-U)"
    )
    mass = amount_field(required=False, allow_null=True)
    mass_unit = serializers.CharField(required=False, allow_blank=True, max_length=32)
    distance = amount_field(required=False, allow_null=True)
    distance_unit = serializers.CharField(required=False, allow_blank=True, max_length=32)
    supplier = id_field("Supplier id")

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


def as_id(value: Any) -> int | None:
    """``value`` as a primary key the way IntegerField would read it, or None."""
    if isinstance(value, bool):
        return None
    # isdigit() also holds for digits int() refuses (superscripts such as "²"): ASCII digits only.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= ID_MAX else None


def referenced_supplier_ids(items: list[Any]) -> set[int]:
    """The well-formed supplier ids raw ``items`` refer to (whoever owns them); no query."""
    referenced = (as_id(item.get("supplier")) for item in items if isinstance(item, dict))
    return {pk for pk in referenced if pk is not None}


def supplier_ids_in(items: list[Any], organization_id: int) -> set[int]:
    """The caller's supplier ids among those referenced by raw ``items``, in one query."""
    wanted = referenced_supplier_ids(items)
    if not wanted:
        return set()
    return set(Supplier.objects.for_org(organization_id).filter(pk__in=wanted).values_list("pk", flat=True))


class ActivityInputSerializer(CalculationInputSerializer):
    """A calculation input plus the reporting period it covers."""

    year = year_field("Factor year to look for; default: period_start's year (stored, and noted in the fallbacks)")
    spend_year = year_field(
        "Price year of the amount (spend); default: period_start's year (stored, and noted in the fallbacks), "
        "so a factor of another price year needs both years' price index"
    )
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    external_ref = serializers.CharField(required=False, allow_blank=True, max_length=128, validators=[refuse_formula])

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
        # Validating 10,000 items takes seconds of CPU: let the worker's other requests run meanwhile.
        cooperate()
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


# -- report periods ---------------------------------------------------------------------------------

# YYYY-MM of a year the calculator accepts (rules.YEAR_MIN..YEAR_MAX: 1900-2100), so the schema says it all.
MONTH_PATTERN = r"^(19[0-9]{2}|20[0-9]{2}|2100)-(0[1-9]|1[0-2])$"
YEAR_SCHEMA = {"type": "integer", "minimum": rules.YEAR_MIN, "maximum": rules.YEAR_MAX}


def _month(text: str) -> dt.date:
    return dt.date(int(text[:4]), int(text[5:7]), 1)


class InventoryQuerySerializer(KnownFieldsSerializer):
    """The reporting period: ``year`` (a calendar year), or ``month_from`` and ``month_to`` (whole months)."""

    year = PlainIntegerField(required=False, min_value=rules.YEAR_MIN, max_value=rules.YEAR_MAX)
    month_from = serializers.RegexField(MONTH_PATTERN, required=False, help_text="YYYY-MM, the first month")
    month_to = serializers.RegexField(MONTH_PATTERN, required=False, help_text="YYYY-MM, the last month")
    format = serializers.CharField(required=False)  # DRF's format suffix parameter

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        year, first, last = attrs.get("year"), attrs.get("month_from"), attrs.get("month_to")
        if year is not None:
            if first is not None or last is not None:
                raise serializers.ValidationError({"year": ["Give year, or month_from and month_to; not both."]})
            return {"period_from": dt.date(year, 1, 1), "period_to": dt.date(year, 12, 31)}
        if first is None and last is None:
            raise serializers.ValidationError({"year": ["Give year, or month_from and month_to."]})
        if first is None:
            raise serializers.ValidationError({"month_from": ["Required with month_to."]})
        if last is None:
            raise serializers.ValidationError({"month_to": ["Required with month_from."]})
        start, end = _month(first), _month(last)
        if not (start.year >= rules.YEAR_MIN and end.year <= rules.YEAR_MAX):
            raise serializers.ValidationError({"month_from": [f"Years {rules.YEAR_MIN} to {rules.YEAR_MAX}."]})
        if start > end:
            raise serializers.ValidationError({"month_to": ["Must be month_from or later."]})
        return {"period_from": start, "period_to": end.replace(day=calendar.monthrange(end.year, end.month)[1])}
