"""emissions.calculation: the calculator over the database: selection, fallbacks, pins, visibility, memoization,
query counts and the cache."""

from __future__ import annotations

import csv
import datetime as dt
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction

from calculator.types import CalculationError, round_half_even
from emissions.cache import catalogue_changed
from emissions.calculation import FactorResolver, OrganizationFactors, calculate
from emissions.models import ExchangeRate, FactorDataset, Supplier
from emissions.services.reference import SHIPPED_EXCHANGE_RATES, SHIPPED_PRICE_INDEX, reference_sets_load_shipped
from perf.cache import renewing
from tests.calculator.helpers import make_input
from tests.factories import (
    EmissionFactorFactory,
    ExchangeRateFactory,
    FactorDatasetFactory,
    PriceIndexFactory,
    SupplierFactory,
)

pytestmark = pytest.mark.django_db

ACTIVITY = "test:grid"


def factor(*, region="GB", year=2025, dataset=None, **kwargs):
    dataset = dataset or FactorDatasetFactory(basis_year=year)
    return EmissionFactorFactory(activity=ACTIVITY, region=region, year=year, dataset=dataset, **kwargs)


def resolve(org, **kwargs):
    kwargs.setdefault("activity", ACTIVITY)
    return FactorResolver(org).resolve(make_input(**kwargs))


def codes(notes) -> list[str]:
    return [n.code for n in notes]


# -- region --------------------------------------------------------------------------------


def test_exact_region_needs_no_fallback(org):
    gb = factor(region="GB")
    factor(region="GLOBAL")
    chosen, notes = resolve(org, region="gb")
    assert chosen == gb
    assert notes == []


def test_region_falls_back_to_global(org):
    factor(region="GB")
    world = factor(region="GLOBAL")
    chosen, notes = resolve(org, region="FR")
    assert chosen == world
    assert codes(notes) == ["region_fallback"]
    assert notes[0].detail == "No factor for region FR; used GLOBAL"


def test_region_falls_back_to_any_region_deterministically(org):
    dataset = FactorDatasetFactory(basis_year=2025)
    factor(region="US", dataset=FactorDatasetFactory(basis_year=2025))
    de = factor(region="DE", dataset=dataset)
    gb = factor(region="GB", dataset=FactorDatasetFactory(basis_year=2024))
    chosen, notes = resolve(org, region="FR")
    # Newest dataset wins (US and DE are 2025; the US one was imported later).
    assert chosen.region == "US"
    assert notes[0].detail == "No factor for region FR; used US"
    assert chosen not in (de, gb)
    # The same answer every time, from a fresh resolver too.
    assert resolve(org, region="FR")[0] == chosen


def test_region_unspecified_with_several_regions_prefers_global_and_says_so(org):
    factor(region="GB")
    world = factor(region="GLOBAL")
    chosen, notes = resolve(org)
    assert chosen == world
    assert codes(notes) == ["region_unspecified"]
    assert "GB, GLOBAL" in notes[0].detail


def test_region_unspecified_without_global_picks_newest(org):
    factor(region="GB", dataset=FactorDatasetFactory(basis_year=2024))
    us = factor(region="US", dataset=FactorDatasetFactory(basis_year=2025))
    chosen, notes = resolve(org)
    assert chosen == us
    assert codes(notes) == ["region_unspecified"]


def test_single_region_without_region_given_has_no_note(org):
    only = factor(region="GB")
    assert resolve(org) == (only, [])


# -- year ----------------------------------------------------------------------------------


def test_exact_year(org):
    factor(year=2023)
    exact = factor(year=2024)
    factor(year=2025)
    assert resolve(org, year=2024) == (exact, [])


def test_year_falls_back_to_nearest_earlier(org):
    factor(year=2020)
    earlier = factor(year=2023)
    factor(year=2027)
    chosen, notes = resolve(org, year=2025)
    assert chosen == earlier
    assert codes(notes) == ["year_fallback_earlier"]
    assert notes[0].detail == "No factor for year 2025; used 2023"


def test_year_falls_back_to_nearest_later(org):
    later = factor(year=2023)
    factor(year=2025)
    chosen, notes = resolve(org, year=2020)
    assert chosen == later
    assert codes(notes) == ["year_fallback_later"]


def test_region_and_year_fallbacks_combine(org):
    world = factor(region="GLOBAL", year=2022)
    chosen, notes = resolve(org, region="FR", year=2024)
    assert chosen == world
    assert codes(notes) == ["region_fallback", "year_fallback_earlier"]


# -- newest dataset and pins ---------------------------------------------------------------


def test_newest_dataset_wins_by_basis_year_then_import_time(org):
    factor(dataset=FactorDatasetFactory(version="2024", basis_year=2024), year=2025)
    first = factor(dataset=FactorDatasetFactory(version="2025a", basis_year=2025), year=2025)
    second = factor(dataset=FactorDatasetFactory(version="2025b", basis_year=2025), year=2025)
    assert resolve(org)[0] == second
    # imported_at decides before the id does.
    FactorDatasetFactory._meta.model.objects.filter(pk=second.dataset_id).update(
        imported_at=first.dataset.imported_at - dt.timedelta(days=1)
    )
    catalogue_changed()  # a queryset update sends no signal: a write outside the services invalidates itself
    assert resolve(org)[0] == first


def test_dataset_version_pin(org):
    old = factor(dataset=FactorDatasetFactory(version="2024", basis_year=2024))
    factor(dataset=FactorDatasetFactory(version="2025", basis_year=2025))
    assert resolve(org, dataset_version="2024") == (old, [])


def test_dataset_version_pin_not_found_is_an_error_on_it(org):
    factor(dataset=FactorDatasetFactory(version="2025"))
    with pytest.raises(CalculationError) as exc:
        resolve(org, dataset_version="1999")
    assert list(exc.value.errors) == ["dataset_version"]


def test_source_pin(org):
    desnz = factor(dataset=FactorDatasetFactory(source=FactorDataset.Source.DESNZ, basis_year=2024))
    factor(dataset=FactorDatasetFactory(source=FactorDataset.Source.EPA_HUB, basis_year=2025))
    assert resolve(org, source="desnz") == (desnz, [])


@pytest.mark.parametrize("source", ["epa_hub", "nonsense"])
def test_source_pin_not_found_is_an_error_on_it(org, source):
    factor(dataset=FactorDatasetFactory(source=FactorDataset.Source.DESNZ))
    with pytest.raises(CalculationError) as exc:
        resolve(org, source=source)
    assert list(exc.value.errors) == ["source"]


def test_pins_are_never_relaxed_by_region_fallback(org):
    factor(region="GB", dataset=FactorDatasetFactory(version="2025"))
    world = factor(region="GLOBAL", dataset=FactorDatasetFactory(version="2024", basis_year=2024))
    chosen, notes = resolve(org, region="GB", dataset_version="2024")
    assert chosen == world
    assert codes(notes) == ["region_fallback"]


def test_unknown_activity(org):
    with pytest.raises(CalculationError) as exc:
        resolve(org, activity="nope:1")
    assert exc.value.errors == {"activity": ["Unknown activity 'nope:1'."]}


def test_factor_id_of_invisible_or_unknown_factor(org, other_org):
    theirs = factor(dataset=FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=other_org))
    for factor_id in (theirs.pk, 987654321):
        with pytest.raises(CalculationError) as exc:
            resolve(org, factor_id=factor_id)
        assert list(exc.value.errors) == ["factor_id"]


def test_factor_id_visible_own_supplier_factor(org):
    mine = factor(dataset=FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org))
    assert resolve(org, factor_id=mine.pk) == (mine, [])


def test_resolved_factor_has_dataset_loaded(org, django_assert_num_queries):
    factor()
    resolver = FactorResolver(org)
    with django_assert_num_queries(1):
        chosen, _ = resolver.resolve(make_input(activity=ACTIVITY))
        assert chosen.dataset.basis_year == 2025


# -- supplier-specific -----------------------------------------------------------------------


def test_supplier_factor_newest_and_activity_matched(org):
    supplier = SupplierFactory(organization=org)
    dataset_2023 = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org, basis_year=2023)
    dataset_2024 = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org, basis_year=2024)
    EmissionFactorFactory(dataset=dataset_2023, supplier=supplier, activity=ACTIVITY, year=2023)
    newest = EmissionFactorFactory(dataset=dataset_2024, supplier=supplier, activity=ACTIVITY, year=2024)
    other_activity = EmissionFactorFactory(dataset=dataset_2024, supplier=supplier, activity="test:other")
    factor(region="GB")  # average data, must lose to the supplier's own
    chosen, notes = resolve(org, method="supplier_specific", supplier_id=supplier.pk, activity="")
    assert chosen == other_activity  # same dataset as ``newest``, later factor year
    assert codes(notes) == ["supplier_activity_unspecified"]
    assert resolve(org, method="supplier_specific", supplier_id=supplier.pk, activity=ACTIVITY) == (newest, [])


def test_supplier_without_factor_and_without_activity_is_an_error(org):
    supplier = SupplierFactory(organization=org)
    with pytest.raises(CalculationError) as exc:
        resolve(org, method="supplier_specific", supplier_id=supplier.pk, activity="")
    assert list(exc.value.errors) == ["activity"]


def test_supplier_fallback_carries_average_data_fallbacks(org):
    supplier = SupplierFactory(organization=org)
    world = factor(region="GLOBAL")
    chosen, notes = resolve(org, method="supplier_specific", supplier_id=supplier.pk, region="FR")
    assert chosen == world
    assert codes(notes) == ["supplier_factor_missing", "region_fallback"]


def test_other_suppliers_factor_is_not_used(org):
    mine, other = SupplierFactory(organization=org), SupplierFactory(organization=org)
    dataset = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org)
    EmissionFactorFactory(dataset=dataset, supplier=other, activity=ACTIVITY)
    average = factor()
    chosen, notes = resolve(org, method="supplier_specific", supplier_id=mine.pk)
    assert chosen == average
    assert codes(notes) == ["supplier_factor_missing"]


# -- every fallback kind reaches result.fallbacks -------------------------------------------


@pytest.mark.parametrize(
    ("setup", "kwargs", "expected"),
    [
        ({"region": "GLOBAL"}, {"region": "FR"}, "region_fallback"),
        ({"region": "US"}, {"region": "FR"}, "region_fallback"),
        (None, {}, "region_unspecified"),
        ({"year": 2020}, {"year": 2024}, "year_fallback_earlier"),
        ({"year": 2026}, {"year": 2024}, "year_fallback_later"),
        ({}, {"method": "supplier_specific"}, "supplier_factor_missing"),
    ],
)
def test_every_fallback_kind_appears_in_result(org, setup, kwargs, expected):
    if setup is None:
        factor(region="GB")
        factor(region="US")
    else:
        factor(**setup)
    if kwargs.get("method") == "supplier_specific":
        kwargs["supplier_id"] = SupplierFactory(organization=org).pk
    result = calculate(make_input(activity=ACTIVITY, **kwargs), organization=org)
    assert expected in codes(result.fallbacks)


# -- memoization ---------------------------------------------------------------------------


def test_same_selector_many_items_constant_queries(org, django_assert_num_queries):
    factor(region="GB")
    resolver = FactorResolver(org)
    inp = make_input(activity=ACTIVITY, region="GB", amount=Decimal("3"), unit="MWh")
    with django_assert_num_queries(1):
        results = [calculate(inp, organization=org, resolver=resolver) for _ in range(200)]
    assert {r.co2e_kg for r in results} == {Decimal("531")}


def test_distinct_selectors_cost_one_query_per_activity(org, django_assert_num_queries):
    activities = [f"test:batch{i}" for i in range(5)]
    for activity in activities:
        EmissionFactorFactory(activity=activity, region="GB", year=2025)
    resolver = FactorResolver(org)
    inputs = [make_input(activity=activities[i % 5], region=("GB", "FR")[i % 2], year=2025) for i in range(1000)]
    with django_assert_num_queries(5):
        for inp in inputs:
            calculate(inp, organization=org, resolver=resolver)


def test_failed_lookups_are_memoized_too(org, django_assert_num_queries):
    resolver = FactorResolver(org)
    with django_assert_num_queries(1):
        for _ in range(50):
            with pytest.raises(CalculationError):
                resolver.resolve(make_input(activity="missing:1"))


def test_spend_batch_memoizes_rates_and_indexes(org, django_assert_num_queries):
    dataset = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, basis_year=2022)
    EmissionFactorFactory(dataset=dataset, activity="naics:1", region="US", year=2022, unit="USD", currency="USD")
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    PriceIndexFactory(currency="USD", year=2022, value=Decimal("100"))
    PriceIndexFactory(currency="USD", year=2024, value=Decimal("108"))
    supplier = SupplierFactory(organization=org)
    resolver = FactorResolver(org)
    inp = make_input(
        method="spend",
        activity="naics:1",
        amount=Decimal("100"),
        unit="EUR",
        currency="EUR",
        spend_year=2024,
        supplier_id=supplier.pk,
    )
    # factor + supplier check + rates for 2024 + USD price indexes
    with django_assert_num_queries(4):
        results = [calculate(inp, organization=org, resolver=resolver) for _ in range(100)]
    assert results[0].converted_amount == Decimal("100")  # 100 EUR x 1.08 x 100/108


def test_exchange_rate_lookup_kinds(org):
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2023, rate=Decimal("1.25"))
    ExchangeRateFactory(currency="GBP", quote_currency="USD", year=2023, rate=Decimal("1.5"))
    resolver = FactorResolver(org)
    assert resolver.exchange_rate("USD", "USD", 2023).value == 1
    assert resolver.exchange_rate("EUR", "USD", 2023).value == Decimal("1.25")
    inverse = resolver.exchange_rate("USD", "EUR", 2023)
    assert (inverse.value, inverse.how) == (Decimal("0.8"), "inverse")
    cross = resolver.exchange_rate("GBP", "EUR", 2023)  # cross rate through USD
    assert (cross.value, cross.how, len(cross.rows)) == (Decimal("1.2"), "cross", 2)
    with pytest.raises(CalculationError) as exc:
        resolver.exchange_rate("EUR", "USD", 2021)
    assert "EUR->USD for 2021" in exc.value.errors["spend_year"][0]
    newest = resolver.exchange_rate(
        "EUR", "USD", 2030
    )  # after the set's newest year: that year, for the caller to note
    assert (newest.year, newest.value) == (2023, Decimal("1.25"))


def test_price_index_lookup(org):
    PriceIndexFactory(currency="USD", year=2022, value=Decimal("292.655"), source="BLS")
    resolver = FactorResolver(org)
    row = resolver.price_index("usd", 2022)
    assert (row.currency, row.year, row.value, row.source) == ("USD", 2022, Decimal("292.655"), "BLS")
    with pytest.raises(CalculationError) as exc:
        resolver.price_index("EUR", 2022)
    assert list(exc.value.errors) == ["spend_year"]


def test_reference_sets_are_kept_apart_and_read_once_per_set(org, django_assert_num_queries):
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    ExchangeRateFactory(set_name="budget", currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.1"))
    PriceIndexFactory(currency="USD", year=2024, value=Decimal("313.689"))
    PriceIndexFactory(set_name="ppi", currency="USD", year=2024, value=Decimal("150"))
    catalogue_changed()
    resolver = FactorResolver(org)
    with django_assert_num_queries(4):  # each set once, however many lookups
        for _ in range(3):
            assert resolver.exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")
            assert resolver.exchange_rate("EUR", "USD", 2024, set_name="budget").value == Decimal("1.1")
            assert resolver.price_index("USD", 2024).value == Decimal("313.689")
            assert resolver.price_index("USD", 2024, set_name="ppi").value == Decimal("150")
    with pytest.raises(CalculationError) as exc:
        resolver.exchange_rate("EUR", "USD", 2024, set_name="ppi")
    assert list(exc.value.errors) == ["exchange_rate_set"]


def test_a_built_reference_set_is_kept_for_the_next_resolver_until_the_set_changes(org, settings):
    settings.CACHE_L1_TTL = 600  # what is kept in the process lives this long: longer than any slow run of the test
    rate = ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    PriceIndexFactory(currency="USD", year=2024, value=Decimal("313.689"))
    catalogue_changed()
    first = FactorResolver(org)
    assert first.exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")
    assert first.price_index("USD", 2024).value == Decimal("313.689")

    second = FactorResolver(org)
    assert second.exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")

    # The same tables: built once in this process, not decoded and built again for each resolver.
    assert second.source.exchange_rates("ecb") is first.source.exchange_rates("ecb")
    assert second.source.price_indexes("cpi-u") is first.source.price_indexes("cpi-u")
    ExchangeRate.objects.filter(pk=rate.pk).update(rate=Decimal("1.1"))
    catalogue_changed()
    third = FactorResolver(org)
    assert third.exchange_rate("EUR", "USD", 2024).value == Decimal("1.1")
    assert third.source.exchange_rates("ecb") is not first.source.exchange_rates("ecb")


def test_kept_reference_sets_are_each_organizations_own(org, other_org):
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    ExchangeRateFactory(organization=other_org, currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.25"))
    catalogue_changed()

    for _ in range(2):
        assert FactorResolver(org).exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")
        assert FactorResolver(other_org).exchange_rate("EUR", "USD", 2024).value == Decimal("1.25")


def test_a_set_with_no_rows_is_kept_as_no_set(org, settings, monkeypatch):
    settings.CACHE_L1_TTL = 600
    catalogue_changed()
    with pytest.raises(CalculationError):
        FactorResolver(org).exchange_rate("EUR", "USD", 2024, set_name="nothing")
    loaded: list[Any] = []
    load_sets = OrganizationFactors._load_sets

    def counted(self: OrganizationFactors, *args: Any) -> Any:
        loaded.append(args)
        return load_sets(self, *args)

    monkeypatch.setattr(OrganizationFactors, "_load_sets", counted)

    with pytest.raises(CalculationError) as exc:
        FactorResolver(org).exchange_rate("EUR", "USD", 2024, set_name="nothing")
    assert list(exc.value.errors) == ["exchange_rate_set"]
    assert loaded == []  # "no such set" was kept as such, not read again


def test_a_transaction_that_changed_the_sets_reads_its_own_rows(org, settings):
    settings.CACHE_L1_TTL = 600
    rate = ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    catalogue_changed()
    kept = FactorResolver(org)
    assert kept.exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")

    with transaction.atomic():
        ExchangeRate.objects.filter(pk=rate.pk).update(rate=Decimal("1.2"))
        catalogue_changed()  # as the loaders do, inside their transaction
        inside = FactorResolver(org)
        assert inside.exchange_rate("EUR", "USD", 2024).value == Decimal("1.2")
        table = inside.source.exchange_rates("ecb")
        transaction.set_rollback(True)

    # What the rolled-back transaction saw was not kept for anyone else.
    after = FactorResolver(org)
    assert after.exchange_rate("EUR", "USD", 2024).value == Decimal("1.08")
    assert after.source.exchange_rates("ecb") is not table


def test_renewing_the_cache_reads_the_sets_through_it(org, settings):
    settings.CACHE_L1_TTL = 600
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.08"))
    catalogue_changed()
    kept = FactorResolver(org).source
    kept.prime_sets(exchange_rate_sets=["ecb"])

    renewed = FactorResolver(org).source
    with renewing():
        renewed.prime_sets(exchange_rate_sets=["ecb"])

    assert renewed.exchange_rates("ecb") == kept.exchange_rates("ecb")
    assert renewed.exchange_rates("ecb") is not kept.exchange_rates("ecb")


def _shipped(name: str) -> list[dict[str, str]]:
    with (Path(settings.FACTOR_DATA_DIR) / name).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_every_shipped_currency_converts_for_every_year_it_has(org, steel_factor):
    """1,000 of each currency spent in each year the ECB file has it, on NAICS 331110 (0.787 kg per 2022 USD): the
    loaded sets give amount x rate x CPI(2022) / CPI(year) x 0.787, rounded once, and name the rows they used."""
    loaded = reference_sets_load_shipped(directory=Path(settings.FACTOR_DATA_DIR))
    assert not loaded.notes
    cpi = {int(row["year"]): row for row in _shipped(SHIPPED_PRICE_INDEX)}
    rates = _shipped(SHIPPED_EXCHANGE_RATES)
    usd_years = sorted({int(row["year"]) for row in rates})
    cases = [(row["currency"], int(row["year"]), row) for row in rates]
    cases += [("USD", year, None) for year in usd_years]
    assert len({currency for currency, _, _ in cases}) == 42  # the ECB's 41 (EUR included) and USD
    resolver = FactorResolver(org)
    for currency, year, rate_row in cases:
        inp = make_input(
            method="spend", activity="naics:331110", amount=Decimal(1000), unit="", currency=currency, spend_year=year
        )
        result = calculate(inp, organization=org, resolver=resolver)
        rate = Fraction(rate_row["rate"]) if rate_row else Fraction(1)
        expected = 1000 * rate * Fraction(cpi[2022]["value"]) / Fraction(cpi[year]["value"]) * Fraction("0.787")
        assert result.co2e_kg == round_half_even(expected, 6), (currency, year)
        assert result.fallbacks == []
        conversion = result.as_dict()["conversion"]
        assert conversion is not None
        if rate_row:
            (row,) = conversion["exchange_rate"]["rows"]
            assert (row["currency"], row["quote_currency"], row["year"]) == (currency, "USD", year)
            assert (Decimal(row["value"]), row["source"]) == (Decimal(rate_row["rate"]), rate_row["source"])
        else:
            assert conversion["exchange_rate"] is None
        if year == 2022:
            assert conversion["price_index"] is None
        else:
            index = conversion["price_index"]
            assert index is not None
            assert (index["from"]["year"], Decimal(index["from"]["value"])) == (year, Decimal(cpi[year]["value"]))
            assert (index["to"]["year"], Decimal(index["to"]["value"])) == (2022, Decimal(cpi[2022]["value"]))
            assert index["from"]["source"] == cpi[year]["source"]


# -- suppliers: priming and the lazy path ------------------------------------------------------


def _spend_setup(org, count: int) -> list[int]:
    dataset = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, basis_year=2022)
    EmissionFactorFactory(dataset=dataset, activity="naics:1", region="US", year=2022, unit="USD", currency="USD")
    return [SupplierFactory.create(organization=org).pk for _ in range(count)]


def _spend_input(supplier_id: int):
    return make_input(method="spend", activity="naics:1", amount=Decimal("10"), unit="USD", supplier_id=supplier_id)


def _supplier_factor_setup(org, count: int) -> list[int]:
    dataset = FactorDatasetFactory(source=FactorDataset.Source.SUPPLIER, organization=org)
    ids = []
    for i in range(count):
        supplier = SupplierFactory.create(organization=org)
        EmissionFactorFactory(dataset=dataset, supplier=supplier, activity=f"{ACTIVITY}:{i}")
        ids.append(supplier.pk)
    return ids


def _supplier_input(supplier_id: int):
    return make_input(method="supplier_specific", activity="", supplier_id=supplier_id)


@pytest.mark.parametrize(
    ("setup", "build", "priming", "batch"),
    [(_spend_setup, _spend_input, 2, 1), (_supplier_factor_setup, _supplier_input, 1, 0)],
    ids=["spend", "own-factors"],
)
def test_primed_suppliers_cost_the_same_for_1_or_100(org, django_assert_num_queries, setup, build, priming, batch):
    # Priming: suppliers' factors, then (spend only: no factor proves them) the membership check.
    # Batch: the spend factor once; supplier-specific needs nothing more.
    for size in (1, 100):
        ids = setup(org, size)
        resolver = FactorResolver(org)
        with django_assert_num_queries(priming):
            resolver.prime_suppliers(ids)
        with django_assert_num_queries(batch):
            results = [calculate(build(pk), organization=org, resolver=resolver) for pk in ids]
        assert len(results) == size
        if build is _supplier_input:
            assert [r.factor.supplier_id for r in results] == ids


def test_priming_memoizes_unknown_and_other_org_suppliers(org, other_org, django_assert_num_queries):
    mine = SupplierFactory(organization=org).pk
    theirs = SupplierFactory(organization=other_org).pk
    resolver = FactorResolver(org)
    with django_assert_num_queries(2):
        resolver.prime_suppliers([mine, theirs, 987654321, mine])
    with django_assert_num_queries(0):
        resolver.prime_suppliers([mine, theirs])  # already loaded
        resolver.check_supplier(mine)
        for pk in (theirs, 987654321):
            with pytest.raises(CalculationError) as exc:
                resolver.check_supplier(pk)
            assert exc.value.errors == {"supplier": [f"Unknown supplier {pk}."]}


def test_priming_with_own_factors_skips_the_supplier_query(org, django_assert_num_queries):
    ids = _supplier_factor_setup(org, 3)
    resolver = FactorResolver(org)
    with django_assert_num_queries(1):  # every id is proven by its factors
        resolver.prime_suppliers(ids)


def test_other_orgs_supplier_factor_is_never_primed(org, other_org):
    theirs = _supplier_factor_setup(other_org, 1)[0]
    resolver = FactorResolver(org)
    resolver.prime_suppliers([theirs])
    with pytest.raises(CalculationError) as exc:
        resolver.resolve(_supplier_input(theirs))
    assert list(exc.value.errors) == ["supplier"]


def test_lazy_spend_costs_one_query_per_distinct_supplier(org, django_assert_num_queries):
    ids = _spend_setup(org, 20)
    resolver = FactorResolver(org)
    # 1 factor query, then one EXISTS per distinct supplier, however often each repeats.
    with django_assert_num_queries(1 + len(ids)):
        for _ in range(3):
            for pk in ids:
                calculate(_spend_input(pk), organization=org, resolver=resolver)


def test_lazy_supplier_specific_costs_one_query_per_distinct_supplier(org, django_assert_num_queries):
    ids = _supplier_factor_setup(org, 20)
    resolver = FactorResolver(org)
    with django_assert_num_queries(len(ids)):
        for _ in range(3):
            for pk in ids:
                assert calculate(_supplier_input(pk), organization=org, resolver=resolver).factor.supplier_id == pk


def test_lazy_unknown_supplier_is_memoized(org, django_assert_num_queries):
    resolver = FactorResolver(org)
    with django_assert_num_queries(2):  # no factors, then the membership check, once
        for _ in range(10):
            with pytest.raises(CalculationError) as exc:
                calculate(_supplier_input(987654321), organization=org, resolver=resolver)
            assert list(exc.value.errors) == ["supplier"]


def test_prime_preloads_a_mixed_batch(org, django_assert_num_queries):
    activities = [f"test:prime{i}" for i in range(30)]
    for activity in activities:
        EmissionFactorFactory(activity=activity, region="GB", year=2025)
    pinned = [EmissionFactorFactory(unit="kWh").pk for _ in range(30)]
    spend_dataset = FactorDatasetFactory(source=FactorDataset.Source.EPA_SUPPLY_CHAIN, basis_year=2022)
    EmissionFactorFactory(dataset=spend_dataset, activity="naics:1", region="US", year=2022, unit="USD", currency="USD")
    ExchangeRateFactory(currency="EUR", quote_currency="USD", year=2022, rate=Decimal("1.05"))
    own = _supplier_factor_setup(org, 10)
    plain = [SupplierFactory(organization=org).pk for _ in range(10)]
    inputs = [
        *(make_input(activity=a, region="GB") for a in [*activities, "missing:1"]),
        *(make_input(factor_id=pk) for pk in [*pinned, 987654321]),
        *(_supplier_input(pk) for pk in own),
        *(
            make_input(method="spend", activity="naics:1", unit="", currency="EUR", spend_year=2022, supplier_id=pk)
            for pk in plain
        ),
    ]
    resolver = FactorResolver(org)
    with django_assert_num_queries(6):  # pinned, activities, supplier factors, suppliers, rate sets, index sets
        resolver.prime(inputs)
    outcomes = []
    with django_assert_num_queries(0):
        for inp in inputs:
            try:
                outcomes.append(calculate(inp, organization=org, resolver=resolver).factor.pk)
            except CalculationError as exc:
                outcomes.append(next(iter(exc.errors)))
    assert outcomes.count("activity") == 1
    assert outcomes.count("factor_id") == 1
    assert [o for o in outcomes if o not in ("activity", "factor_id")][30:60] == pinned


def test_prime_results_equal_lazy_results(org):
    supplier = _supplier_factor_setup(org, 1)[0]
    factor(region="GB")
    factor(region="GLOBAL")
    inputs = [make_input(activity=ACTIVITY, region=r) for r in ("GB", "FR", "")] + [_supplier_input(supplier)]
    primed = FactorResolver(org)
    primed.prime(inputs)
    lazy = FactorResolver(org)
    for inp in inputs:
        assert primed.resolve(inp) == lazy.resolve(inp)


def test_supplier_checks_survive_an_edit_and_follow_a_deletion(
    org, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from emissions.services.suppliers import supplier_delete, supplier_update
    from perf.cache import tiered

    supplier = SupplierFactory(organization=org)
    FactorResolver(org).check_supplier(supplier.pk)  # now cached
    with django_capture_on_commit_callbacks(execute=True):
        supplier_update(supplier=supplier, data={"name": "Renamed"})
    tiered().clear_local()
    with django_assert_num_queries(0):  # a name is not what the check reads
        FactorResolver(org).check_supplier(supplier.pk)
    with django_capture_on_commit_callbacks(execute=True):
        supplier_delete(supplier=supplier)
    with pytest.raises(CalculationError) as raised:
        FactorResolver(org).check_supplier(supplier.pk)
    assert raised.value.errors == {"supplier": [f"Unknown supplier {supplier.pk}."]}


def test_an_unknown_supplier_is_not_cached_so_its_creation_needs_no_invalidation(
    org, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from emissions.services.suppliers import supplier_create

    unknown = 987_654
    with pytest.raises(CalculationError):
        FactorResolver(org).check_supplier(unknown)
    primed = FactorResolver(org)
    primed.prime_suppliers([unknown])
    with pytest.raises(CalculationError):
        primed.check_supplier(unknown)
    with django_capture_on_commit_callbacks(execute=True):
        created = supplier_create(organization=org, data={"name": "Late", "external_id": "L-1"})
    Supplier.objects.filter(pk=created.pk).update(id=unknown)  # the id that was asked for before
    FactorResolver(org).check_supplier(unknown)  # found: no stale "unknown" answer was kept
    with django_assert_num_queries(0):
        FactorResolver(org).check_supplier(unknown)  # and a known supplier is cached


def test_resolver_of_another_org_is_refused(org, other_org):
    factor(region="GB")
    with pytest.raises(ValueError, match="another organization"):
        calculate(make_input(activity=ACTIVITY), organization=org, resolver=FactorResolver(other_org))


def test_an_organizations_own_set_is_its_alone_and_takes_the_place_of_a_public_one(org, other_org):
    ExchangeRateFactory(set_name="budget", currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.1"))
    ExchangeRateFactory(
        set_name="budget", organization=org, currency="EUR", quote_currency="USD", year=2024, rate=Decimal("1.25")
    )
    PriceIndexFactory(set_name="sector", organization=org, currency="USD", year=2024, value=Decimal("150"))
    catalogue_changed()
    ours, theirs = FactorResolver(org), FactorResolver(other_org)
    assert ours.exchange_rate("EUR", "USD", 2024, set_name="budget").value == Decimal("1.25")
    assert theirs.exchange_rate("EUR", "USD", 2024, set_name="budget").value == Decimal("1.1")  # the public one
    assert ours.price_index("USD", 2024, set_name="sector").value == Decimal("150")
    with pytest.raises(CalculationError) as exc:
        theirs.price_index("USD", 2024, set_name="sector")
    assert exc.value.errors == {
        "price_index_set": [
            "No price-index set 'sector' is loaded: check the name, or load it with load_reference_data."
        ]
    }
    # Cached per organization: the other's lookups, cached first, do not leak into a fresh resolver either way.
    assert FactorResolver(org).exchange_rate("EUR", "USD", 2024, set_name="budget").value == Decimal("1.25")
    assert FactorResolver(other_org).exchange_rate("EUR", "USD", 2024, set_name="budget").value == Decimal("1.1")
