"""Supplier-provided emission factors: create and delete, each in one transaction.

A supplier's own factor (e.g. from its product carbon footprint or CDP response) lives in a
dataset of the supplier's organization: ``FactorDataset(source="supplier", organization=org,
version=...)``, created on first use, so only that organization ever sees it
(``EmissionFactor.objects.visible_to``). The calculator's ``supplier_specific`` method prefers
such a factor over average data.

Spend factors use a currency code as their unit (``EUR``): the factor then carries that
currency, and its price year is the dataset's ``basis_year``. A spend factor is therefore only
accepted into a dataset whose basis year equals the factor's ``year``; otherwise the price year
the calculator would use would silently differ from the one the supplier stated.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils.text import slugify
from django_countries import countries

from calculator import units
from emissions.models import FACTOR_DIGITS, EmissionFactor, FactorDataset, Supplier

DEFAULT_VERSION = "current"
GLOBAL = "GLOBAL"
ACTIVITY_MAX_LENGTH = EmissionFactor._meta.get_field("activity").max_length or 128
UNIQUE_ACTIVITY_CONSTRAINT = "factor_dataset_activity_uniq"
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
GAS_RE = re.compile(r"^[A-Za-z0-9_\-\.]{1,32}$")
FACTOR_LIMIT = Decimal(10) ** (FACTOR_DIGITS["max_digits"] - FACTOR_DIGITS["decimal_places"])

# Fields a caller may set; dataset, supplier and currency are derived, never taken from input.
WRITABLE_FIELDS = frozenset({"activity", "name", "unit", "co2e_per_unit", "year", "region", "gases", "dataset_version"})
REQUIRED_FIELDS = ("name", "unit", "co2e_per_unit", "year")
MIN_YEAR, MAX_YEAR = 1900, 2100


class FactorInUseError(Exception):
    """The factor is referenced by stored activities or emissions and cannot be deleted."""

    def __init__(self, factor: EmissionFactor, references: int) -> None:
        self.factor = factor
        self.references = references
        super().__init__(
            f"Factor {factor.pk} ('{factor.activity}') is used by {references} stored activity or emission "
            "record(s); results keep the factor they were calculated with, so it cannot be deleted."
        )


def default_activity(supplier: Supplier, name: str) -> str:
    """``supplier:<external_id>:<slug of name>``, shortened to fit the column."""
    prefix = f"supplier:{supplier.external_id}:"
    slug = slugify(name) or "factor"
    return (prefix + slug)[:ACTIVITY_MAX_LENGTH]


def _unit_and_currency(unit: str) -> tuple[str, str]:
    """``(unit, currency)``: a currency code is a spend factor's unit; anything else must be a unit pint reads.

    A three-letter upper-case code that pint does not read as a physical unit is taken as an ISO 4217
    currency (``EUR``, ``GBP``); ``USD`` is a unit of the registry's money dimension.
    """
    text = unit.strip()
    try:
        parsed_dims = units.dimensions(text)
    except units.UnitError as exc:
        if CURRENCY_RE.match(text):
            return text, text
        raise ValidationError({"unit": [str(exc)]}) from None
    if parsed_dims == units.dimensions("USD"):
        return "USD", "USD"
    return text, ""


def _region(value: str | None, supplier: Supplier) -> str:
    if not value:
        # CountryField returns a Country object whose str() is the code ("" when unset).
        return str(supplier.country) or GLOBAL
    code = value.strip().upper()
    if code != GLOBAL and not (len(code) == 2 and countries.alpha2(code)):
        raise ValidationError({"region": [f"'{value}' is not an ISO 3166-1 alpha-2 country code or GLOBAL."]})
    return code


def _decimal(value: Any, field: str) -> Decimal:
    """A finite, non-negative Decimal that fits the factor columns; floats are refused (already inexact)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValidationError({field: [f"Give a decimal string, not {type(value).__name__}."]})
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValidationError({field: [f"'{value}' is not a number."]}) from None
    if not number.is_finite() or number < 0:
        raise ValidationError({field: ["Must be a finite, non-negative number."]})
    if number >= FACTOR_LIMIT:
        raise ValidationError({field: [f"Must be less than {FACTOR_LIMIT}."]})
    return number


def _gases(value: Any) -> dict[str, str]:
    """``{gas: decimal string}``, each a finite, non-negative kg CO2e per unit."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ValidationError({"gases": ["Give an object mapping gas names to decimal strings."]})
    gases: dict[str, str] = {}
    for gas, amount in value.items():
        if not isinstance(gas, str) or not GAS_RE.match(gas):
            raise ValidationError({"gases": [f"'{gas}' is not a gas name such as CO2, CH4 or N2O."]})
        try:
            # Plain notation without padding zeros ("0.05", not "0.050000000000000" or "5E-2").
            gases[gas] = format(_decimal(amount, "gases").normalize(), "f")
        except ValidationError as exc:
            raise ValidationError({"gases": [f"{gas}: {message}" for message in exc.messages]}) from None
    return gases


def _dataset(supplier: Supplier, version: str, year: int) -> FactorDataset:
    dataset, _ = FactorDataset.objects.get_or_create(
        organization_id=supplier.organization_id,
        source=FactorDataset.Source.SUPPLIER,
        version=version,
        defaults={
            "name": f"Supplier-provided factors ({version})",
            "publisher": "Suppliers of the organization",
            "basis_year": year,
        },
    )
    return dataset


@transaction.atomic
def supplier_factor_create(*, supplier: Supplier, data: dict[str, Any]) -> EmissionFactor:
    """Store a factor ``supplier`` provided; ``ValidationError`` names the offending field.

    ``data``: ``name``, ``unit``, ``co2e_per_unit``, ``year`` (required); ``activity`` (default
    ``default_activity``), ``region`` (default the supplier's country, else GLOBAL), ``gases``,
    ``dataset_version`` (default ``"current"``). The dataset is created on demand with
    ``basis_year = year``. An activity already present in that dataset is an error on ``activity``.
    """
    unknown = set(data) - WRITABLE_FIELDS
    if unknown:
        raise ValidationError({name: ["This field cannot be written."] for name in sorted(unknown)})
    missing = [name for name in REQUIRED_FIELDS if data.get(name) in (None, "")]
    if missing:
        raise ValidationError({name: ["This field is required."] for name in missing})

    name = str(data["name"]).strip()
    unit, currency = _unit_and_currency(str(data["unit"]))
    co2e_per_unit = _decimal(data["co2e_per_unit"], "co2e_per_unit")
    year = data["year"]
    if isinstance(year, bool) or not isinstance(year, int) or not MIN_YEAR <= year <= MAX_YEAR:
        raise ValidationError({"year": [f"Must be a year from {MIN_YEAR} to {MAX_YEAR}."]})
    region = _region(data.get("region"), supplier)
    gases = _gases(data.get("gases"))
    version = (data.get("dataset_version") or DEFAULT_VERSION).strip()
    activity = (data.get("activity") or "").strip() or default_activity(supplier, name)

    dataset = _dataset(supplier, version, year)
    if currency and dataset.basis_year != year:
        raise ValidationError(
            {
                "year": [
                    f"Dataset version '{version}' has price year {dataset.basis_year}; a spend factor's year is its "
                    f"price year, so give year {dataset.basis_year} or another dataset_version."
                ]
            }
        )
    factor = EmissionFactor(
        dataset=dataset,
        supplier=supplier,
        activity=activity,
        name=name,
        category="Supplier-provided",
        region=region,
        year=year,
        unit=unit,
        unit_label=unit,
        currency=currency,
        co2e_per_unit=co2e_per_unit,
        gwp_set=dataset.gwp_set,
        gases=gases,
    )
    # Field validators and clean() (the dataset must be the supplier's organization's); uniqueness is
    # left to the database constraint below, which is race-free.
    factor.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():  # a savepoint keeps the caller's transaction usable
            factor.save()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        if constraint == UNIQUE_ACTIVITY_CONSTRAINT:
            raise ValidationError(
                {
                    "activity": [
                        f"Dataset version '{version}' already has a factor for activity '{activity}'; "
                        "give another activity or dataset_version."
                    ]
                }
            ) from exc
        raise
    return factor


@transaction.atomic
def supplier_factor_delete(*, factor: EmissionFactor) -> None:
    """Delete a supplier-provided factor; ``FactorInUseError`` when stored results or activities use it.

    Precondition: ``factor.supplier_id`` is set (public factors are never deleted through here).
    """
    if factor.supplier_id is None:
        raise ValueError("Only supplier-provided factors can be deleted.")
    try:
        with transaction.atomic():
            factor.delete()
    except ProtectedError as exc:
        raise FactorInUseError(factor, len(exc.protected_objects)) from exc
