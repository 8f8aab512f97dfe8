"""``manage.py cache_stats``: hit rates and latency of the two-level cache, summed over every worker.

Each process counts its cache events (``perf.cache.Stats``) and adds them every few seconds to one
Redis hash, ``perf.cache.STATS_KEY`` (``TieredCache.flush_stats``), with fields
``tier|resource|event`` (counts), ``tier|resource|calls`` and ``tier|resource|seconds`` (latency).
This command flushes its own process's counters first, then prints one row per tier (l1, l2, db)
and resource, and the share of lookups the cache answered. Counters of the last few seconds of
other workers may not be flushed yet. Without Redis there is no shared hash: the command says so
and shows its own process's counters, which are those of this command only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from perf.cache import STATS_KEY, TIERS, Stats, TieredCache, tiered

EVENTS = ("hit", "miss", "promotion", "store", "wait", "error", "compute")


@dataclass
class Row:
    """One tier and resource: event counts and latency (``calls`` timed operations, ``seconds`` in all)."""

    tier: str
    resource: str
    events: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float | None:
        hits, misses = self.events.get("hit", 0), self.events.get("miss", 0)
        return hits / (hits + misses) if hits + misses else None

    @property
    def mean_ms(self) -> float | None:
        return self.seconds / self.calls * 1000 if self.calls else None

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "events": {event: self.events.get(event, 0) for event in sorted({*EVENTS, *self.events})},
            "hit_rate": self.hit_rate,
            "mean_ms": self.mean_ms,
        }


def _sort_key(row: Row) -> tuple[int, str]:
    return (TIERS.index(row.tier) if row.tier in TIERS else len(TIERS), row.resource)


def rows_from_hash(fields: dict[Any, Any]) -> list[Row]:
    """Rows from the Redis hash (bytes or str fields ``tier|resource|name``); unknown shapes are skipped."""
    rows: dict[tuple[str, str], Row] = {}
    for raw_field, raw_value in fields.items():
        name = raw_field.decode() if isinstance(raw_field, bytes) else str(raw_field)
        value = raw_value.decode() if isinstance(raw_value, bytes) else str(raw_value)
        parts = name.split("|")
        if len(parts) != 3:
            continue
        tier, resource, what = parts
        row = rows.setdefault((tier, resource), Row(tier, resource))
        if what == "seconds":
            row.seconds = float(value)
        elif what == "calls":
            row.calls = int(float(value))
        else:
            row.events[what] = int(float(value))
    return sorted(rows.values(), key=_sort_key)


def rows_from_stats(stats: Stats) -> list[Row]:
    """Rows from one process's counters."""
    rows: dict[tuple[str, str], Row] = {}
    for (tier, resource, event), n in dict(stats.counts).items():
        rows.setdefault((tier, resource), Row(tier, resource)).events[event] = n
    for (tier, resource), (calls, seconds) in dict(stats.latency).items():
        row = rows.setdefault((tier, resource), Row(tier, resource))
        row.calls, row.seconds = int(calls), seconds
    return sorted(rows.values(), key=_sort_key)


def overall(rows: list[Row]) -> dict[str, Any]:
    """Lookups (every one starts with an L1 hit or miss) and how many L1, L2 or a wait for another caller answered."""
    events: defaultdict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        for event, n in row.events.items():
            events[(row.tier, event)] += n
    lookups = events[("l1", "hit")] + events[("l1", "miss")]
    l1, l2 = events[("l1", "hit")], events[("l2", "hit")]
    waits = events[("l1", "wait")] + events[("l2", "wait")]
    answered = l1 + l2 + waits
    return {
        "lookups": lookups,
        "answered": answered,
        "l1_hits": l1,
        "l2_hits": l2,
        "waits": waits,
        "share": answered / lookups if lookups else None,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


class Command(BaseCommand):
    help = (
        "Print the two-level cache's counters summed over every worker (the Redis hash they flush to): hits, "
        "misses, hit rate, promotions, stores, waits, errors and mean latency per tier and resource."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table")
        parser.add_argument("--reset", action="store_true", help="Delete the counters after printing them")

    def handle(self, *args: Any, **options: Any) -> None:
        cache = tiered()
        if cache.has_l2:
            scope = "all workers"
            rows = self._shared_rows(cache)
        else:
            scope = "this process"
            note = (
                "No Redis configured (the default cache is not django_redis): counters are per process, so these "
                "are this command's own."
            )
            # On stderr with --json, so that stdout stays parseable.
            (self.stderr if options["json"] else self.stdout).write(note)
            rows = rows_from_stats(cache.stats)
        totals = overall(rows)
        if options["json"]:
            payload = {"scope": scope, "rows": [row.as_json() for row in rows], "overall": totals}
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            self._table(rows, totals, scope)
        if options["reset"]:
            self._reset(cache)

    @staticmethod
    def _redis(cache: TieredCache) -> Any:
        from django_redis import get_redis_connection

        return get_redis_connection(cache.alias or "default")

    def _shared_rows(self, cache: TieredCache) -> list[Row]:
        # Our own counters first, so a command run right after some requests in this process shows them.
        cache.flush_stats()
        try:
            fields = self._redis(cache).hgetall(STATS_KEY)
        except (RedisError, OSError) as exc:
            raise CommandError(
                f"Redis is unreachable, cannot read the cache counters: {type(exc).__name__}: {exc}"
            ) from exc
        return rows_from_hash(fields)

    def _reset(self, cache: TieredCache) -> None:
        if cache.has_l2:
            try:
                self._redis(cache).delete(STATS_KEY)
            except (RedisError, OSError) as exc:
                raise CommandError(f"Redis is unreachable, counters not reset: {type(exc).__name__}: {exc}") from exc
        else:
            cache.stats = Stats()
        self.stderr.write("Counters reset.")

    def _table(self, rows: list[Row], totals: dict[str, Any], scope: str) -> None:
        if not rows:
            self.stdout.write(f"No cache counters yet ({scope}).")
            return
        columns = ("hits", "misses", "hit rate", "promotions", "stores", "waits", "errors", "computes", "mean ms")
        header = f"{'tier':<5} {'resource':<10} " + " ".join(f"{c:>10}" for c in columns)
        self.stdout.write(f"Cache counters ({scope})")
        self.stdout.write(header)
        for row in rows:
            e = row.events
            values = [
                e.get("hit", 0),
                e.get("miss", 0),
                _percent(row.hit_rate),
                e.get("promotion", 0),
                e.get("store", 0),
                e.get("wait", 0),
                e.get("error", 0),
                e.get("compute", 0),
                "-" if row.mean_ms is None else f"{row.mean_ms:.3f}",
            ]
            self.stdout.write(f"{row.tier:<5} {row.resource:<10} " + " ".join(f"{v:>10}" for v in values))
        self.stdout.write(
            f"Overall: {_percent(totals['share'])} of {totals['lookups']} lookups answered by L1 or L2 "
            f"(L1 {totals['l1_hits']}, L2 {totals['l2_hits']}, after waiting {totals['waits']})"
        )
