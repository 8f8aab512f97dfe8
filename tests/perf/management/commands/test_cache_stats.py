"""``manage.py cache_stats``: the counters every worker flushes to Redis, as a table or JSON, and their reset."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management.base import CommandError
from django.test import override_settings
from django.urls import reverse
from django_redis import get_redis_connection

from perf.cache import STATS_KEY, Namespace, TieredCache, tiered
from perf.management.commands.cache_stats import rows_from_hash
from tests.factories import EmissionFactory
from tests.helpers import call_command

pytestmark = pytest.mark.django_db

SUMMARY = reverse("emission-summary")
UNREACHABLE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1: connection refused
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25},
    }
}


def cache_stats(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("cache_stats", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def requests_made(api, org) -> dict[tuple[str, str, str], int]:
    """The same summary twice (computed, then from the cache); returns this process's counters, not yet flushed."""
    EmissionFactory.create(organization=org)
    for _ in range(2):
        assert api.get(SUMMARY, {"group_by": "category"}).status_code == 200
    return dict(tiered().stats.counts)


def test_json_is_every_workers_sum_and_parseable(requests_made):
    # Another worker's counters, already in the hash: the command adds this process's own to them.
    get_redis_connection("default").hincrby(STATS_KEY, "l1|suppliers|hit", 5)
    out, _ = cache_stats("--json")
    payload = json.loads(out)
    assert payload["scope"] == "all workers"
    rows = {(row["tier"], row["resource"]): row for row in payload["rows"]}
    for (tier, resource, event), n in requests_made.items():
        assert rows[(tier, resource)]["events"][event] == n, (tier, resource, event)
    assert rows[("l1", "suppliers")]["events"]["hit"] == 5
    # The second request was answered by the cache, the first computed the summary and stored it.
    emissions = {tier: rows[(tier, "emissions")]["events"] for tier in ("l1", "l2", "db")}
    assert emissions["l1"]["hit"] + emissions["l2"]["hit"] == 1
    assert emissions["db"]["compute"] == 1 and emissions["l2"]["store"] == 1
    assert rows[("l2", "emissions")]["calls"] > 0 and rows[("l2", "emissions")]["mean_ms"] > 0
    lookups = sum(n for (tier, _, event), n in requests_made.items() if tier == "l1" and event in ("hit", "miss"))
    assert payload["overall"]["lookups"] == lookups + 5
    assert payload["overall"]["answered"] == payload["overall"]["l1_hits"] + payload["overall"]["l2_hits"]
    assert 0 < payload["overall"]["share"] < 1


def test_table(requests_made):
    out, _ = cache_stats()
    assert out.startswith("Cache counters (all workers)\n")
    header = out.splitlines()[1].split()
    assert header[:2] == ["tier", "resource"] and header[-2:] == ["mean", "ms"]
    db_row = re.search(r"^db\s+emissions\s+0\s+0\s+-\s+0\s+0\s+0\s+0\s+1\s+\d+\.\d{3}$", out, re.M)
    assert db_row, out
    assert re.search(r"^l1\s+emissions\s+\d+\s+\d+\s+\d+\.\d%", out, re.M)
    assert re.search(r"^Overall: \d+\.\d% of \d+ lookups answered by L1 or L2", out, re.M)
    # Tiers in order l1, l2, db.
    tiers = [line.split()[0] for line in out.splitlines()[2:-1]]
    assert tiers == sorted(tiers, key=["l1", "l2", "db"].index)


def test_reset_empties_the_hash_after_printing(requests_made):
    redis = get_redis_connection("default")
    out, err = cache_stats("--reset")
    assert "emissions" in out
    assert "Counters reset." in err
    assert not redis.exists(STATS_KEY)
    # What is left: at most the timing of the flush the first run made (flushed by this one), no event.
    payload = json.loads(cache_stats("--json")[0])
    assert payload["overall"]["lookups"] == 0
    assert all(not any(row["events"].values()) for row in payload["rows"])


def test_no_counters_yet():
    assert cache_stats()[0] == "No cache counters yet (all workers).\n"


def test_without_redis_the_counters_are_this_process():
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        ns = [Namespace("emissions", 1)]
        for _ in range(2):
            assert tiered().get_or_compute(ns, "k", lambda: 1) == 1
        out, _ = cache_stats()
        assert "counters are per process" in out
        assert re.search(r"^l1\s+emissions\s+1\s+1\s+50\.0%", out, re.M)
        out, err = cache_stats("--json", "--reset")
        assert "counters are per process" in err
        payload = json.loads(out)
        assert payload["scope"] == "this process"
        assert payload["overall"]["lookups"] == 2 and payload["overall"]["l1_hits"] == 1
        assert tiered().stats.counts == {}


def test_redis_unreachable_is_an_error():
    with override_settings(CACHES=UNREACHABLE), pytest.raises(CommandError, match="Redis is unreachable"):
        cache_stats()


def test_rows_from_hash_reads_every_field_shape():
    rows = rows_from_hash(
        {
            b"db|factors|compute": b"3",
            b"db|factors|calls": b"3",
            b"db|factors|seconds": b"0.006",
            "l2|auth|hit": "7",
            b"not-a-field": b"1",
        }
    )
    assert [(r.tier, r.resource, r.events, r.calls) for r in rows] == [
        ("l2", "auth", {"hit": 7}, 0),
        ("db", "factors", {"compute": 3}, 3),
    ]
    assert rows[1].mean_ms == pytest.approx(2.0)
    assert rows[0].hit_rate == 1.0 and rows[1].hit_rate is None


def test_flushes_this_process_first(monkeypatch):
    flushed = []
    monkeypatch.setattr(TieredCache, "flush_stats", lambda self: flushed.append(self))
    cache_stats()
    assert flushed == [tiered()]
