"""``manage.py seed_demo``: a realistic demo organization, computed with the real calculator.

Creates ~200 suppliers (Faker company names, real NAICS codes taken from the imported EPA
spend factors) and activity records over Scope 3 categories 1, 2, 3, 4, 5, 6, 7, 9 and 12,
spread over the N months ending at the last full month:

* spend-based (EPA ``naics:*`` factors, USD at 2022 prices) for purchased and capital goods;
* average-data (DESNZ electricity T&D / well-to-tank, fuels, materials, waste);
* distance-based (DESNZ freight tonne.km, travel and commuting passenger.km).

Every record goes through ``emissions.calculation.calculate`` with a single ``FactorResolver``
(so each factor is looked up once) and is written with its Emission by ``activities_create``,
one transaction per batch, with ``--method``: ``copy`` (PostgreSQL ``COPY``; the default there,
measured faster) or ``bulk_create`` (the only choice on other databases). Records are
generated and written batch by batch, so memory stays flat at any ``--activities``. The run
ends with ``VACUUM (ANALYZE)`` of both tables and ``ANALYZE`` of the suppliers and rollups: the planner
needs fresh statistics after a big load, and index-only scans (the summaries' covering index)
need the visibility map that only VACUUM sets; autovacuum may be off or late. The run is
deterministic for a given ``--seed`` and ``--end-month``, whichever method writes it.
"""

from __future__ import annotations

import calendar
import datetime as dt
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, transaction
from django.db.models import Sum
from faker import Faker
from tqdm import tqdm

from calculator.inputs import calculation_input
from calculator.types import CalculationError, CalculationInput
from calculator.units import convert, is_compatible
from emissions.cache import emissions_changed, suppliers_created
from emissions.calculation import FactorResolver, calculate
from emissions.models import ActivityRecord, Emission, EmissionFactor, Method, Organization, Supplier
from emissions.rollups import ROLLUP_MODELS
from emissions.services.activities import ActivityInput, WriteMethod, activities_create, default_write_method
from emissions.services.bulk import activities_delete_for_org
from emissions.services.organizations import organization_get_or_create
from perf.db import refresh_statistics

# DESNZ 2025 flat-file row IDs without the trailing gas index (``_1`` = total kg CO2e),
# which is how the importer keys DESNZ factors. Picked by hand from the flat file; the
# command uses the ones present in the database and needs at least one per group.
DESNZ_KEYS: dict[str, list[str]] = {
    # Category 3: transmission & distribution losses and well-to-tank of energy bought.
    "energy": [
        "desnz:13_402_4000_5",  # T&D, UK electricity, kWh
        "desnz:15_917_4000_5",  # WTT, UK electricity generation, kWh
        "desnz:11_101_1011_8",  # WTT, diesel (average biofuel blend), litres
        "desnz:11_101_1017_8",  # WTT, petrol (average biofuel blend), litres
    ],
    # Category 1 average-data: materials bought, tonnes.
    "materials": [
        "desnz:19_505_5120_15",  # Plastics: average plastics, primary
        "desnz:19_504_5116_15",  # Metal: steel cans, primary
        "desnz:19_506_5160_15",  # Paper and board: mixed, primary
        "desnz:19_500_5020_15",  # Concrete, primary
        "desnz:19_501_5056_15",  # Glass, primary
    ],
    # Categories 5 and 12: waste, tonnes.
    "waste": [
        "desnz:20_507_5313_15",  # Commercial and industrial waste, landfill
        "desnz:20_505_5379_15",  # Plastics: average plastics, open-loop recycling
        "desnz:20_506_5453_15",  # Paper and board: mixed, landfill
        "desnz:20_504_5365_15",  # Metal: scrap metal, open-loop recycling
    ],
    # Categories 4 and 9: freight, tonne.km.
    "freight": [
        "desnz:27_304_3140_14",  # HGV (all diesel), all HGVs, average laden
        "desnz:27_304_3136_14",  # HGV (all diesel), all artics, average laden
        "desnz:27_303_3102_14",  # Vans, average (up to 3.5 t), diesel
        "desnz:27_315_3151_14",  # Rail, freight train
        "desnz:27_320_3235_14",  # Cargo ship, container ship, average
        "desnz:27_317_3156_14",  # Freight flights, long-haul, with RF
    ],
    # Category 6: business travel, passenger.km.
    "travel": [
        "desnz:21_316_3164_11",  # Flights, short-haul, economy, with RF
        "desnz:21_316_3170_11",  # Flights, long-haul, economy, with RF
        "desnz:25_315_3147_11",  # Rail, national rail
        "desnz:25_313_3141_11",  # Taxis, regular taxi
    ],
    # Category 7: employee commuting, passenger.km.
    "commuting": [
        "desnz:25_314_3145_11",  # Bus, average local bus
        "desnz:25_315_3147_11",  # Rail, national rail
        "desnz:25_315_3150_11",  # Rail, London Underground
        "desnz:25_314_3146_11",  # Coach
    ],
}

# Share of records per category (weights, not percentages).
CATEGORY_WEIGHTS: dict[int, int] = {1: 38, 2: 8, 3: 9, 4: 12, 5: 5, 6: 11, 7: 7, 9: 6, 12: 4}
# Capital goods: machinery, computers/electronics, electrical equipment, vehicles, construction.
CAPITAL_NAICS_PREFIXES = ("333", "334", "335", "336", "236", "237")
LOGISTICS_NAICS_PREFIXES = ("481", "482", "483", "484", "488", "492", "493")
SUPPLIER_COUNTRIES: list[tuple[str, str, int]] = [
    ("US", "en_US", 45),
    ("GB", "en_GB", 15),
    ("DE", "de_DE", 12),
    ("FR", "fr_FR", 8),
    ("NL", "nl_NL", 5),
    ("IT", "it_IT", 5),
    ("ES", "es_ES", 4),
    ("JP", "ja_JP", 3),
    ("IN", "en_IN", 3),
]
# Other units an input may arrive in, per factor unit (the calculator converts them).
ALTERNATE_UNITS: dict[str, list[str]] = {"kWh": ["MWh"], "t": ["kg"], "passenger*km": ["passenger*mile"]}
SPEND_PRICE_YEAR = 2022
SUPPLIER_PREFIX = "DEMO-"
CENT = Decimal("0.01")
METHODS = ("copy", "bulk_create")
MICRO = Decimal("0.000001")


@dataclass(frozen=True)
class FactorKey:
    """A factor the demo records select by key (activity + region), with its unit."""

    activity: str
    region: str
    unit: str


@dataclass
class Catalog:
    """The factors available in the database for the demo, grouped by use."""

    naics: list[FactorKey]
    groups: dict[str, list[FactorKey]]


def _months(end: dt.date, count: int) -> list[tuple[dt.date, dt.date]]:
    """``count`` (first day, last day) month periods ending with the month of ``end``, oldest first."""
    periods = []
    year, month = end.year, end.month
    for _ in range(count):
        last = calendar.monthrange(year, month)[1]
        periods.append((dt.date(year, month, 1), dt.date(year, month, last)))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return periods[::-1]


def _last_full_month(today: dt.date) -> dt.date:
    return today.replace(day=1) - dt.timedelta(days=1)


def _decimal_between(rng: random.Random, low: int, high: int, *, skew: bool = True) -> Decimal:
    """A value in [low, high] with two decimals, drawn without floats; ``skew`` favours small values."""
    if skew and rng.random() < 0.8:
        high = low + (high - low) // 5
    return Decimal(rng.randint(low * 100, high * 100)) * CENT


class Command(BaseCommand):
    help = "Seed a demo organization with suppliers, activities and their calculated emissions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="demo", help="Organization slug (created if missing)")
        parser.add_argument("--org-name", default="Demo Manufacturing Co.")
        parser.add_argument("--suppliers", type=int, default=200)
        parser.add_argument("--activities", type=int, default=20000)
        parser.add_argument("--months", type=int, default=24)
        parser.add_argument("--end-month", default=None, help="YYYY-MM of the last month (default: last full month)")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument(
            "--method",
            choices=METHODS,
            default=None,
            help="How rows are written: copy (PostgreSQL COPY; default there) or bulk_create (default elsewhere)",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--reset", action="store_true", help="Delete the org's activities and emissions first")
        mode.add_argument(
            "--if-empty", action="store_true", help="Do nothing (successfully) when the org already has activity data"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("suppliers", "activities", "months", "batch_size"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1; got {options[name]}.")
        end = self._end_month(options["end_month"])
        method = self._method(options["method"])
        # Setup in one transaction: a failed factor check or preflight leaves no organization,
        # supplier or reset behind. The records are then written one transaction per batch.
        with transaction.atomic():
            try:
                org, _ = organization_get_or_create(slug=options["org"], name=options["org_name"])
            except ValidationError as exc:
                raise CommandError(f"--org: {' '.join(exc.messages)}") from exc
            if ActivityRecord.objects.for_org(org).exists():
                if options["if_empty"]:
                    self.stdout.write(f"Organization '{org.slug}' already has activity data; nothing seeded.")
                    return
                if not options["reset"]:
                    raise CommandError(
                        f"Organization '{org.slug}' already has activity data; use --reset to delete its "
                        "activities and emissions and seed again."
                    )
                deleted_activities, deleted_emissions = activities_delete_for_org(organization=org)
                self.stdout.write(f"Deleted {deleted_activities} activities and {deleted_emissions} emissions.")
            catalog = self._catalog(org)
            rng = random.Random(options["seed"])
            suppliers = self._suppliers(org, catalog, rng, options["suppliers"], options["seed"])
            resolver = FactorResolver(org)
            generator = RecordGenerator(rng, catalog, suppliers, _months(end, options["months"]))
            self._preflight(org, resolver, generator)

        total = options["activities"]
        started = time.perf_counter()
        written = 0
        progress = tqdm(
            total=total, unit="activities", desc=f"seed_demo ({method})", file=self.stderr._out,
            disable=options["verbosity"] == 0,
        )  # fmt: skip
        with progress:
            # One batch in memory at a time: generated, calculated, written, dropped.
            for chunk in _chunks(total, options["batch_size"]):
                batch = [generator.next() for _ in range(chunk)]
                written += self._write_batch(method, org, resolver, batch)
                progress.update(chunk)
        elapsed = max(time.perf_counter() - started, 1e-9)
        self._analyze()
        total_kg = Emission.objects.for_org(org).aggregate(kg=Sum("co2e_kg"))["kg"] or Decimal(0)
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded '{org.slug}' with {method}: {len(suppliers)} suppliers, {written} activities + {written} "
                f"emissions in {elapsed:.1f}s ({written / elapsed:,.0f} activities/s, "
                f"{(written * 2) / elapsed:,.0f} rows/s counting both tables); "
                f"total {(total_kg / 1000).quantize(Decimal('0.001'))} t CO2e."
            )
        )

    # -- setup ---------------------------------------------------------------

    @staticmethod
    def _method(requested: WriteMethod | None) -> WriteMethod:
        """The write path: as requested, else ``activities_create``'s default (COPY on PostgreSQL)."""
        if requested == "copy" and connection.vendor != "postgresql":
            raise CommandError(f"--method copy needs PostgreSQL; this database is {connection.vendor}.")
        return requested or default_write_method()

    @staticmethod
    def _end_month(text: str | None) -> dt.date:
        if not text:
            return _last_full_month(dt.date.today())
        try:
            first = dt.datetime.strptime(text, "%Y-%m").date()
        except ValueError as exc:
            raise CommandError(f"--end-month must look like 2025-06; got '{text}'.") from exc
        return first.replace(day=calendar.monthrange(first.year, first.month)[1])

    @staticmethod
    def _catalog(org: Organization) -> Catalog:
        """The demo's factors, from the database; CommandError when the import has not run."""
        visible = EmissionFactor.objects.visible_to(org).filter(supplier__isnull=True)
        # One key per (activity, region), the newest factor's unit. Deduplicated here rather than with
        # DISTINCT ON, which only PostgreSQL has (the README's demo runs on SQLite too); the total
        # order (ending in the primary key) keeps the choice deterministic.
        naics_keys: dict[tuple[str, str], FactorKey] = {}
        for activity, region, unit in (
            visible.filter(activity__startswith="naics:")
            .order_by("activity", "region", "-dataset__basis_year", "-pk")
            .values_list("activity", "region", "unit")
        ):
            naics_keys.setdefault((activity, region), FactorKey(activity, region, unit))
        naics = list(naics_keys.values())
        wanted = {key for keys in DESNZ_KEYS.values() for key in keys}
        found: dict[str, FactorKey] = {}
        for activity, region, unit in (
            visible.filter(activity__in=wanted)
            .order_by("activity", "-year", "-pk")
            .values_list("activity", "region", "unit")
        ):
            found.setdefault(activity, FactorKey(activity, region, unit))
        groups = {group: [found[k] for k in keys if k in found] for group, keys in DESNZ_KEYS.items()}
        missing = [group for group, keys in groups.items() if not keys]
        if not naics:
            missing.insert(0, "EPA spend factors (naics:*)")
        if missing:
            raise CommandError(
                f"Emission factors missing for: {', '.join(missing)}. "
                "Run `python manage.py import_factors` first, then seed_demo again."
            )
        return Catalog(naics=naics, groups=groups)

    @staticmethod
    def _suppliers(org: Organization, catalog: Catalog, rng: random.Random, count: int, seed: int) -> list[Supplier]:
        """Create (or refresh, on re-runs) ``DEMO-0001``... suppliers with real NAICS codes."""
        codes = [key.activity.split(":", 1)[1] for key in catalog.naics]
        capital = [c for c in codes if c.startswith(CAPITAL_NAICS_PREFIXES)] or codes
        logistics = [c for c in codes if c.startswith(LOGISTICS_NAICS_PREFIXES)] or codes
        fakers: dict[str, Faker] = {}
        for _, locale, _ in SUPPLIER_COUNTRIES:
            fakers[locale] = Faker(locale)
            fakers[locale].seed_instance(seed)
        countries = [(c, loc) for c, loc, _ in SUPPLIER_COUNTRIES]
        weights = [w for _, _, w in SUPPLIER_COUNTRIES]
        rows = []
        for i in range(count):
            country, locale = rng.choices(countries, weights)[0]
            roll = rng.random()
            pool = capital if roll < 0.15 else logistics if roll < 0.27 else codes
            rows.append(
                Supplier(
                    organization=org,
                    external_id=f"{SUPPLIER_PREFIX}{i + 1:04d}",
                    name=fakers[locale].company()[:200],
                    country=country,
                    naics=rng.choice(pool),
                )
            )
        Supplier.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["organization", "external_id"],
            update_fields=["name", "country", "naics"],
        )
        # bulk_create sends no signals; the upsert may also rename suppliers that activities reference.
        suppliers_created(org.pk)
        emissions_changed(org.pk)
        return list(
            Supplier.objects.for_org(org).filter(external_id__in=[s.external_id for s in rows]).order_by("external_id")
        )

    def _preflight(self, org: Organization, resolver: FactorResolver, generator: RecordGenerator) -> None:
        """Calculate one sample per factor before writing, so a data problem fails with nothing written."""
        for inp in generator.samples():
            try:
                calculate(inp, organization=org, resolver=resolver)
            except CalculationError as exc:
                raise CommandError(
                    f"Cannot calculate demo activity '{inp.activity}' ({inp.unit}): {exc}. "
                    "Check that `python manage.py import_factors` ran completely."
                ) from exc

    # -- writing -------------------------------------------------------------

    @staticmethod
    def _write_batch(
        method: WriteMethod, org: Organization, resolver: FactorResolver, batch: list[ActivityInput]
    ) -> int:
        """Calculate and write one batch through the chosen service (atomic); return the activities written."""
        return len(activities_create(organization=org, items=batch, resolver=resolver, method=method))

    def _analyze(self) -> None:
        """Refresh planner statistics and, on PostgreSQL, the visibility map, for the freshly loaded tables.

        VACUUM cannot run inside a transaction block; when the command is called inside one
        (as in tests) only ANALYZE runs, and the output says so. The small supplier and rollup tables are
        analyzed too: without statistics the planner misjudges the supplier summary's join and the rollups' scans.
        """
        tables = [ActivityRecord._meta.db_table, Emission._meta.db_table]
        statement = refresh_statistics(tables, vacuum=True)
        if statement is None:
            return
        small = [Supplier._meta.db_table, *(model._meta.db_table for model in ROLLUP_MODELS)]
        refresh_statistics(small)
        why = "statistics and index-only scans" if statement != "ANALYZE" else "statistics"
        self.stdout.write(
            f"Ran {statement} on {', '.join(tables)} (ANALYZE on {', '.join(small)}) so the query planner "
            f"has {why} for the new rows."
        )


def _chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


class RecordGenerator:
    """Draws demo activity records from a seeded RNG; the same seed gives the same records."""

    def __init__(
        self,
        rng: random.Random,
        catalog: Catalog,
        suppliers: Sequence[Supplier],
        periods: Sequence[tuple[dt.date, dt.date]],
    ) -> None:
        self.rng = rng
        self.catalog = catalog
        self.suppliers = list(suppliers)
        self.periods = list(periods)
        self.counter = 0
        self.naics_region = {key.activity: key.region for key in catalog.naics}
        self.capital = [s for s in self.suppliers if s.naics.startswith(CAPITAL_NAICS_PREFIXES)] or self.suppliers
        self.logistics = [s for s in self.suppliers if s.naics.startswith(LOGISTICS_NAICS_PREFIXES)] or self.suppliers
        self.categories = list(CATEGORY_WEIGHTS)
        self.weights = list(CATEGORY_WEIGHTS.values())

    def next(self) -> ActivityInput:
        self.counter += 1
        rng = self.rng
        category = rng.choices(self.categories, self.weights)[0]
        start, end = rng.choice(self.periods)
        inp = self._input(category)
        return ActivityInput(
            calculation=inp, period_start=start, period_end=end, external_ref=f"DEMO-{self.counter:07d}"
        )

    def samples(self) -> Iterator[CalculationInput]:
        """One input per factor group/key the run can draw, for the preflight check (no RNG use)."""
        supplier = self.suppliers[0]
        yield self._spend(1, supplier, Decimal("1000.00"))
        for category, group in ((3, "energy"), (1, "materials"), (5, "waste")):
            for key in self.catalog.groups[group]:
                yield self._average(category, key, None, Decimal("10.00"), key.unit)
        for key in self.catalog.groups["freight"]:
            yield self._freight(4, key, None, Decimal("10.00"), Decimal("100.00"))
        for category, group in ((6, "travel"), (7, "commuting")):
            for key in self.catalog.groups[group]:
                yield self._passenger(category, key, None, Decimal("100.00"), key.unit)

    # -- per-method inputs -----------------------------------------------------

    def _input(self, category: int) -> CalculationInput:
        rng = self.rng
        groups = self.catalog.groups
        if category == 1 and rng.random() < 0.75:
            return self._spend(1, rng.choice(self.suppliers), _decimal_between(rng, 500, 250_000))
        if category == 1:
            key = rng.choice(groups["materials"])
            amount, unit = self._amount_in(key.unit, _decimal_between(rng, 1, 120))
            return self._average(1, key, rng.choice(self.suppliers), amount, unit)
        if category == 2:
            return self._spend(2, rng.choice(self.capital), _decimal_between(rng, 5_000, 900_000))
        if category == 3:
            key = rng.choice(groups["energy"])
            low, high = (5_000, 400_000) if key.unit == "kWh" else (200, 30_000)
            amount, unit = self._amount_in(key.unit, _decimal_between(rng, low, high))
            return self._average(3, key, rng.choice(self.suppliers), amount, unit)
        if category in (5, 12):
            key = rng.choice(groups["waste"])
            amount, unit = self._amount_in(key.unit, _decimal_between(rng, 1, 60))
            return self._average(category, key, rng.choice(self.suppliers) if category == 5 else None, amount, unit)
        if category in (4, 9):
            key = rng.choice(groups["freight"])
            mass = _decimal_between(rng, 1, 24)
            distance = _decimal_between(rng, 50, 12_000 if "_320_" in key.activity else 2_500)
            return self._freight(category, key, rng.choice(self.logistics), mass, distance)
        if category == 6:
            key = rng.choice(groups["travel"])
            amount, unit = self._amount_in(key.unit, _decimal_between(rng, 20, 12_000))
            return self._passenger(6, key, rng.choice(self.suppliers), amount, unit)
        key = rng.choice(groups["commuting"])
        amount, unit = self._amount_in(key.unit, _decimal_between(rng, 500, 40_000))
        return self._passenger(7, key, None, amount, unit)

    def _amount_in(self, factor_unit: str, amount: Decimal) -> tuple[Decimal, str]:
        """``amount`` (given in ``factor_unit``), sometimes re-expressed in another compatible unit."""
        choices = [u for u in ALTERNATE_UNITS.get(factor_unit, []) if is_compatible(u, factor_unit)]
        if choices and self.rng.random() < 0.3:
            unit = self.rng.choice(choices)
            converted = convert(amount, factor_unit, unit).quantize(MICRO, rounding=ROUND_HALF_EVEN)
            if converted > 0:
                return converted, unit
        return amount, factor_unit

    def _spend(self, category: int, supplier: Supplier, amount: Decimal) -> CalculationInput:
        activity = f"naics:{supplier.naics}"
        return CalculationInput(
            category=category,
            method=Method.SPEND,
            amount=amount,
            unit="USD",
            activity=activity,
            region=self.naics_region.get(activity, ""),
            currency="USD",
            spend_year=SPEND_PRICE_YEAR,
            supplier_id=supplier.pk,
        )

    @staticmethod
    def _average(
        category: int, key: FactorKey, supplier: Supplier | None, amount: Decimal, unit: str
    ) -> CalculationInput:
        return CalculationInput(
            category=category,
            method=Method.ACTIVITY,
            amount=amount,
            unit=unit,
            activity=key.activity,
            region=key.region,
            supplier_id=supplier.pk if supplier else None,
        )

    @staticmethod
    def _freight(
        category: int, key: FactorKey, supplier: Supplier | None, mass: Decimal, distance: Decimal
    ) -> CalculationInput:
        # Stored as the API stores it: the amount is mass x distance in t*km; mass and distance are kept too.
        return calculation_input(
            category=category,
            method=Method.DISTANCE,
            activity=key.activity,
            region=key.region,
            mass=mass,
            mass_unit="t",
            distance=distance,
            distance_unit="km",
            supplier_id=supplier.pk if supplier else None,
        )

    @staticmethod
    def _passenger(
        category: int, key: FactorKey, supplier: Supplier | None, amount: Decimal, unit: str
    ) -> CalculationInput:
        return CalculationInput(
            category=category,
            method=Method.DISTANCE,
            amount=amount,
            unit=unit,
            activity=key.activity,
            region=key.region,
            supplier_id=supplier.pk if supplier else None,
        )
