"""The calculation: one ``CalculationInput`` -> one ``CalculationResult``. No HTTP, no database here.

``co2e_kg = converted_amount x factor.co2e_per_unit``, where ``converted_amount`` is the input
expressed in the factor's unit:

- ``spend``: money in ``currency`` at ``spend_year`` prices -> the factor's currency via the
  exchange rate for ``spend_year`` -> the factor's price year (its dataset's ``basis_year``)
  via the factor currency's price index: ``amount x rate x index[price year] / index[spend year]``,
  from the reference sets the input names (default: ECB rates, US CPI-U). The rows used are kept on the
  result (``conversion``). A spend year after a set's newest year uses that year, recorded as a fallback;
  any other missing row is an error, never an assumed 1:1.
- ``activity``: ``amount`` in ``unit`` converted to the factor unit through ``calculator.units``.
- ``distance``: ``amount`` in a mass/passenger/vehicle x length unit, or ``mass x distance``
  (then ``amount``/``unit`` are ignored), converted to the factor unit.
- ``supplier_specific``: the supplier's own factor (or the average-data fallback), computed
  as spend when that factor is a spend factor, as distance when mass/distance are given,
  else as activity.

Exact, rounded once: every step is rational arithmetic (``fractions.Fraction``: decimal inputs,
unit sizes, rates and indexes are all exact fractions), so the product is the true value, and
``co2e_kg`` and each gas are then rounded once, half-even, to the 6 decimal places the database
stores. A tie is a tie of the true value (0.3901175 -> 0.390118), never of a rounded intermediate.

Biogenic CO2: ``biogenic_co2_kg = converted_amount x factor.biogenic_co2_per_unit``, rounded the same
way, when the factor has that figure (None otherwise). The GHG Protocol reports the CO2 of burning
biomass outside the scopes, so it is never part of ``co2e_kg``.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from calculator import units
from calculator.inputs import factor_choice_errors
from calculator.quality import assess
from calculator.resolve import Resolver
from calculator.rules import (
    AMOUNT_MAGNITUDE_LIMIT,
    CATEGORY_MAX,
    CATEGORY_MIN,
    CO2E_LIMIT,
    CO2E_PLACES,
    DATASET_GWP_SET,
    DEFAULT_CURRENCY,
    DEFAULT_PRICE_INDEX_SET,
    GWP_SOURCE,
    METHODS,
    YEAR_MAX,
    YEAR_MIN,
    Method,
    is_currency_code,
    is_set_name,
    is_year,
)
from calculator.types import (
    CalculationError,
    CalculationInput,
    CalculationResult,
    F,
    FactorLike,
    Note,
    PriceIndexUse,
    SpendConversion,
    round_ratio_half_even,
)

# Extra dimensions a distance factor may carry on top of [length]: tonne.km, passenger.km, vehicle.km.
DISTANCE_CARRIERS = ("[mass]", "[passenger]", "[vehicle]")
# Methods whose amount may be money: spend, and supplier-specific when the supplier's factor is a spend factor.
MONEY_METHODS = frozenset({Method.SPEND, Method.SUPPLIER_SPECIFIC})
TOO_LARGE = "The result is too large to store; check amount and unit."
SET_NAME_WORDING = "lower-case letters, digits, '.', '_' or '-', at most 32 characters"


def calculate(inp: CalculationInput, resolver: Resolver[F]) -> CalculationResult[F]:
    """Turn one activity into kg CO2e; raises ``CalculationError`` naming the bad field.

    Pass one ``resolver`` to a whole batch so its lookups and selections are shared.
    """
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

    conversion = None
    if basis == Method.SPEND:
        converted, spend_notes, conversion = _spend_amount(inp, amount, factor, resolver)
        fallbacks.extend(spend_notes)
    elif basis == Method.DISTANCE:
        converted = _distance_amount(inp, amount, factor)
    else:
        converted = _activity_amount(inp.unit, amount, factor)

    field = "mass" if basis == Method.DISTANCE and inp.mass is not None else "amount"
    co2e = _round(converted, factor.co2e_per_unit, field)
    biogenic_per_unit = factor.biogenic_co2_per_unit
    biogenic = None if biogenic_per_unit is None else _round(converted, biogenic_per_unit, field)
    gases, gas_warnings = _gases(factor, converted, field)

    supplier_factor = factor.supplier_id is not None and factor.supplier_id == inp.supplier_id
    quality_basis = Method.SUPPLIER_SPECIFIC if supplier_factor else basis
    assessment = assess(inp, factor, basis=quality_basis, fallbacks=fallbacks)
    return CalculationResult(
        co2e_kg=co2e,
        biogenic_co2_kg=biogenic,
        factor=factor,
        method=inp.method,
        category=inp.category,
        input=inp,
        data_quality=assessment.quality,
        gases=gases,
        fallbacks=fallbacks,
        warnings=[*assessment.warnings, *gas_warnings, *_gwp_set_warnings(factor), *_biogenic_only_warnings(factor)],
        converted_amount=converted,
        basis=basis,
        conversion=conversion,
    )


# -- the reporting period ------------------------------------------------------------------


def period_defaults(inp: CalculationInput, *, period_year: int) -> tuple[CalculationInput, list[Note]]:
    """``inp`` with ``year`` (and, on a money line, ``spend_year``) taken from a period starting in ``period_year``.

    Only values the caller left out (None) are filled in; each one filled in adds a note
    (``year_from_period``, ``spend_year_from_period``). No ``year`` -> ``period_year`` is the requested
    factor year (the resolver then records a year fallback when only another year's factor exists, and
    the time score measures the factor's age against it); no ``spend_year`` on a money line -> the amount
    is in ``period_year`` prices (converting to the factor's price year then needs that year's price
    index, or fails naming ``spend_year``).
    """
    year, spend_year = inp.year, inp.spend_year
    notes: list[Note] = []
    if year is None:
        year = period_year
        notes.append(Note("year_from_period", f"No year given; used the period's year {period_year}"))
    if spend_year is None and inp.method in MONEY_METHODS:
        spend_year = period_year
        notes.append(
            Note("spend_year_from_period", f"No spend_year given; the amount is taken to be in {period_year} prices")
        )
    return (replace(inp, year=year, spend_year=spend_year) if notes else inp), notes


def calculate_in_period(inp: CalculationInput, *, period_year: int, resolver: Resolver[F]) -> CalculationResult[F]:
    """``calculate`` for an activity that covers a reporting period starting in ``period_year``.

    What the caller left out is taken from the period (``period_defaults``), and ``result.input``
    holds the values used, so recalculating a stored row gives the same answer whatever this rule
    becomes. A supplier-specific line whose factor turns out not to be a spend factor keeps no
    defaulted spend year: it played no part. Errors on a rate or price index that a defaulted spend
    year caused say so.
    """
    used, notes = period_defaults(inp, period_year=period_year)
    try:
        result = calculate(used, resolver)
    except CalculationError as exc:
        if used.spend_year == inp.spend_year:
            raise
        hint = (
            f"spend_year was not given, so the period's year {used.spend_year} was used; "
            "give spend_year to state the price year of the amount."
        )
        raise CalculationError(
            {
                field: [*messages, hint] if field in ("spend_year", "currency") else messages
                for field, messages in exc.errors.items()
            }
        ) from None
    if used.spend_year != inp.spend_year and not is_spend_factor(result.factor):
        result.input = replace(used, spend_year=inp.spend_year)
        notes = [note for note in notes if note.code != "spend_year_from_period"]
    result.fallbacks = [*notes, *result.fallbacks]
    return result


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
    if number and number.adjusted() >= AMOUNT_MAGNITUDE_LIMIT:
        raise CalculationError(field=name, message=TOO_LARGE)
    return number


def _validate(inp: CalculationInput) -> Decimal:
    """Re-check the caller's validation (defence in depth); returns the amount as Decimal."""
    errors: dict[str, list[str]] = {}
    category = inp.category
    if isinstance(category, bool) or not isinstance(category, int) or not CATEGORY_MIN <= category <= CATEGORY_MAX:
        errors["category"] = [f"must be a Scope 3 category from {CATEGORY_MIN} to {CATEGORY_MAX}"]
    if inp.method not in METHODS:
        errors["method"] = [f"Unknown method '{inp.method}'; expected one of {', '.join(Method)}"]
    amount = Decimal(0)
    try:
        amount = _finite_non_negative(inp.amount, "amount")
    except CalculationError as exc:
        errors.update(exc.errors)
    for name in ("year", "spend_year"):
        value = getattr(inp, name)
        if value is not None and not is_year(value):
            errors[name] = [f"must be a year from {YEAR_MIN} to {YEAR_MAX}"]
    errors.update(
        factor_choice_errors(
            method=inp.method, factor_id=inp.factor_id, activity=inp.activity, supplier_id=inp.supplier_id
        )
    )
    if errors:
        raise CalculationError(errors)
    return amount


# -- method dispatch -----------------------------------------------------------------------


def is_spend_factor(factor: FactorLike) -> bool:
    """Spend factors carry a currency; older rows may only say so through the unit ``USD``."""
    return bool(factor.currency) or factor.unit.strip().upper() == DEFAULT_CURRENCY


def factor_currency(factor: FactorLike) -> str:
    return (factor.currency or DEFAULT_CURRENCY).upper()


def is_distance_factor(factor: FactorLike) -> bool:
    """tonne.km, passenger.km, vehicle.km (and mile variants), or a plain distance (vehicle distance, e.g. car km)."""
    try:
        dims = units.dimensions(factor.unit)
    except units.UnitError:
        return False
    if dims.get("[length]") != 1:
        return False
    rest = {k: v for k, v in dims.items() if k != "[length]"}
    return not rest or (len(rest) == 1 and next(iter(rest)) in DISTANCE_CARRIERS and next(iter(rest.values())) == 1)


def _basis(inp: CalculationInput, factor: FactorLike) -> str:
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


# -- conversions (exact fractions) ---------------------------------------------------------


def _user_unit(unit: str, name: str) -> None:
    """Check a unit the caller typed: known and not ambiguous; else ``CalculationError`` on ``name``."""
    try:
        units.check_unambiguous(unit)
        units.parse_unit(unit)
    except units.UnitError as exc:
        raise CalculationError(field=name, message=str(exc)) from None


def _activity_amount(unit: str, amount: Decimal, factor: FactorLike) -> Fraction:
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
    _user_unit(unit, "unit")
    try:
        return Fraction(amount) * units.ratio(unit, factor.unit)
    except units.UnitError:
        raise CalculationError(
            field="unit", message=f"Unit '{unit}' cannot be converted to the factor unit '{factor.unit}'."
        ) from None


def _distance_amount(inp: CalculationInput, amount: Decimal, factor: FactorLike) -> Fraction:
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
        return Fraction(mass) * Fraction(distance) * units.ratio(product_unit, factor.unit)
    except units.UnitError:
        raise CalculationError(
            field="mass_unit",
            message=f"'{inp.mass_unit} x {inp.distance_unit}' cannot be converted to the factor unit '{factor.unit}'.",
        ) from None


def _check_dimension(unit: str, name: str, expected: dict[str, int], wording: str) -> None:
    _user_unit(unit, name)
    if units.dimensions(unit) != expected:
        raise CalculationError(field=name, message=f"Unit '{unit}' is not {wording}.")


def _spend_amount(
    inp: CalculationInput, amount: Decimal, factor: FactorLike, resolver: Resolver[F]
) -> tuple[Fraction, list[Note], SpendConversion]:
    """Money in the factor's currency at the factor's price year, with the rows that got it there.

    ``amount x rate(spend year) x index(price year) / index(spend year)``. A spend year after the newest
    year a set has is converted at that newest year, noted (``exchange_rate_year_fallback``,
    ``price_index_year_fallback``), never silently.
    """
    notes: list[Note] = []
    currency = (inp.currency or DEFAULT_CURRENCY).strip().upper()
    if not is_currency_code(currency):
        raise CalculationError(field="currency", message=f"'{inp.currency}' is not a 3-letter currency code.")
    unit = inp.unit.strip()
    if unit and unit.upper() != currency:
        raise CalculationError(
            field="unit", message=f"For spend, unit must be empty or the currency '{currency}'; got '{unit}'."
        )
    for name in ("exchange_rate_set", "price_index_set"):
        value = getattr(inp, name)
        if value and not is_set_name(value):
            raise CalculationError(field=name, message=f"'{value}' is not a set name ({SET_NAME_WORDING}).")
    target = factor_currency(factor)
    price_year = factor.dataset.basis_year
    spend_year = inp.spend_year
    if spend_year is None:
        spend_year = price_year
        notes.append(Note("spend_year_assumed", f"No spend year given; assumed the factor's price year {price_year}"))
    converted = Fraction(amount)
    rate = None
    if currency != target:
        rate = resolver.exchange_rate(currency, target, spend_year, set_name=inp.exchange_rate_set)
        if rate.year != spend_year:
            notes.append(
                Note(
                    "exchange_rate_year_fallback",
                    f"The set '{rate.set_name}' has no {currency}->{target} rate for {spend_year}; "
                    f"used {rate.year}'s, its newest",
                )
            )
        converted *= rate.value
    index = None
    if spend_year != price_year:
        set_name = inp.price_index_set
        spend_row = resolver.price_index(target, spend_year, set_name=set_name)
        # The factor's price year is never approximated: it is what the factor is priced in.
        price_row = resolver.price_index(target, price_year, set_name=set_name, field="price_index_set", exact=True)
        index = PriceIndexUse(set_name or DEFAULT_PRICE_INDEX_SET, spend_row, price_row)
        if spend_row.year != spend_year:
            notes.append(
                Note(
                    "price_index_year_fallback",
                    f"The set '{index.set_name}' has no {target} price index for {spend_year}; "
                    f"used {spend_row.year}'s, its newest, so the amount is taken to be in {spend_row.year} prices",
                )
            )
        converted *= Fraction(price_row.value) / Fraction(spend_row.value)
    conversion = SpendConversion(
        amount=amount,
        currency=currency,
        spend_year=spend_year,
        factor_currency=target,
        price_year=price_year,
        exchange_rate=rate,
        price_index=index,
    )
    return converted, notes, conversion


def _gases(factor: FactorLike, converted: Fraction, field: str) -> tuple[dict[str, Decimal], list[Note]]:
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
        gases[gas] = _round(converted, per_unit, field)
    return gases, warnings


def _gwp_set_warnings(factor: FactorLike) -> list[Note]:
    """``gwp_set_mismatch`` when a gas factor is on another GWP set than the factor datasets (``DATASET_GWP_SET``).

    Reached by a pinned ``dataset_version`` or ``factor_id``, or a species the set does not assess
    (``resolve.narrow_gwp_set`` pins the default otherwise).
    """
    dataset = factor.dataset
    if dataset.source != GWP_SOURCE or dataset.version == DATASET_GWP_SET:
        return []
    return [
        Note(
            "gwp_set_mismatch",
            f"'{factor.activity}' is the {dataset.version} GWP; the factor datasets use {DATASET_GWP_SET}, "
            "so this result does not add up consistently with theirs",
        )
    ]


def _biogenic_only_warnings(factor: FactorLike) -> list[Note]:
    """``co2e_biogenic_only`` when the factor's CO2e is 0 beside a biogenic figure: its publisher gave CO2
    alone (all biogenic), no CH4 or N2O, so a zero ``co2e_kg`` is an absence of data, not a measured zero."""
    biogenic = factor.biogenic_co2_per_unit
    if factor.co2e_per_unit != 0 or biogenic is None or biogenic == 0:
        return []
    return [
        Note(
            "co2e_biogenic_only",
            f"'{factor.activity}' gives biogenic CO2 only (in biogenic_co2_kg); its CH4 and N2O are not "
            "published with it, so co2e_kg is 0 here: use a factor that includes them where they matter",
        )
    ]


def _round(converted: Fraction, per_unit: Decimal, field: str) -> Decimal:
    """The one rounding of ``converted x per_unit``: half-even to the stored places, from the exact product.

    Values the column cannot hold are an error on ``field``.
    """
    numerator, denominator = converted.as_integer_ratio()
    per_numerator, per_denominator = per_unit.as_integer_ratio()
    rounded = round_ratio_half_even(numerator * per_numerator, denominator * per_denominator, CO2E_PLACES)
    if abs(rounded) >= CO2E_LIMIT:
        raise CalculationError(field=field, message=TOO_LARGE)
    return rounded
