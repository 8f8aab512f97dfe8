"""The calculation: one ``CalculationInput`` -> one ``CalculationResult``. No HTTP here.

``co2e_kg = converted_amount x factor.co2e_per_unit``, where ``converted_amount`` is the input
expressed in the factor's unit:

- ``spend``: money in ``currency`` at ``spend_year`` prices -> the factor's currency via
  ``ExchangeRate`` (for ``spend_year``) -> the factor's price year (its dataset's
  ``basis_year``) via the factor currency's ``PriceIndex``:
  ``amount x rate x index[price year] / index[spend year]``. A missing row is an error,
  never an assumed 1:1.
- ``activity``: ``amount`` in ``unit`` converted to the factor unit through ``calculator.units``.
- ``distance``: ``amount`` in a mass/passenger/vehicle x length unit, or ``mass x distance``
  (then ``amount``/``unit`` are ignored), converted to the factor unit.
- ``supplier_specific``: the supplier's own factor (or the average-data fallback), computed
  as spend when that factor is a spend factor, as distance when mass/distance are given,
  else as activity.

Arithmetic is exact Decimal in a local 40-digit context; ``co2e_kg`` and each gas are
quantized to 6 decimal places with ROUND_HALF_EVEN, as the database stores them.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, Overflow, localcontext

from calculator import units
from calculator.quality import assess
from calculator.resolve import FactorResolver
from calculator.types import CalculationError, CalculationInput, CalculationResult, Note
from emissions.models import CO2E_DIGITS, EmissionFactor, Method, Organization
from perf.metrics import count_calculation

PRECISION = 40
RESULT_QUANTUM = Decimal(1).scaleb(-CO2E_DIGITS["decimal_places"])
# Largest value a CO2E_DIGITS column holds (24 digits, 6 after the point).
RESULT_LIMIT = Decimal(10) ** (CO2E_DIGITS["max_digits"] - CO2E_DIGITS["decimal_places"])
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
# Extra dimensions a distance factor may carry on top of [length]: tonne.km, passenger.km, vehicle.km.
DISTANCE_CARRIERS = ("[mass]", "[passenger]", "[vehicle]")
# Method.values builds a new list on every access; _validate runs once per calculated item.
METHODS = frozenset(Method.values)


def calculate(
    inp: CalculationInput, *, organization: Organization, resolver: FactorResolver | None = None
) -> CalculationResult:
    """Turn one activity into kg CO2e; raises ``CalculationError`` naming the bad field.

    ``resolver`` must belong to ``organization``; pass one resolver to a whole batch so its
    lookups are shared.
    """
    if resolver is None:
        resolver = FactorResolver(organization)
    elif resolver.organization.pk != organization.pk:
        raise ValueError("The resolver belongs to another organization.")
    with localcontext() as ctx:
        ctx.prec = PRECISION
        ctx.rounding = ROUND_HALF_EVEN
        # An absurd amount (1E+999999 GWh) overflows the exponent range: let it become Infinity and
        # be reported as too large on the field it came from, rather than escape as decimal.Overflow.
        ctx.traps[Overflow] = False
        result = _calculate(inp, resolver)
    # Counted on success only (vcci_calculations_total): a CalculationError above is a 400, not a calculation.
    count_calculation(result.category, result.method)
    return result


def _calculate(inp: CalculationInput, resolver: FactorResolver) -> CalculationResult:
    amount = _validate(inp)
    if inp.supplier_id is None:
        if inp.method == Method.SUPPLIER_SPECIFIC:
            raise CalculationError(field="supplier", message="The supplier-specific method needs a supplier.")
    elif inp.method != Method.SUPPLIER_SPECIFIC or inp.factor_id is not None:
        # Supplier-specific selection checks the supplier itself, together with loading its factors.
        resolver.check_supplier(inp.supplier_id)
    factor, fallbacks = resolver.resolve(inp)
    if factor.supplier_id is not None and factor.supplier_id != inp.supplier_id:
        # Only reachable through a pinned factor_id: a supplier's factor describes that supplier's products only.
        raise CalculationError(
            field="factor_id", message=f"Factor {factor.pk} belongs to supplier {factor.supplier_id}, not this one."
        )
    basis = _basis(inp, factor)

    if basis == Method.SPEND:
        converted, spend_notes = _spend_amount(inp, amount, factor, resolver)
        fallbacks.extend(spend_notes)
    elif basis == Method.DISTANCE:
        converted = _distance_amount(inp, amount, factor)
    else:
        converted = _activity_amount(inp.unit, amount, factor)
    if not converted.is_finite():
        field = "mass" if basis == Method.DISTANCE and inp.mass is not None else "amount"
        raise CalculationError(field=field, message="The result is too large to store; check amount and unit.")

    co2e = _quantize(converted * factor.co2e_per_unit)
    gases, gas_warnings = _gases(factor, converted)

    supplier_factor = factor.supplier_id is not None and factor.supplier_id == inp.supplier_id
    quality_basis = Method.SUPPLIER_SPECIFIC if supplier_factor else basis
    assessment = assess(inp, factor, basis=quality_basis, fallbacks=fallbacks)
    return CalculationResult(
        co2e_kg=co2e,
        factor=factor,
        method=inp.method,
        category=inp.category,
        input=inp,
        data_quality=assessment.quality,
        gases=gases,
        fallbacks=fallbacks,
        warnings=[*assessment.warnings, *gas_warnings],
        converted_amount=_plain(converted),
        basis=basis,
    )


# -- validation ----------------------------------------------------------------------------


def _finite_non_negative(value: object, name: str) -> Decimal:
    message = "must be a finite, non-negative number"
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        # floats are refused: a binary float has already lost the decimal the user typed.
        raise CalculationError(field=name, message=f"{message} (give a Decimal, not {type(value).__name__})")
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        raise CalculationError(field=name, message=message) from None
    if not number.is_finite() or number < 0:
        raise CalculationError(field=name, message=message)
    return number


def _validate(inp: CalculationInput) -> Decimal:
    """Re-check the caller's validation (defence in depth); returns the amount as Decimal."""
    errors: dict[str, list[str]] = {}
    if isinstance(inp.category, bool) or not isinstance(inp.category, int) or not 1 <= inp.category <= 15:
        errors["category"] = ["must be a Scope 3 category from 1 to 15"]
    if inp.method not in METHODS:
        errors["method"] = [f"Unknown method '{inp.method}'; expected one of {', '.join(Method.values)}"]
    amount = Decimal(0)
    try:
        amount = _finite_non_negative(inp.amount, "amount")
    except CalculationError as exc:
        errors.update(exc.errors)
    for name in ("year", "spend_year"):
        value = getattr(inp, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 9999):
            errors[name] = ["must be a year such as 2024"]
    if inp.factor_id is None and not inp.activity.strip() and inp.method != Method.SUPPLIER_SPECIFIC:
        errors["activity"] = ["Give an activity or a factor_id."]
    if errors:
        raise CalculationError(errors)
    return amount


# -- method dispatch -----------------------------------------------------------------------


def is_spend_factor(factor: EmissionFactor) -> bool:
    """Spend factors carry a currency; older rows may only say so through the unit ``USD``."""
    return bool(factor.currency) or factor.unit.strip().upper() == "USD"


def factor_currency(factor: EmissionFactor) -> str:
    return (factor.currency or "USD").upper()


def is_distance_factor(factor: EmissionFactor) -> bool:
    """tonne.km, passenger.km, vehicle.km (and mile variants), or a plain distance (vehicle distance, e.g. car km)."""
    try:
        dims = units.dimensions(factor.unit)
    except units.UnitError:
        return False
    if dims.get("[length]") != 1:
        return False
    rest = {k: v for k, v in dims.items() if k != "[length]"}
    return not rest or (len(rest) == 1 and next(iter(rest)) in DISTANCE_CARRIERS and next(iter(rest.values())) == 1)


def _basis(inp: CalculationInput, factor: EmissionFactor) -> str:
    """How the amount is turned into the factor's unit; also checks the factor fits the method."""
    spend = is_spend_factor(factor)
    if inp.method == Method.SPEND:
        if not spend:
            raise CalculationError(
                field="method",
                message=f"Factor '{factor.activity}' is per {factor.unit}, not per unit of currency; "
                "the spend method needs a spend factor.",
            )
        return Method.SPEND
    if inp.method == Method.ACTIVITY:
        if spend:
            raise CalculationError(
                field="method",
                message=f"Factor '{factor.activity}' is a spend factor ({factor_currency(factor)}); "
                "use method 'spend'.",
            )
        return Method.ACTIVITY
    if inp.method == Method.DISTANCE:
        if not is_distance_factor(factor):
            raise CalculationError(
                field="method",
                message=f"Factor '{factor.activity}' is per {factor.unit}; the distance method needs a "
                "tonne.km, passenger.km or vehicle.km factor.",
            )
        return Method.DISTANCE
    # supplier_specific: computed the way the chosen factor is expressed.
    if spend:
        return Method.SPEND
    if (inp.mass is not None or inp.distance is not None) and is_distance_factor(factor):
        return Method.DISTANCE
    return Method.ACTIVITY


# -- conversions ---------------------------------------------------------------------------


def _activity_amount(unit: str, amount: Decimal, factor: EmissionFactor) -> Decimal:
    try:
        units.parse_unit(factor.unit)
    except units.UnitError:
        # A data problem, but the caller can only fix it by choosing another factor.
        raise CalculationError(
            field="factor_id" if factor.pk else "activity",
            message=f"Factor '{factor.activity}' has a unit the calculator does not understand: '{factor.unit}'.",
        ) from None
    if not unit.strip():
        raise CalculationError(field="unit", message=f"A unit is required (the factor is per {factor.unit}).")
    try:
        units.parse_unit(unit)
    except units.UnitError as exc:
        raise CalculationError(field="unit", message=str(exc)) from None
    try:
        return units.convert(amount, unit, factor.unit)
    except units.UnitError:
        raise CalculationError(
            field="unit", message=f"Unit '{unit}' cannot be converted to the factor unit '{factor.unit}'."
        ) from None


def _distance_amount(inp: CalculationInput, amount: Decimal, factor: EmissionFactor) -> Decimal:
    if inp.mass is None and inp.distance is None and not inp.mass_unit and not inp.distance_unit:
        if not inp.unit.strip():
            raise CalculationError(
                {
                    "unit": [f"Give amount with a unit such as '{factor.unit}', or mass and distance."],
                    "mass": ["required when no amount unit is given"],
                    "distance": ["required when no amount unit is given"],
                }
            )
        return _activity_amount(inp.unit, amount, factor)

    errors: dict[str, list[str]] = {}
    for name in ("mass", "distance"):
        if getattr(inp, name) is None:
            errors[name] = [f"required with {'distance' if name == 'mass' else 'mass'} for the distance method"]
        if not getattr(inp, f"{name}_unit").strip():
            errors[f"{name}_unit"] = [f"required with {name}"]
    if errors:
        raise CalculationError(errors)
    mass = _finite_non_negative(inp.mass, "mass")
    distance = _finite_non_negative(inp.distance, "distance")
    _check_dimension(inp.mass_unit, "mass_unit", {"[mass]": 1}, "a mass unit such as t or kg")
    _check_dimension(inp.distance_unit, "distance_unit", {"[length]": 1}, "a distance unit such as km or mile")
    product_unit = f"({units.parse_unit(inp.mass_unit)}) * ({units.parse_unit(inp.distance_unit)})"
    try:
        return units.convert(mass * distance, product_unit, factor.unit)
    except units.UnitError:
        raise CalculationError(
            field="mass_unit",
            message=f"'{inp.mass_unit} x {inp.distance_unit}' cannot be converted to the factor unit '{factor.unit}'.",
        ) from None


def _check_dimension(unit: str, name: str, expected: dict[str, int], wording: str) -> None:
    try:
        dims = units.dimensions(unit)
    except units.UnitError as exc:
        raise CalculationError(field=name, message=str(exc)) from None
    if dims != expected:
        raise CalculationError(field=name, message=f"Unit '{unit}' is not {wording}.")


def _spend_amount(
    inp: CalculationInput, amount: Decimal, factor: EmissionFactor, resolver: FactorResolver
) -> tuple[Decimal, list[Note]]:
    """Money in the factor's currency at the factor's price year."""
    notes: list[Note] = []
    currency = (inp.currency or "USD").strip().upper()
    if not CURRENCY_RE.match(currency):
        raise CalculationError(field="currency", message=f"'{inp.currency}' is not a 3-letter currency code.")
    unit = inp.unit.strip()
    if unit and unit.upper() != currency:
        raise CalculationError(
            field="unit", message=f"For spend, unit must be empty or the currency '{currency}'; got '{unit}'."
        )
    target = factor_currency(factor)
    price_year = factor.dataset.basis_year
    spend_year = inp.spend_year
    if spend_year is None:
        spend_year = price_year
        notes.append(Note("spend_year_assumed", f"No spend year given; assumed the factor's price year {price_year}"))
    converted = amount
    if currency != target:
        converted *= resolver.exchange_rate(currency, target, spend_year)
    if spend_year != price_year:
        converted = converted * resolver.price_index(target, price_year) / resolver.price_index(target, spend_year)
    return converted, notes


def _gases(factor: EmissionFactor, converted: Decimal) -> tuple[dict[str, Decimal], list[Note]]:
    gases: dict[str, Decimal] = {}
    warnings: list[Note] = []
    for gas, value in (factor.gases or {}).items():
        try:
            per_unit = Decimal(str(value))
        except InvalidOperation:
            per_unit = Decimal("NaN")
        if not per_unit.is_finite():
            warnings.append(Note("gas_value_invalid", f"Factor gas {gas} has no usable value ({value!r}); left out"))
            continue
        gases[gas] = _quantize(converted * per_unit)
    return gases, warnings


def _quantize(value: Decimal) -> Decimal:
    """Round to the stored 6 decimal places; values the column cannot hold are an error on ``amount``."""
    if abs(value) >= RESULT_LIMIT:
        raise CalculationError(field="amount", message="The result is too large to store; check amount and unit.")
    return value.quantize(RESULT_QUANTUM, rounding=ROUND_HALF_EVEN)


def _plain(value: Decimal) -> Decimal:
    """``1E+3`` -> ``1000`` so the JSON echo reads as a plain number; the value is unchanged.

    Precondition: ``value`` is finite (it has already been through ``_quantize``).
    """
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # only NaN/Infinity have a letter here
    if exponent > 0 and value.adjusted() < PRECISION:
        return value.quantize(Decimal(1))
    return value
