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

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError
from django.utils.text import slugify
from django_countries import countries

from calculator import rules, units
from emissions.cache import org_factors_changed
from emissions.importers.base import decimal_str
from emissions.models import EmissionFactor, FactorDataset, Supplier
from emissions.services.suppliers import InUseError, save_or_field_error

DEFAULT_VERSION = "current"
GLOBAL = rules.GLOBAL
ACTIVITY_MAX_LENGTH = EmissionFactor._meta.get_field("activity").max_length or 128
UNIQUE_ACTIVITY_CONSTRAINT = "factor_dataset_activity_uniq"


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
        if rules.is_currency_code(text):
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

    Precondition: ``data`` has the shapes ``SupplierFactorInputSerializer`` validates (its
    ``validated_data``): ``name``, ``unit``, ``co2e_per_unit`` (a non-negative Decimal that fits the
    column), ``year`` (an int in range) are present; ``activity`` (default ``default_activity``),
    ``region`` (default the supplier's country, else GLOBAL), ``gases`` (``{gas name: Decimal}``),
    ``dataset_version`` (default ``"current"``) may be. Other keys are ignored. This function checks
    what needs the database or the units registry: the unit, the region, the spend factor's price
    year and the activity's uniqueness in its dataset; ``full_clean`` applies the model's rules.
    The dataset is created on demand with ``basis_year = year``.
    """
    name = data["name"].strip()
    unit, currency = _unit_and_currency(data["unit"])
    year: int = data["year"]
    region = _region(data.get("region"), supplier)
    # Plain notation without padding zeros ("0.05", not "0.050000000000000" or "5E-2").
    gases = {gas: decimal_str(amount) for gas, amount in (data.get("gases") or {}).items()}
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
        co2e_per_unit=data["co2e_per_unit"],
        gwp_set=dataset.gwp_set,
        gases=gases,
    )
    # Field validators and clean() (the dataset must be the supplier's organization's); uniqueness is
    # left to the database constraint below, which is race-free.
    factor.full_clean(validate_unique=False, validate_constraints=False)
    taken = (
        "activity",
        f"Dataset version '{version}' already has a factor for activity '{activity}'; "
        "give another activity or dataset_version.",
    )
    save_or_field_error(factor, {UNIQUE_ACTIVITY_CONSTRAINT: taken})
    org_factors_changed(supplier.organization_id)
    return factor


@transaction.atomic
def supplier_factor_delete(*, factor: EmissionFactor) -> None:
    """Delete a supplier-provided factor; ``InUseError`` when stored activities or emissions use it.

    Precondition: ``factor.supplier_id`` is set (public factors are never deleted through here).
    """
    if factor.supplier_id is None:
        raise ValueError("Only supplier-provided factors can be deleted.")
    try:
        factor.delete()  # as supplier_delete: no savepoint of its own
    except ProtectedError as exc:
        raise InUseError.from_protected(
            exc,
            f"Factor {factor.pk} ('{factor.activity}')",
            "results keep the factor they were calculated with, so it cannot be deleted.",
        ) from exc
    organization_id = factor.dataset.organization_id
    if organization_id is not None:  # always, for a supplier's factor (its dataset is the organization's)
        org_factors_changed(organization_id)
