"""From the fields a caller sends to one ``CalculationInput``: the rules that relate the fields, stated once.

Callers check each field's shape (type, range, length) and then call ``calculation_input``; it
applies the rules below and raises ``CalculationError`` naming the fields (the API answers it as
a 400 body, the CSV import as row errors):

- **The factor.** ``factor_id`` or ``activity``; a supplier-specific line may give neither, and then
  needs a supplier (its newest own factor is used). ``factor_choice_errors``.
- **The quantity.** ``amount`` with its ``unit``; or, for the distance method, ``mass``, ``mass_unit``,
  ``distance`` and ``distance_unit``, all four: their product is the amount, in the stored form
  ``mass_times_distance`` (20 t x 60 km -> 1200.000000 t*km), so every stored activity carries the
  quantity that was multiplied by the factor. Both ways at once only when they agree exactly with that
  stored form (so a stored activity posts back unchanged); otherwise one of them would be ignored.
- **Spend.** The amount is in ``currency`` (default ``rules.DEFAULT_CURRENCY``); without a unit it is
  in that currency. Every other method needs the amount's unit.

What needs the factor (unit conversion, rates, price indexes) is ``calculator.engine``'s, and the
reporting period's defaults are ``calculator.engine.period_defaults``.
"""

from __future__ import annotations

from decimal import Decimal

from calculator.rules import AMOUNT_LIMIT, AMOUNT_PLACES, DEFAULT_CURRENCY, Method
from calculator.types import CalculationError, CalculationInput, round_ratio_half_even

FieldErrors = dict[str, list[str]]

# The mass x distance way of stating a distance quantity: a set of four.
DISTANCE_FIELDS = ("mass", "mass_unit", "distance", "distance_unit")
GIVE_FACTOR_OR_ACTIVITY = "Give either factor_id or activity."
SUPPLIER_SPECIFIC_NEEDS_SUPPLIER = "The supplier-specific method needs a supplier (or give factor_id)."
MASS_DISTANCE_OR_AMOUNT = "Give amount + unit, or mass, mass_unit, distance and distance_unit; both only if they agree."
MASS_TIMES_DISTANCE_TOO_LARGE = "mass x distance is too large."
REQUIRED = "This field is required."


def factor_choice_errors(*, method: str, factor_id: int | None, activity: str, supplier_id: int | None) -> FieldErrors:
    """What is missing to choose a factor (empty when nothing is): ``factor_id`` or ``activity``, or a
    supplier-specific line's supplier (without either, the supplier's newest own factor is used)."""
    if factor_id is not None or activity.strip():
        return {}
    if method != Method.SUPPLIER_SPECIFIC:
        return {"activity": [GIVE_FACTOR_OR_ACTIVITY]}
    if supplier_id is None:
        return {"supplier": [SUPPLIER_SPECIFIC_NEEDS_SUPPLIER]}
    return {}


def mass_times_distance(*, mass: Decimal, mass_unit: str, distance: Decimal, distance_unit: str) -> tuple[Decimal, str]:
    """The stored form of a mass x distance quantity: ``(mass x distance, "mass_unit*distance_unit")``.

    The product is rounded once, half-even, to the amount column's places (the calculator itself
    multiplies mass and distance exactly). Raises ``CalculationError`` on ``mass`` when it does not
    fit the column. Precondition: ``mass`` and ``distance`` are finite.
    """
    mass_numerator, mass_denominator = mass.as_integer_ratio()
    distance_numerator, distance_denominator = distance.as_integer_ratio()
    amount = round_ratio_half_even(
        mass_numerator * distance_numerator, mass_denominator * distance_denominator, AMOUNT_PLACES
    )
    if abs(amount) >= AMOUNT_LIMIT:
        raise CalculationError(field="mass", message=MASS_TIMES_DISTANCE_TOO_LARGE)
    return amount, f"{mass_unit}*{distance_unit}"


def _given(value: object) -> bool:
    return value is not None and value != ""


def _distance_set(
    mass: Decimal | None, mass_unit: str, distance: Decimal | None, distance_unit: str
) -> tuple[Decimal, str] | None:
    """The stored form of a complete mass x distance set, None when none of the four is given."""
    if mass is not None and distance is not None and mass_unit and distance_unit:
        return mass_times_distance(mass=mass, mass_unit=mass_unit, distance=distance, distance_unit=distance_unit)
    values = (mass, mass_unit, distance, distance_unit)
    given = [name for name, value in zip(DISTANCE_FIELDS, values, strict=True) if _given(value)]
    if not given:
        return None
    # A partial set is a mistake, not a default.
    message = "Required together with " + ", ".join(given) + "."
    raise CalculationError({name: [message] for name in DISTANCE_FIELDS if name not in given})


def calculation_input(
    *,
    category: int,
    method: str,
    amount: Decimal | None = None,
    unit: str = "",
    factor_id: int | None = None,
    activity: str = "",
    region: str = "",
    year: int | None = None,
    source: str = "",
    dataset_version: str = "",
    currency: str = "",
    spend_year: int | None = None,
    mass: Decimal | None = None,
    mass_unit: str = "",
    distance: Decimal | None = None,
    distance_unit: str = "",
    supplier_id: int | None = None,
    exchange_rate_set: str = "",
    price_index_set: str = "",
) -> CalculationInput:
    """The ``CalculationInput`` the fields describe, by the rules in the module docstring.

    Raises ``CalculationError`` naming the fields, the first rule broken only (the factor, then the
    quantity). Precondition: each field has its shape (decimals finite, strings stripped).
    """
    errors = factor_choice_errors(method=method, factor_id=factor_id, activity=activity, supplier_id=supplier_id)
    if errors:
        raise CalculationError(errors)
    currency = currency or DEFAULT_CURRENCY
    product = _distance_set(mass, mass_unit, distance, distance_unit) if method == Method.DISTANCE else None
    if product is not None:
        stated = {name: value for name, value in (("amount", amount), ("unit", unit)) if _given(value)}
        if stated and (amount, unit) != product:
            message = f"{MASS_DISTANCE_OR_AMOUNT} (mass x distance is {product[0]} {product[1]})"
            raise CalculationError({name: [message] for name in stated})
        if amount is None:
            amount, unit = product
    else:
        missing = {"amount": [REQUIRED]} if amount is None else {}
        if not unit and method != Method.SPEND:
            missing["unit"] = [REQUIRED]
        if missing:
            raise CalculationError(missing)
        if not unit:
            unit = currency  # spend: the amount is money in its currency
    assert amount is not None  # required above, or the product
    return CalculationInput(
        category=category,
        method=method,
        amount=amount,
        unit=unit,
        factor_id=factor_id,
        activity=activity,
        region=region,
        year=year,
        source=source,
        dataset_version=dataset_version,
        currency=currency,
        spend_year=spend_year,
        mass=mass,
        mass_unit=mass_unit,
        distance=distance,
        distance_unit=distance_unit,
        supplier_id=supplier_id,
        exchange_rate_set=exchange_rate_set,
        price_index_set=price_index_set,
    )
