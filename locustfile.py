"""Load suite: the five kinds of client VCCI serves, weighted like production traffic.

Run it through ``make loadtest`` (``bench/loadtest.py``: seeds, starts gunicorn, builds the payload catalogue,
runs this file headless, writes the reports and checks the thresholds), or by hand against a seeded server::

    VCCI_TOKENS=<token org A>,<token org B> locust -f locustfile.py --host http://127.0.0.1:8000

Environment
-----------
``VCCI_TOKENS``      comma-separated API tokens, one per seeded organization; simulated users are spread
                     over them round-robin, so several tenants share the server as in production.
``VCCI_TOKEN``       a single token, when ``VCCI_TOKENS`` is not set.
``VCCI_CATALOGUE``   a catalogue file written by ``python locustfile.py --catalogue FILE --host URL`` (the
                     orchestrator does it before the measured run); without it, each locust process reads
                     the catalogue through the API when a user first needs it (``[setup]`` requests).
``VCCI_WAIT_SCALE``  multiplies every think time (default 1): 0.5 doubles each user's request rate without
                     changing the mix, 0 removes think time altogether (a capacity test, not a realistic one).
``VCCI_LOOP_LAG_DIR`` a directory where each locust process that runs users writes how late its own event loop
                     woke a greenlet (``LoopLag``); the orchestrator sets it and reports it beside the server's.

Scenarios, weights and think times
----------------------------------
Real traffic on a carbon-accounting service is mostly reads: people open dashboards and tables many times
for each write, and machines write in batches now and then. Weights are the share of simulated users of
each kind (locust spreads ``-u`` users over the classes by weight; from 10 users on, every kind is there);
think time is the pause between two tasks of one user.

=======================  ======  =========  ===============================================================
user class               weight  think (s)  what it does (task weights in brackets)
=======================  ======  =========  ===============================================================
``AnalystUser``          12      1-4        a person on the emissions dashboard: the landing page (totals by
                                            category and by month, the newest emissions) opened again and
                                            again [4]; the list filtered by category, period or supplier,
                                            values taken from the organization's own summaries, and 1-3
                                            ``next`` cursor pages [4]; summaries by each ``group_by``, some
                                            filtered [2]; a result's detail [1]; the activities list [1]; a
                                            one-month CSV export [1]. Popular choices come first (this year,
                                            the largest categories and suppliers, the top rows), as in real
                                            use. Every read re-sends ``If-None-Match`` with the ETag it got
                                            for the same URL, as a browser or dashboard cache does: 304s
                                            until the organization's data changes.
``FactorSearchUser``     4       1-3        someone choosing factors: ``/factors/?search=<real word>``, the
                                            common words and no filter most often [4], 0-2 more pages, the
                                            detail of one of the first results [1]. Conditional as above.
``CalculatorClient``     3       0.5-2      an application calling the calculator on demand: one
                                            ``/calculate/`` [4], a ``/calculate/batch/`` of 10-200 items [1];
                                            spend 40 %, average data 55 %, supplier-specific 5 %, one in ten
                                            pinned by ``factor_id``.
``SupplierMaintenance``  1       5-15       a procurement admin: the supplier list and 0-2 more pages [4], a
                                            supplier's detail [3], a new supplier with a unique
                                            ``external_id`` then PATCH and GET it [1], now and then deleting
                                            one it created itself [1].
``ErpClient``            1       20-60      an ERP integration posting activity lines of the last three
                                            months in batches of 50-500 (``POST /activities/``): spend on the
                                            supplier's own NAICS code (as ``seed_demo`` generates), average
                                            data, freight as mass x distance.
=======================  ======  =========  ===============================================================

At 50 users that is 29 analysts, 10 factor searchers, 7 calculator clients, 2 supplier admins and 2 ERP
integrations: some 2,200 requests a minute, of which fewer than ten store something (an activity batch
every 20 s or so, a supplier edit now and then); an activity batch invalidates the organization's cached
emission responses (its namespace is bumped), which the analysts then meet as misses and fresh 200s; a
supplier edit, the supplier pages (and emission responses only for a supplier that activities reference).

Payloads
--------
Every calculation and activity payload is drawn from the real factor catalogue, read through the API: the
EPA spend factors (``naics:*``, USD at the factor's price year, so no exchange rate or price index is
needed) and the DESNZ / EPA Hub factors found by searching for real words, each sent in its own unit or a
compatible one (kWh or MWh, t or kg, passenger.km or passenger.mile, tonne.km as mass x distance). Every
factor/unit combination is probed once with ``/calculate/batch/`` in both shapes the run sends (activity
key, pinned id) and left out if the calculator refuses it, so a 4xx during the run is a real failure.
Suppliers referenced by payloads are the organization's existing ones; the supplier admin only deletes
suppliers it created (``LT-`` prefix), which nothing else references.

Requests are named by route template (``/api/v1/emissions/{id}/``) so statistics group per endpoint;
deeper cursor pages are reported apart (``... (next page)``), as they are never served from the cache.
Any status other than the expected one, or an expected status with a wrong body (a calculation without
``co2e_kg``, a batch item refused, fewer activities stored than sent), is a failure carrying the
response's first bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent
import orjson
import simdjson
from locust import FastHttpUser, events, task
from locust import argument_parser as locust_arguments
from locust.runners import MasterRunner

from perf import looplag  # no Django: the same measurement as the server's workers

logger = logging.getLogger("vcci.loadtest")


def memoize_default_arguments() -> None:
    """Make locust's ``argument_parser.default_args_dict`` build its parser once per process, not once per option.

    A worker process (``--processes``) handles each spawn message from the master (one a second while users start)
    with ``{k: v for k, v in options.items() if k not in default_args_dict()}``: a whole argument parser built and
    run for each of some sixty options, about 5 ms each on an idle core. While the server held the machine's CPU,
    that stalled the worker's event loop for 0.5-2.7 s per message (gevent's blocking monitor found them, ``LoopLag``
    measured them), and every request
    its users had in flight was timed through the stall: the ramp-up's requests took seconds that the server
    never saw (docs/capacity/analysis.md, section 21). The defaults depend only on the process's environment,
    fixed for its life; each call gets its own copy, as before.
    """
    build = locust_arguments.default_args_dict
    if getattr(build, "memoized", False):
        return
    defaults: dict[str, Any] = {}

    def default_args_dict() -> dict[str, Any]:
        if not defaults:
            defaults.update(build())
        return dict(defaults)

    default_args_dict.memoized = True  # type: ignore[attr-defined]
    default_args_dict.__wrapped__ = build  # type: ignore[attr-defined]
    locust_arguments.default_args_dict = default_args_dict


memoize_default_arguments()

API = "/api/v1"
# The prefix of suppliers this suite creates: payloads never reference them, so deleting one never meets a 409.
OWN_SUPPLIER_PREFIX = "LT-"
EXCERPT_CHARS = 300
# Per-user memory of (ETag, body) by URL for conditional requests, as a browser cache keeps; bounded.
HTTP_CACHE_ENTRIES = 256
MAX_PAGE = 1000  # the API's largest page (perf.pagination.KeysetPagination.max_limit)
MAX_BATCH = 1000  # /calculate/batch/ items per request (emissions.api.serializers.MAX_BATCH_ITEMS)

# Words that occur in real factor names (DESNZ 2025, EPA Hub 2024): what people type in the search box,
# the most common first (ranked_choice).
SEARCH_WORDS = (
    "electricity",
    "natural gas",
    "diesel",
    "petrol",
    "HGV",
    "van",
    "rail",
    "flight",
    "ship",
    "hotel",
    "taxi",
    "bus",
    "waste",
    "landfill",
    "recycling",
    "steel",
    "paper",
    "plastics",
    "concrete",
    "glass",
    "coal",
    "propane",
    "aluminium",
    "food",
    "water",
)
# The subset whose factors the calculation payloads use (energy, materials, waste, freight, travel): the search
# words but four that the calculation payloads leave out.
CALCULATION_WORDS = tuple(word for word in SEARCH_WORDS if word not in {"van", "aluminium", "food", "water"})
CALCULATION_SOURCES = ("desnz", "epa_hub")
# At most this many spend factors and this many average-data factors (None: all of them, about 1,000 and 1,500);
# fewer make the catalogue faster to build (``--max-factors``: smoke runs, tests) at the cost of variety.
FACTOR_LIMIT: int | None = None
SPEND_SOURCE = "epa_supply_chain"
# Most searches have no filter (ranked_choice picks the first entry about 40 % of the time).
SEARCH_FILTERS: tuple[dict[str, str], ...] = (
    {},
    {"source": "desnz"},
    {"source": "epa_hub"},
    {"region": "GB"},
    {"region": "US"},
)
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "IT", "ES", "JP", "IN", "CA", "MX", "PL")
GROUP_BYS = ("category", "supplier", "month", "method")
# Capital goods NAICS (machinery, electronics, electrical equipment, vehicles, construction): category 2.
CAPITAL_NAICS = ("333", "334", "335", "336", "236", "237")

# Units a quantity may be sent in, per factor unit, and the range an amount in that unit is drawn from.
ALTERNATE_UNITS: dict[str, tuple[str, ...]] = {"kWh": ("MWh",), "t": ("kg",), "passenger*km": ("passenger*mile",)}
AMOUNT_RANGES: dict[str, tuple[int, int]] = {
    "USD": (500, 250_000),
    "kWh": (1_000, 400_000),
    "MWh": (1, 400),
    "GJ": (10, 5_000),
    "L": (100, 30_000),
    "gallon": (30, 8_000),
    "m**3": (10, 5_000),
    "ft**3": (1_000, 1_000_000),
    "t": (1, 120),
    "kg": (100, 50_000),
    "short_ton": (1, 130),
    "t*km": (1_000, 60_000),
    "short_ton*mile": (500, 40_000),
    "passenger*km": (20, 12_000),
    "passenger*mile": (12, 7_500),
    "km": (10, 5_000),
    "mile": (10, 3_000),
    "vehicle*mile": (10, 3_000),
    "room*night": (1, 30),
}
DEFAULT_AMOUNT_RANGE = (1, 1_000)
MASS_DISTANCE = "mass*distance"  # a "unit" variant: tonne.km given as mass (t) x distance (km)
CATALOGUE_ENV = "VCCI_CATALOGUE"
CATALOGUE_FORMAT = 1
# Concurrent probe requests when building the catalogue file: the server's workers share them (a few seconds).
PROBE_WORKERS = 4


class SetupError(RuntimeError):
    """The catalogue or an organization's data could not be read; the run cannot make valid payloads."""


# -- think time ------------------------------------------------------------------------------------


def wait_scale() -> float:
    """``VCCI_WAIT_SCALE`` (default 1): the factor applied to every think time."""
    raw = os.environ.get("VCCI_WAIT_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError as exc:
        raise SetupError(f"VCCI_WAIT_SCALE must be a number; got {raw!r}.") from exc
    if scale < 0:
        raise SetupError(f"VCCI_WAIT_SCALE must be >= 0; got {raw!r}.")
    return scale


def think(low: float, high: float) -> Callable[[Any], float]:
    """A locust ``wait_time``: uniform in [low, high] seconds times ``VCCI_WAIT_SCALE``."""
    scale = wait_scale()

    def wait_time(user: Any) -> float:
        return random.uniform(low, high) * scale

    return wait_time


def ranked_choice(rng: random.Random, items: Sequence[Any]) -> Any:
    """An item of ``items`` (most popular first) with Zipf weights 1/rank: a few views get most of the traffic.

    Real dashboards are opened on the same few views (this year, the largest categories and suppliers, the
    common search words) far more often than on the long tail, and the cache's hit rate depends on that.
    """
    weights = [1 / rank for rank in range(1, len(items) + 1)]
    return rng.choices(items, weights=weights)[0]


# -- tokens ------------------------------------------------------------------------------------------


def tokens() -> list[str]:
    """The API tokens from ``VCCI_TOKENS`` (comma-separated) or ``VCCI_TOKEN``; SetupError when neither is set."""
    raw = os.environ.get("VCCI_TOKENS", "") or os.environ.get("VCCI_TOKEN", "")
    found = [token.strip() for token in raw.split(",") if token.strip()]
    if not found:
        raise SetupError("Set VCCI_TOKENS (comma-separated) or VCCI_TOKEN to API tokens (make seed prints one).")
    return found


_user_numbers = itertools.count()


def next_token() -> str:
    """The token of the next simulated user: round-robin, so users spread evenly over the organizations."""
    found = tokens()
    return found[next(_user_numbers) % len(found)]


# -- the catalogue -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactorChoice:
    """One way of quantifying an activity against one real factor: the factor, the unit sent, the category."""

    factor_id: int
    activity: str
    region: str
    year: int
    factor_unit: str
    unit: str  # the unit the amount is sent in, or MASS_DISTANCE
    method: str  # spend | activity | distance
    category: int


@dataclass(frozen=True)
class SupplierRef:
    """An existing supplier of the organization that payloads may reference."""

    id: int
    naics: str


@dataclass
class Catalogue:
    """What payloads are drawn from: calculable factor choices (process-wide) and one organization's suppliers."""

    spend: list[FactorChoice]
    average: list[FactorChoice]  # activity and distance methods
    suppliers: list[SupplierRef]
    spend_by_naics: dict[str, FactorChoice] = field(default_factory=dict)
    naics_codes: list[str] = field(default_factory=list)
    supplier_specific: bool = True  # False when the probe found the method unusable on this data

    def __post_init__(self) -> None:
        self.spend_by_naics = {c.activity.removeprefix("naics:"): c for c in self.spend if c.unit == "USD"}
        self.naics_codes = sorted(self.spend_by_naics)


Fetch = Callable[[str, str, Any, str], Any]
"""``fetch(method, path, body, name)`` -> the JSON answer; raises SetupError on any unexpected status."""


def scope3_category(factor: dict[str, Any]) -> int:
    """A plausible Scope 3 category (1-15) for an activity quantified with ``factor`` (a factors API row)."""
    text = f"{factor.get('category', '')} {factor.get('name', '')}".lower()
    unit = factor.get("unit", "")
    if factor.get("currency"):
        naics = str(factor.get("activity", "")).removeprefix("naics:")
        return 2 if naics.startswith(CAPITAL_NAICS) else 1
    if "waste" in text or "landfill" in text or "recycl" in text:
        return 5
    if "passenger" in unit or "hotel" in text or "business travel" in text or "flight" in text:
        return 6
    if unit in ("t*km", "short_ton*mile") or "freight" in text or "deliver" in text:
        return 4
    if "material" in text:
        return 1
    return 3  # fuel- and energy-related activities


def method_for(factor: dict[str, Any]) -> str:
    """The calculation method that fits ``factor``'s unit: spend for currencies, distance for transport units."""
    if factor.get("currency"):
        return "spend"
    unit = str(factor.get("unit", ""))
    if "km" in unit or "mile" in unit:
        return "distance"
    return "activity"


def choices_for(factor: dict[str, Any]) -> list[FactorChoice]:
    """Every (unit, method) way this suite may quantify an activity against ``factor``, before probing."""
    unit = str(factor["unit"])
    method = method_for(factor)
    units: list[str] = [unit, *ALTERNATE_UNITS.get(unit, ())]
    if unit == "t*km":
        units.append(MASS_DISTANCE)
    return [
        FactorChoice(
            factor_id=int(factor["id"]),
            activity=str(factor["activity"]),
            region=str(factor.get("region") or ""),
            year=int(factor["year"]),
            factor_unit=unit,
            unit=sent,
            method=method,
            category=scope3_category(factor),
        )
        for sent in units
    ]


def amount_in(rng: random.Random, unit: str) -> str:
    """A realistic quantity in ``unit`` as a decimal string (2 places), small values more frequent."""
    low, high = AMOUNT_RANGES.get(unit, DEFAULT_AMOUNT_RANGE)
    if rng.random() < 0.8:  # most invoice lines are small; a few are large
        high = low + max((high - low) // 5, 1)
    return f"{rng.randint(low * 100, high * 100) / 100:.2f}"


def calculation_input(
    choice: FactorChoice, rng: random.Random, *, supplier: SupplierRef | None = None, pin_factor: bool = False
) -> dict[str, Any]:
    """A ``/calculate/`` payload for ``choice``: the activity key and region, or the factor id when pinned."""
    data: dict[str, Any] = {"category": choice.category, "method": choice.method}
    if pin_factor:
        data["factor_id"] = choice.factor_id
    else:
        data["activity"] = choice.activity
        if choice.region:
            data["region"] = choice.region
    if choice.method == "spend":
        # Spend in USD of the factor's price year needs neither an exchange rate nor a price index.
        data.update(amount=amount_in(rng, "USD"), currency="USD", spend_year=choice.year)
    elif choice.unit == MASS_DISTANCE:
        data.update(
            mass=amount_in(rng, "t") if rng.random() < 0.5 else f"{rng.randint(100, 2400) / 100:.2f}",
            mass_unit="t",
            distance=f"{rng.randint(5_000, 250_000) / 100:.2f}",
            distance_unit="km",
        )
    else:
        data.update(amount=amount_in(rng, choice.unit), unit=choice.unit)
    if supplier is not None:
        data["supplier"] = supplier.id
    return data


def supplier_specific_input(rng: random.Random, catalogue: Catalogue, supplier: SupplierRef) -> dict[str, Any]:
    """Spend bought from ``supplier`` by the supplier-specific method: its own factor, else its NAICS average."""
    choice = catalogue.spend_by_naics.get(supplier.naics) or rng.choice(catalogue.spend)
    return {
        "category": 1,
        "method": "supplier_specific",
        "supplier": supplier.id,
        "activity": choice.activity,
        "amount": amount_in(rng, "USD"),
        "unit": "USD",
    }


def random_calculation(rng: random.Random, catalogue: Catalogue) -> dict[str, Any]:
    """A calculation payload as applications send them: spend 40 %, average data 55 %, supplier-specific 5 %."""
    roll = rng.random()
    if roll < 0.05 and catalogue.supplier_specific and catalogue.suppliers:
        return supplier_specific_input(rng, catalogue, rng.choice(catalogue.suppliers))
    if roll < 0.45:
        return calculation_input(rng.choice(catalogue.spend), rng, pin_factor=rng.random() < 0.1)
    return calculation_input(rng.choice(catalogue.average), rng, pin_factor=rng.random() < 0.1)


def activity_line(
    rng: random.Random, catalogue: Catalogue, period: tuple[dt.date, dt.date], external_ref: str
) -> dict[str, Any]:
    """One ERP activity line for ``period``: 60 % spend on a supplier's NAICS code, the rest average data."""
    supplier = rng.choice(catalogue.suppliers) if catalogue.suppliers else None
    if rng.random() < 0.6:
        choice = (catalogue.spend_by_naics.get(supplier.naics) if supplier else None) or rng.choice(catalogue.spend)
        data = calculation_input(choice, rng, supplier=supplier)
    else:
        data = calculation_input(rng.choice(catalogue.average), rng, supplier=supplier if rng.random() < 0.7 else None)
    data.update(period_start=period[0].isoformat(), period_end=period[1].isoformat(), external_ref=external_ref)
    return data


def recent_months(today: dt.date, count: int) -> list[tuple[dt.date, dt.date]]:
    """The ``count`` full months before ``today``'s month, newest first, as (first day, last day)."""
    months = []
    last = today.replace(day=1) - dt.timedelta(days=1)
    for _ in range(count):
        months.append((last.replace(day=1), last))
        last = last.replace(day=1) - dt.timedelta(days=1)
    return months


def month_bounds(key: str) -> tuple[dt.date, dt.date]:
    """``"2025-03"`` -> (2025-03-01, 2025-03-31)."""
    first = dt.date.fromisoformat(f"{key}-01")
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, following - dt.timedelta(days=1)


def supplier_payload(rng: random.Random, catalogue: Catalogue) -> dict[str, Any]:
    """A new supplier as procurement enters it: unique ``external_id``, ISO country, a real NAICS code."""
    words = ("Northern", "Atlas", "Harbour", "Summit", "Crown", "Delta", "Pioneer", "Meridian", "Apex", "Beacon")
    trades = ("Steel", "Logistics", "Plastics", "Packaging", "Components", "Chemicals", "Textiles", "Foods")
    forms = ("Ltd", "GmbH", "Inc.", "S.A.", "B.V.", "plc")
    data: dict[str, Any] = {
        "external_id": f"{OWN_SUPPLIER_PREFIX}{uuid.uuid4().hex[:16]}",
        "name": f"{rng.choice(words)} {rng.choice(trades)} {rng.choice(forms)}",
        "country": rng.choice(COUNTRIES),
    }
    if catalogue.naics_codes:
        data["naics"] = rng.choice(catalogue.naics_codes)
    return data


def _pages(fetch: Fetch, path: str, name: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Every row of a cursor-paginated list, following ``next`` (at most ``limit`` rows when given)."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    while url and (limit is None or len(rows) < limit):
        page = fetch("GET", url, None, name)
        rows += page["results"]
        url = relative(page["next"]) if page.get("next") else None
    return rows if limit is None else rows[:limit]


def probe(
    fetch: Fetch, candidates: Sequence[FactorChoice], *, workers: int = 1
) -> tuple[list[FactorChoice], list[str]]:
    """The candidates the calculator accepts, checked with ``/calculate/batch/``, and why the others failed.

    Each candidate is sent in both shapes the run sends it (by activity key and region, and pinned by
    factor id), so what survives is valid. As a side effect the organization's factor resolution of every
    choice is cached, as ``warm_cache`` does for average-data activities: the run then measures the
    steady state of a catalogue in use, not the first look-up of each of ~3,000 factors.
    """
    rng = random.Random(0)
    size = MAX_BATCH // 2
    chunks = [list(candidates[start : start + size]) for start in range(0, len(candidates), size)]

    def send(chunk: list[FactorChoice]) -> list[Any]:
        items = [
            item for c in chunk for item in (calculation_input(c, rng), calculation_input(c, rng, pin_factor=True))
        ]
        return fetch("POST", f"{API}/calculate/batch/", {"items": items}, f"[setup] {API}/calculate/batch/")["results"]

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            answers = list(pool.map(send, chunks))
    else:  # in the caller's thread: a test's in-process client only sees its own transaction from there
        answers = [send(chunk) for chunk in chunks]
    kept: list[FactorChoice] = []
    refused: list[str] = []
    for chunk, results in zip(chunks, answers, strict=True):
        for index, choice in enumerate(chunk):
            errors = [result["error"] for result in results[2 * index : 2 * index + 2] if "error" in result]
            if errors:
                refused.append(f"{choice.activity} in {choice.unit}: {errors[0]}")
            else:
                kept.append(choice)
    return kept, refused


def load_factor_choices(fetch: Fetch, *, workers: int = 1) -> tuple[list[FactorChoice], list[FactorChoice]]:
    """(spend, average-data) factor choices from the live catalogue, probed; SetupError when a group is empty."""
    factors_name = f"[setup] {API}/factors/"
    spend_query = urlencode({"source": SPEND_SOURCE, "limit": MAX_PAGE})
    spend_rows = _pages(fetch, f"{API}/factors/?{spend_query}", factors_name, limit=FACTOR_LIMIT)
    average_rows: dict[int, dict[str, Any]] = {}
    for word in CALCULATION_WORDS:
        query = urlencode({"search": word, "limit": 200})
        for row in fetch("GET", f"{API}/factors/?{query}", None, factors_name)["results"]:
            if row.get("supplier") is None and row["source"] in CALCULATION_SOURCES:
                average_rows[int(row["id"])] = row
    rows = list(average_rows.values())
    if FACTOR_LIMIT is not None and len(rows) > FACTOR_LIMIT:
        rows = rows[:: len(rows) // FACTOR_LIMIT][:FACTOR_LIMIT]  # spread over every search word
    spend_candidates = [c for row in spend_rows for c in choices_for(row)]
    average_candidates = [c for row in rows for c in choices_for(row)]
    spend, spend_refused = probe(fetch, spend_candidates, workers=workers)
    average, average_refused = probe(fetch, average_candidates, workers=workers)
    refused = spend_refused + average_refused
    if refused:
        logger.info(
            "%d of %d factor/unit combinations are not calculable and are left out, e.g. %s",
            len(refused),
            len(spend_candidates) + len(average_candidates),
            "; ".join(refused[:3]),
        )
    if not spend or not average:
        raise SetupError(
            f"No calculable {'spend' if not spend else 'average-data'} factors in the catalogue: "
            "run `manage.py import_factors` on the server's database."
        )
    return spend, average


def load_suppliers(fetch: Fetch) -> list[SupplierRef]:
    """The organization's suppliers that this suite did not create (those may be deleted during the run)."""
    rows = _pages(fetch, f"{API}/suppliers/?limit={MAX_PAGE}", f"[setup] {API}/suppliers/")
    return [
        SupplierRef(id=int(row["id"]), naics=str(row.get("naics") or ""))
        for row in rows
        if not str(row["external_id"]).startswith(OWN_SUPPLIER_PREFIX)
    ]


def probe_supplier_specific(fetch: Fetch, catalogue: Catalogue) -> bool:
    """Whether a supplier-specific calculation works on this organization's data (a one-item batch)."""
    if not catalogue.suppliers:
        return False
    body = supplier_specific_input(random.Random(0), catalogue, catalogue.suppliers[0])
    answer = fetch("POST", f"{API}/calculate/batch/", {"items": [body]}, f"[setup] {API}/calculate/batch/")
    ok = "error" not in answer["results"][0]
    if not ok:
        logger.warning("Supplier-specific calculations are refused here and left out: %s", answer["results"][0])
    return ok


def token_key(token: str) -> str:
    """How a catalogue file names an organization: a digest of its token, so the file holds no credential."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def org_part(fetch: Fetch, spend: list[FactorChoice], average: list[FactorChoice]) -> Catalogue:
    """The catalogue of the organization ``fetch`` authenticates as, around the given factor choices."""
    catalogue = Catalogue(spend=spend, average=average, suppliers=load_suppliers(fetch))
    catalogue.supplier_specific = probe_supplier_specific(fetch, catalogue)
    return catalogue


def build_catalogue_file(fetch_for: Callable[[str], Fetch], tokens: Sequence[str]) -> dict[str, Any]:
    """The catalogue document for ``tokens`` (``VCCI_CATALOGUE``): factor choices valid in every organization
    (probed in each, which also caches each organization's factor resolution), and each one's suppliers."""
    spend, average = load_factor_choices(fetch_for(tokens[0]), workers=PROBE_WORKERS)
    for token in tokens[1:]:
        valid = set(probe(fetch_for(token), spend + average, workers=PROBE_WORKERS)[0])
        spend = [choice for choice in spend if choice in valid]
        average = [choice for choice in average if choice in valid]
    orgs = {}
    for token in tokens:
        catalogue = org_part(fetch_for(token), spend, average)
        orgs[token_key(token)] = {
            "suppliers": [asdict(supplier) for supplier in catalogue.suppliers],
            "supplier_specific": catalogue.supplier_specific,
        }
    return {
        "format": CATALOGUE_FORMAT,
        "spend": [asdict(choice) for choice in spend],
        "average": [asdict(choice) for choice in average],
        "orgs": orgs,
    }


def read_catalogue_file(path: str) -> tuple[list[FactorChoice], list[FactorChoice], dict[str, Any]]:
    """(spend, average, orgs by token key) from a ``build_catalogue_file`` document; SetupError if unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if document.get("format") != CATALOGUE_FORMAT:
            raise ValueError(f"format {document.get('format')!r}, expected {CATALOGUE_FORMAT}")
        spend = [FactorChoice(**choice) for choice in document["spend"]]
        average = [FactorChoice(**choice) for choice in document["average"]]
        return spend, average, dict(document["orgs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SetupError(f"{CATALOGUE_ENV}={path}: not a catalogue file ({exc})") from exc


# Loaded once per locust process (factors) and per token (suppliers); a lock per token so that users that
# start together wait for the first one's load instead of all loading the same data.
_factor_choices: tuple[list[FactorChoice], list[FactorChoice]] | None = None
_stored_orgs: dict[str, Any] = {}
_catalogues: dict[str, Catalogue] = {}
_factor_lock = threading.Lock()
_catalogue_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


def catalogue_for(token: str, fetch: Fetch) -> Catalogue:
    """The catalogue of ``token``'s organization, the first time from the ``VCCI_CATALOGUE`` file when it
    has this organization, else through ``fetch`` (the ``[setup]`` requests)."""
    global _factor_choices
    with _locks_lock:
        lock = _catalogue_locks.setdefault(token, threading.Lock())
    with lock:
        if token in _catalogues:
            return _catalogues[token]
        with _factor_lock:
            if _factor_choices is None:
                path = os.environ.get(CATALOGUE_ENV, "").strip()
                if path:
                    spend, average, orgs = read_catalogue_file(path)
                    _factor_choices = spend, average
                    _stored_orgs.update(orgs)
                else:
                    _factor_choices = load_factor_choices(fetch)
        spend, average = _factor_choices
        stored = _stored_orgs.get(token_key(token))
        if stored is not None:
            catalogue = Catalogue(
                spend=spend,
                average=average,
                suppliers=[SupplierRef(**supplier) for supplier in stored["suppliers"]],
                supplier_specific=bool(stored["supplier_specific"]),
            )
        else:
            catalogue = org_part(fetch, spend, average)
        _catalogues[token] = catalogue
        return catalogue


# -- the load generator's own event loop ---------------------------------------------------------------------------

# Where each locust process that runs users writes how late its event loop woke a greenlet (bench.loadtest sets it).
LOOP_LAG_ENV = "VCCI_LOOP_LAG_DIR"
LOOP_LAG_INTERVAL = 0.1  # seconds between two measurements
# Upper bounds (ms) of the counted ranges: the server's vcci_event_loop_lag_seconds buckets, so both read alike.
LOOP_LAG_BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
LOOP_LAG_WRITE_EVERY = 50  # measurements between two writes of the file (each replaces the last)


class LoopLag:
    """How late this process's event loop wakes a greenlet that asked to be woken.

    Every request a user has in flight is timed by locust through the same loop: while one greenlet holds it
    (decoding a large body, locust's own bookkeeping), every response that arrives meanwhile waits, and its time
    grows by the wait, which the server never saw. Counted per range of ``LOOP_LAG_BOUNDS_MS`` (the last: above
    them), with the worst, and written as JSON to ``<dir>/locust-<pid>.json``.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts = [0] * (len(LOOP_LAG_BOUNDS_MS) + 1)
        self.worst_ms = 0.0
        self.ticks = 0

    def observe(self, lag_ms: float) -> None:
        index = next((i for i, bound in enumerate(LOOP_LAG_BOUNDS_MS) if lag_ms <= bound), len(LOOP_LAG_BOUNDS_MS))
        self.counts[index] += 1
        self.worst_ms = max(self.worst_ms, lag_ms)

    def write(self) -> None:
        document = {"bounds_ms": LOOP_LAG_BOUNDS_MS, "counts": self.counts, "max_ms": round(self.worst_ms, 1)}
        temporary = f"{self.path}.tmp"
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(document, out)
        os.replace(temporary, self.path)  # a reader never sees half a file

    def tick(self, lag_seconds: float) -> None:
        """One measurement of ``perf.looplag.run``; the file is written every ``LOOP_LAG_WRITE_EVERY``."""
        self.observe(lag_seconds * 1000)
        self.ticks += 1
        if self.ticks % LOOP_LAG_WRITE_EVERY == 0:
            self.write()

    def run(self) -> None:
        looplag.run(LOOP_LAG_INTERVAL, self.tick)


_loop_lag: tuple[LoopLag, Any] | None = None


def users_directory(environment: Any, variable: str) -> str | None:
    """The directory the environment variable ``variable`` names, in a process that runs users (not the master of
    ``--processes``, which runs none); else None."""
    directory = os.environ.get(variable)
    return directory if directory and not isinstance(environment.runner, MasterRunner) else None


@events.test_start.add_listener
def measure_loop_lag(environment: Any, **kwargs: Any) -> None:
    """When ``VCCI_LOOP_LAG_DIR`` is set (``users_directory``)."""
    global _loop_lag
    directory = users_directory(environment, LOOP_LAG_ENV)
    if directory is None or _loop_lag is not None:
        return
    lag = LoopLag(os.path.join(directory, f"locust-{os.getpid()}.json"))
    _loop_lag = (lag, gevent.spawn(lag.run))


@events.test_stop.add_listener
def write_loop_lag(**kwargs: Any) -> None:
    global _loop_lag
    if _loop_lag is not None:
        lag, greenlet = _loop_lag
        greenlet.kill()
        lag.write()
        _loop_lag = None


# -- the request trace (bench.loadtest --trace) ---------------------------------------------------------------------

# Where each locust process that runs users records its requests (bench.loadtest sets it; the server records the same
# requests by id: perf/trace.py).
TRACE_ENV = "VCCI_TRACE_DIR"
# The keys under which a traced request's id and the moment it was answered travel in locust's request context, to
# the ``request`` event.
TRACE_ID, TRACE_ANSWERED = "vcci_trace_id", "vcci_trace_answered"


class RequestTrace:
    """This process's half of the request trace: each request gets an ``X-Request-ID`` (``t<pid>-<n>``, unique in the
    run), and locust's own record of it (the ``request`` event: its method and final name, its response time, the
    one the statistics count) is appended to ``<dir>/client-<pid>.tsv`` as a line: the id, the method and name, the
    times it was sent and answered (wall clock, ``time.time()``, as the server's half), the status (0: no response),
    whether it failed (the server's half says whether it opened a connection). Answered: when locust handed the read
    response to the user (``VcciUser.call`` notes it); sent: that less the response time, so the two span what
    locust timed (not the encoding of a request's body before it). One ``write`` per line: nothing is lost when the
    process is stopped."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.prefix = f"t{os.getpid()}-"
        self.sent = itertools.count(1)

    def next_id(self) -> str:
        return f"{self.prefix}{next(self.sent)}"

    def record(
        self, request_id: str, name: str, answered: float, response_ms: float, status: int, failed: bool
    ) -> None:
        sent = answered - response_ms / 1000
        line = f"{request_id}\t{name}\t{sent:.6f}\t{answered:.6f}\t{status}\t{int(failed)}\n"
        os.write(self.fd, line.encode())

    def close(self) -> None:
        os.close(self.fd)


_trace: RequestTrace | None = None


@events.test_start.add_listener
def start_trace(environment: Any, **kwargs: Any) -> None:
    """When ``VCCI_TRACE_DIR`` is set (``users_directory``)."""
    global _trace
    directory = users_directory(environment, TRACE_ENV)
    if directory is not None and _trace is None:
        _trace = RequestTrace(os.path.join(directory, f"client-{os.getpid()}.tsv"))


@events.request.add_listener
def trace_request(
    request_type: str, name: str, response_time: float, context: dict[str, Any] | None = None, response: Any = None,
    exception: Any = None, **kwargs: Any,
) -> None:  # fmt: skip
    traced = context or {}
    answered = traced.get(TRACE_ANSWERED)
    if _trace is None or answered is None:
        return
    status = getattr(response, "status_code", 0) or 0
    failed = exception is not None
    # As locust's statistics name it: method and name (GET and POST /activities/ are two entries).
    entry = f"{request_type} {name}"
    _trace.record(traced[TRACE_ID], entry, answered, response_time, status, failed)


@events.test_stop.add_listener
def stop_trace(**kwargs: Any) -> None:
    global _trace
    if _trace is not None:
        _trace.close()
        _trace = None


def reset() -> None:
    """Forget every loaded catalogue (tests; another database behind the same process)."""
    global _factor_choices
    _factor_choices = None
    _stored_orgs.clear()
    _catalogues.clear()
    _catalogue_locks.clear()


def relative(url: str) -> str:
    """``http://host/api/v1/x/?after=..`` -> ``/api/v1/x/?after=..``: the API's links are absolute."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


# -- the users ---------------------------------------------------------------------------------------


# A Reply's body not decoded yet.
_UNREAD: Any = object()
# A UTF-8 byte order mark: simdjson skips one before a document, orjson refuses it.
_BOM = b"\xef\xbb\xbf"


def read_json(content: bytes) -> tuple[Any, Any]:
    """``content`` checked as JSON, as orjson reads it: (its simdjson document, ``_UNREAD``), or, for a body whose
    reading the two libraries' grammars differ on (an integer beyond 64 bits, which simdjson refuses; a byte order
    mark, which it skips), (None, orjson's decoding). Raises ``ValueError`` when orjson refuses it: a body is JSON
    here exactly when it was when every body was decoded with orjson."""
    if not content.startswith(_BOM):
        try:
            return simdjson.Parser().parse(content), _UNREAD
        except (ValueError, RuntimeError):  # RuntimeError: nesting too deep, an integer beyond 64 bits
            pass
    return None, orjson.loads(content)


class Reply:
    """The outcome of one request: its status, whether it passed, and its JSON body (the remembered one for a 304),
    decoded only as far as it is read.

    Every JSON body is checked whole when it arrives (``read_json``: simdjson, a fraction of a full decode). ``data``
    decodes it into Python objects (orjson) on first read; ``get(key)`` reads one member of the top-level object
    without decoding the rest. Decoding every page whole was a third of the generator's CPU (py-spy on its processes at
    500 users), on the cores the server it measures runs on, while most callers read nothing of a page or only its
    ``next`` link.
    """

    __slots__ = ("_body", "_data", "_document", "ok", "status")

    def __init__(
        self, status: int, ok: bool, body: bytes | None = None, document: Any = None, data: Any = _UNREAD
    ) -> None:
        """Precondition: ``body``, when given, passed ``read_json``; ``document`` and ``data`` are what it returned
        (or are left out: the body is then read again when needed)."""
        self.status, self.ok = status, ok
        self._body, self._document = body, document
        self._data = data if body else None

    @property
    def data(self) -> Any:
        """The body as Python objects (None without one)."""
        if self._data is _UNREAD:
            assert self._body, "unread: there is a body"
            self._data = orjson.loads(self._body)
        return self._data

    def get(self, key: str) -> Any:
        """``data.get(key)`` without decoding the rest: strings, numbers, booleans and None as Python values, objects
        and arrays as simdjson's read-only views (indexable, iterable, with a length). None without a body."""
        if self._data is _UNREAD and self._document is None:
            assert self._body, "unread: there is a body"
            self._document, self._data = read_json(self._body)
        if self._data is not _UNREAD:
            return None if self._data is None else self._data.get(key)
        return self._document.get(key)


class VcciUser(FastHttpUser):
    """Token authentication, conditional requests and strict status checks shared by every scenario."""

    abstract = True
    token: str
    headers: dict[str, str]
    rng: random.Random
    # path -> (ETag, body as received). The bytes, not the decoded JSON: thousands of remembered pages as Python
    # objects outlive the young generations, and the cyclic collector's full passes over them took a third of the
    # generator's CPU (py-spy --native: gc_collect_main under orjson.loads). Bytes are not tracked by the collector.
    http_cache: OrderedDict[str, tuple[str, bytes]]

    def on_start(self) -> None:
        self.token = next_token()
        # Accept: what API clients send; the cached responses are keyed by the negotiated media type.
        self.headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        self.rng = random.Random()
        self.http_cache = OrderedDict()

    def call(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: Iterable[int] = (200,),
        body: Any = None,
        conditional: bool = False,
        parse: bool = True,
        check: Callable[[Any], str | None] | None = None,
    ) -> Reply:
        """Send one request, recorded under ``name``; anything but an ``expect``-ed status is a failure.

        ``conditional``: send ``If-None-Match`` with the ETag this user got for the same URL, and take
        a 304 as success, answering with the body remembered from then. ``parse``: read a JSON body.
        ``check(body)``: a message when an expected status carries a wrong body (also a failure).
        """
        expected = tuple(expect)
        headers = dict(self.headers)
        remembered = self.http_cache.get(path) if conditional else None
        if remembered is not None:
            headers["If-None-Match"] = remembered[0]
        context: dict[str, Any] = {}
        if _trace is not None:
            headers["X-Request-ID"] = context[TRACE_ID] = _trace.next_id()
        with self.client.request(
            method, path, name=name, headers=headers, json=body, catch_response=True, context=context
        ) as response:
            if TRACE_ID in context:
                # locust's own copy of the context, which its request event carries: the moment it was answered.
                response.request_meta["context"][TRACE_ANSWERED] = time.time()
            status = response.status_code
            retry_after = refused_for(response)
            if retry_after is not None:
                # Admission control said "not now" (503/429 + Retry-After): a refusal, counted apart from
                # failures under its own name, and honoured as a client should before its next request.
                response.request_meta["name"] = f"{name}{REFUSED_SUFFIX}"
                response.success()
            else:
                if remembered is not None and status == 304:
                    self.http_cache.move_to_end(path)
                    response.success()
                    return Reply(status, True, remembered[1])  # validated when it was remembered
                if status not in expected:
                    wanted = "/".join(map(str, expected))
                    response.failure(f"{method} {name}: expected {wanted}, got {describe(response)}")
                    return Reply(status, False)
                content = response.content
                body, document, data = None, None, _UNREAD
                if parse and status != 204:
                    try:
                        # Checked whole, decoded only as far as the caller reads (Reply).
                        document, data = read_json(content)
                    except ValueError:  # orjson.JSONDecodeError is one
                        response.failure(f"{method} {name}: {status} with a body that is not JSON: {excerpt(response)}")
                        return Reply(status, False)
                    body = content
                reply = Reply(status, True, body, document, data)
                problem = check(reply.data) if check is not None else None
                if problem:
                    response.failure(f"{method} {name}: {problem}")
                    reply.ok = False
                    return reply
                etag = response.headers.get("ETag") if response.headers is not None else None
                if conditional and etag:
                    self.remember(path, etag, body or b"")
                response.success()
                return reply
        gevent.sleep(retry_after)
        return Reply(status, False)

    def remember(self, path: str, etag: str, body: bytes) -> None:
        self.http_cache[path] = (etag, body)
        self.http_cache.move_to_end(path)
        while len(self.http_cache) > HTTP_CACHE_ENTRIES:
            self.http_cache.popitem(last=False)

    def fetch(self, method: str, path: str, body: Any, name: str) -> Any:
        """``Fetch`` for the catalogue loaders: the JSON answer, or SetupError."""
        reply = self.call(method, path, name=name, body=body)
        if not reply.ok:
            raise SetupError(f"{method} {path} failed (status {reply.status}); see the failures report.")
        return reply.data

    def catalogue(self) -> Catalogue:
        return catalogue_for(self.token, self.fetch)

    def follow(
        self, page: Reply, name: str, depth: int, *, conditional: bool, rows: bool = True
    ) -> list[dict[str, Any]]:
        """Follow ``page``'s ``next`` link up to ``depth`` times; every row seen (first page included) when ``rows``,
        else nothing (the pages are then never decoded: only their links are read)."""
        seen: list[dict[str, Any]] = list(page.data["results"]) if rows else []
        for _ in range(depth):
            link = page.get("next")
            if not link:
                break
            reply = self.call("GET", relative(link), name=name, conditional=conditional)
            if not reply.ok:
                break
            page = reply
            if rows:
                seen += page.data["results"]
        return seen


# Refusals are recorded under the request's name plus this suffix (bench.loadtest counts them apart).
REFUSED_SUFFIX = " (refused)"
REFUSAL_STATUSES = (429, 503)
# A Retry-After beyond this is capped: the run's users must keep going.
MAX_RETRY_AFTER = 30.0
# Requests made to build the catalogue (outside locust) are retried this many times in all when refused.
SETUP_ATTEMPTS = 20


def refused_for(response: Any) -> float | None:
    """Seconds to wait when ``response`` is a refusal (429 or 503 carrying ``Retry-After`` in seconds); else None.

    A 503 without ``Retry-After`` (or with an HTTP date) is a failure like any other unexpected status.
    """
    if response.status_code not in REFUSAL_STATUSES or response.headers is None:
        return None
    raw = response.headers.get("Retry-After")
    try:
        seconds = float(raw) if raw is not None else None
    except ValueError:
        return None
    if seconds is None or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def excerpt(response: Any) -> str:
    """The first ``EXCERPT_CHARS`` characters of a response body, on one line."""
    try:
        text = response.text or ""
    except Exception:  # a broken connection has no decodable body
        text = ""
    text = " ".join(text.split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


def describe(response: Any) -> str:
    """``"<status>: <body excerpt>"``, or the connection error when there was no response (status 0)."""
    if not response.status_code:
        return f"no response ({getattr(response, 'error', None) or 'connection failed'})"
    return f"{response.status_code}: {excerpt(response)}"


@dataclass
class DashboardFilters:
    """Filter values an analyst can pick, read from the organization's own summaries."""

    categories: list[int] = field(default_factory=list)
    months: list[str] = field(default_factory=list)  # "YYYY-MM", oldest first
    suppliers: list[int] = field(default_factory=list)  # the five largest emitters, largest first
    methods: list[str] = field(default_factory=list)


class AnalystUser(VcciUser):
    """A person on the emissions dashboard: summaries, the filtered list and its pages, details, an export."""

    weight = 12
    wait_time = think(1, 4)
    filters: DashboardFilters

    def on_start(self) -> None:
        super().on_start()
        self.filters = DashboardFilters()
        self.dashboard()
        self.summary("supplier", {})  # the supplier filter's choices

    @task(4)
    def dashboard(self) -> None:
        """The landing page, opened again and again (or auto-refreshed): totals by category and by month and
        the newest emissions. Revalidated with If-None-Match: 304s until the organization's data changes."""
        self.summary("category", {})
        self.summary("month", {})
        self.call("GET", f"{API}/emissions/", name=f"{API}/emissions/", conditional=True)

    def learn(self, group_by: str, data: Any) -> None:
        """Remember the filter values an unfiltered summary shows (what the dashboard's dropdowns offer)."""
        keys = [group["key"] for group in data["groups"] if group["key"] is not None]
        if group_by == "category":
            self.filters.categories = [int(key) for key in keys]
        elif group_by == "month":
            self.filters.months = [str(key) for key in keys]
        elif group_by == "supplier":
            self.filters.suppliers = [int(key) for key in keys[:5]]
        else:
            self.filters.methods = [str(key) for key in keys]

    def summary(self, group_by: str, params: dict[str, str]) -> None:
        query = urlencode({"group_by": group_by, **params})
        path, name = f"{API}/emissions/summary/?{query}", f"{API}/emissions/summary/"
        reply = self.call("GET", path, name=name, conditional=True)
        if reply.ok and not params:
            self.learn(group_by, reply.data)

    def period(self) -> dict[str, str]:
        """One of the last two years or four quarters with data, recent ones more often: what reports cover."""
        months = self.filters.months[::-1]  # newest first
        if not months:
            return {}
        if self.rng.random() < 0.5:
            year = ranked_choice(self.rng, sorted({m[:4] for m in months}, reverse=True)[:2])
            return {"period_from": f"{year}-01-01", "period_to": f"{year}-12-31"}
        quarters = sorted({(m[:4], (int(m[5:7]) - 1) // 3) for m in months}, reverse=True)[:4]
        year, quarter = ranked_choice(self.rng, quarters)
        first = dt.date(int(year), quarter * 3 + 1, 1)
        last = month_bounds(f"{year}-{quarter * 3 + 3:02d}")[1]
        return {"period_from": first.isoformat(), "period_to": last.isoformat()}

    def category(self) -> str:
        """A category with data, the largest emitters more often (the summary lists them largest first)."""
        return str(ranked_choice(self.rng, self.filters.categories))

    def list_filters(self) -> dict[str, str]:
        """No filter (35 %), a category, a period, a supplier, or category and period together."""
        roll = self.rng.random()
        params: dict[str, str] = {}
        if roll < 0.35:
            return params
        if roll < 0.55 and self.filters.categories:
            params["category"] = self.category()
        elif roll < 0.75:
            params.update(self.period())
        elif roll < 0.9 and self.filters.suppliers:
            params["supplier"] = str(ranked_choice(self.rng, self.filters.suppliers))
        elif self.filters.categories:
            params["category"] = self.category()
            params.update(self.period())
        return params

    @task(4)
    def browse_emissions(self) -> None:
        params = self.list_filters()
        path = f"{API}/emissions/" + (f"?{urlencode(params)}" if params else "")
        reply = self.call("GET", path, name=f"{API}/emissions/", conditional=True)
        if reply.ok:
            self.follow(reply, f"{API}/emissions/ (next page)", self.rng.randint(1, 3), conditional=True, rows=False)

    @task(2)
    def summaries(self) -> None:
        group_by = self.rng.choice(GROUP_BYS)
        roll = self.rng.random()
        params: dict[str, str] = {}
        if roll < 0.25:
            params = self.period()
        elif roll < 0.4 and group_by != "category" and self.filters.categories:
            params = {"category": self.category()}
        self.summary(group_by, params)

    @task(1)
    def emission_detail(self) -> None:
        reply = self.call("GET", f"{API}/emissions/", name=f"{API}/emissions/", conditional=True)
        results = reply.get("results") if reply.ok else None
        if results:
            row = ranked_choice(self.rng, results)  # the rows at the top get the clicks
            self.call("GET", f"{API}/emissions/{row['id']}/", name=f"{API}/emissions/{{id}}/", conditional=True)

    @task(1)
    def activities(self) -> None:
        params = {"category": self.category()} if self.filters.categories else {}
        path = f"{API}/activities/" + (f"?{urlencode(params)}" if params else "")
        self.call("GET", path, name=f"{API}/activities/", conditional=True)

    @task(1)
    def export_month(self) -> None:
        if not self.filters.months:
            return
        first, last = month_bounds(ranked_choice(self.rng, self.filters.months[::-1]))
        query = urlencode({"period_from": first.isoformat(), "period_to": last.isoformat()})
        # A download: never conditional, and the body is CSV.
        self.call("GET", f"{API}/emissions/export.csv?{query}", name=f"{API}/emissions/export.csv", parse=False)


class FactorSearchUser(VcciUser):
    """Someone looking for the right factor: searches with real words and filters, pages, details."""

    weight = 4
    wait_time = think(1, 3)
    seen_ids: list[int]

    def on_start(self) -> None:
        super().on_start()
        self.seen_ids = []

    @task(4)
    def search(self) -> None:
        params = {
            "search": ranked_choice(self.rng, SEARCH_WORDS),
            **ranked_choice(self.rng, SEARCH_FILTERS),
            "limit": "20",
        }
        reply = self.call("GET", f"{API}/factors/?{urlencode(params)}", name=f"{API}/factors/", conditional=True)
        if reply.ok:
            rows = self.follow(reply, f"{API}/factors/ (next page)", self.rng.randint(0, 2), conditional=True)
            self.seen_ids = [int(row["id"]) for row in rows][:50] or self.seen_ids

    @task(1)
    def detail(self) -> None:
        if self.seen_ids:
            factor_id = ranked_choice(self.rng, self.seen_ids)  # the first results get the clicks
            self.call("GET", f"{API}/factors/{factor_id}/", name=f"{API}/factors/{{id}}/", conditional=True)


class CalculatorClient(VcciUser):
    """An application calling the calculator on demand: single calculations, and batches of 10-200."""

    weight = 3
    wait_time = think(0.5, 2)

    @task(4)
    def calculate(self) -> None:
        body = random_calculation(self.rng, self.catalogue())
        self.call("POST", f"{API}/calculate/", name=f"{API}/calculate/", body=body, check=result_problem)

    @task(1)
    def calculate_batch(self) -> None:
        catalogue = self.catalogue()
        items = [random_calculation(self.rng, catalogue) for _ in range(self.rng.randint(10, 200))]

        def problem(data: Any) -> str | None:
            # A bad item fails alone inside a 200; any item error is a payload bug of this suite, so a failure.
            results = data.get("results", [])
            if len(results) != len(items):
                return f"{len(results)} results for {len(items)} items"
            for index, result in enumerate(results):
                if "error" in result:
                    return f"item {index} {items[index]} refused: {result['error']}"
            return None

        body = {"items": items}
        self.call("POST", f"{API}/calculate/batch/", name=f"{API}/calculate/batch/", body=body, check=problem)


def result_problem(data: Any) -> str | None:
    """What is wrong with a calculation result, if anything (it must carry ``co2e_kg``)."""
    return None if isinstance(data, dict) and "co2e_kg" in data else f"no co2e_kg in {str(data)[:EXCERPT_CHARS]}"


class SupplierMaintenance(VcciUser):
    """A procurement admin: the supplier list, creating and editing suppliers, deleting one of their own."""

    weight = 1
    wait_time = think(5, 15)
    created: list[int]
    listed: list[int]

    def on_start(self) -> None:
        super().on_start()
        self.created = []
        self.listed = []
        self.list_suppliers()  # the page the admin opens first

    @task(4)
    def list_suppliers(self) -> None:
        reply = self.call("GET", f"{API}/suppliers/?limit=50", name=f"{API}/suppliers/", conditional=True)
        if reply.ok:
            rows = self.follow(reply, f"{API}/suppliers/ (next page)", self.rng.randint(0, 2), conditional=True)
            # Suppliers this suite created may be deleted any moment by another simulated admin of the same
            # organization (a 404 that would be right, but not a success): only the others are opened.
            self.listed = [
                int(row["id"]) for row in rows if not str(row["external_id"]).startswith(OWN_SUPPLIER_PREFIX)
            ]

    @task(3)
    def view_supplier(self) -> None:
        choices = self.listed + self.created  # its own ones are deleted by itself only, then dropped from created
        if choices:
            supplier_id = self.rng.choice(choices)
            self.call("GET", f"{API}/suppliers/{supplier_id}/", name=f"{API}/suppliers/{{id}}/", conditional=True)

    @task(1)
    def create_and_edit(self) -> None:
        data = supplier_payload(self.rng, self.catalogue())
        reply = self.call("POST", f"{API}/suppliers/", name=f"{API}/suppliers/", body=data, expect=(201,))
        if not reply.ok:
            return
        supplier_id = int(reply.data["id"])
        self.created.append(supplier_id)
        detail, name = f"{API}/suppliers/{supplier_id}/", f"{API}/suppliers/{{id}}/"
        patch = {"name": f"{data['name']} (updated)", "country": self.rng.choice(COUNTRIES)}
        if self.call("PATCH", detail, name=name, body=patch).ok:
            self.call("GET", detail, name=name)

    @task(1)
    def delete_own(self) -> None:
        if self.created and self.rng.random() < 0.5:
            supplier_id = self.created.pop(self.rng.randrange(len(self.created)))
            self.call("DELETE", f"{API}/suppliers/{supplier_id}/", name=f"{API}/suppliers/{{id}}/", expect=(204,))


class ErpClient(VcciUser):
    """An ERP integration posting activity lines of recent months in batches of 50-500."""

    weight = 1
    wait_time = think(20, 60)

    @task
    def post_batch(self) -> None:
        catalogue = self.catalogue()
        # Mostly last month's invoices, sometimes a late one of the two months before.
        period = self.rng.choices(recent_months(dt.date.today(), 3), weights=(6, 3, 1))[0]
        batch = uuid.uuid4().hex[:10]
        items = [
            activity_line(self.rng, catalogue, period, f"ERP-{batch}-{i:04d}") for i in range(self.rng.randint(50, 500))
        ]

        def problem(data: Any) -> str | None:
            stored = len(data) if isinstance(data, list) else 0
            return None if stored == len(items) else f"{stored} activities stored for {len(items)} lines"

        self.call("POST", f"{API}/activities/", name=f"{API}/activities/", body=items, expect=(201,), check=problem)


# -- building the catalogue file (python locustfile.py --catalogue FILE --host URL) -------------------------


def http_fetch(host: str, token: str) -> Fetch:
    """A ``Fetch`` over plain urllib, authenticated with ``token``, for building the catalogue outside locust."""

    def fetch(method: str, path: str, body: Any, name: str) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in itertools.count(1):
            request = urllib.request.Request(host.rstrip("/") + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                # Refused for now (admission control): wait as told and ask again, a few times.
                retry_after = refused_for(SimpleNamespace(status_code=exc.code, headers=exc.headers))
                if retry_after is not None and attempt < SETUP_ATTEMPTS:
                    exc.close()
                    time.sleep(retry_after)
                    continue
                text = " ".join(exc.read().decode("utf-8", "replace").split())[:EXCERPT_CHARS]
                raise SetupError(f"{method} {path}: {exc.code}: {text}") from exc
            except (OSError, ValueError) as exc:
                raise SetupError(f"{method} {path}: {exc}") from exc
        raise AssertionError("unreachable")  # itertools.count never ends

    return fetch


def main(argv: Sequence[str] | None = None) -> int:
    """Write the catalogue file that ``VCCI_CATALOGUE`` points locust at (``bench/loadtest.py`` does, before the
    measured run: its factor reads and probe calculations are then not part of the run's statistics)."""
    parser = argparse.ArgumentParser(description="Build the load suite's payload catalogue from a running server.")
    parser.add_argument("--catalogue", required=True, help="JSON file to write")
    parser.add_argument("--host", required=True, help="Server base URL, e.g. http://127.0.0.1:8765")
    parser.add_argument(
        "--max-factors", type=int, default=None, help="At most this many spend and average-data factors (default all)"
    )
    options = parser.parse_args(argv)
    global FACTOR_LIMIT
    FACTOR_LIMIT = options.max_factors
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        found = tokens()
        document = build_catalogue_file(lambda token: http_fetch(options.host, token), found)
    except SetupError as exc:
        print(f"catalogue: {exc}", file=sys.stderr)
        return 1
    with open(options.catalogue, "w", encoding="utf-8") as handle:
        json.dump(document, handle)
    print(
        f"catalogue: {len(document['spend'])} spend and {len(document['average'])} average-data factor choices, "
        f"{sum(len(org['suppliers']) for org in document['orgs'].values())} suppliers in {len(found)} organization(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
