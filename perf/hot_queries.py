"""The registry of hot queries: the database paths that must stay index-backed at scale.

Each app lists its own hot queries in a ``hot_queries`` module next to the code that issues
them (``emissions/hot_queries.py``) and registers them here::

    register(HotQuery("orders.list.first_page", build=..., expected_index="order_org_created_idx",
                      table=Order._meta.db_table))

``build(organization)`` returns the very QuerySet the application runs for that organization
(built with the same QuerySet methods, filter sets and paginator as the view), so that
``manage.py check_indexes`` explains the real query, not a look-alike. ``registry()`` imports
every installed app's ``hot_queries`` module on first use (like the admin's autodiscovery).

``explain()`` runs ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` on one query and reduces the plan
to what the check needs: the indexes used, the sequential scans and the time and buffers.
ANALYZE executes the query; every registered query is a read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models import QuerySet
from django.utils.module_loading import autodiscover_modules

from perf.registry import Registry

# Plan node types that read an index; "Index Name" names it.
INDEX_NODES = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


@dataclass(frozen=True)
class HotQuery:
    """A query the application runs often on a big table, and the index it must use.

    ``build(organization)`` returns the query for one of the domain's organizations (a
    ``perf.tenants.Tenant``; typed ``Any`` so that a builder may take the domain's model).
    ``table`` is the database table the expected index belongs to; ``check_indexes`` treats the
    query as failing when that table is large and the plan does not use ``expected_index``.
    """

    name: str
    build: Callable[[Any], QuerySet]
    expected_index: str
    table: str
    description: str = ""


_registry: Registry[HotQuery] = Registry("hot query")
_discovered = False


def register(query: HotQuery) -> HotQuery:
    """Add ``query`` to the registry; a second, different query under the same name is a ``ValueError``."""
    return _registry.add(query.name, query)


def unregister(name: str) -> None:
    """Remove a query (tests register throwaway ones); unknown names are ignored."""
    _registry.remove(name)


def registry() -> list[HotQuery]:
    """Every registered hot query, in registration order, after importing each app's ``hot_queries`` module."""
    global _discovered
    if not _discovered:
        autodiscover_modules("hot_queries")
        _discovered = True
    return list(_registry.items().values())


# -- EXPLAIN --------------------------------------------------------------------------------------


@dataclass
class PlanSummary:
    """What ``check_indexes`` needs from one ``EXPLAIN (ANALYZE, BUFFERS)`` plan."""

    indexes: list[str] = field(default_factory=list)  # indexes read, in plan order, without repeats
    index_tables: dict[str, str] = field(default_factory=dict)  # index -> the table it was read for
    seq_scans: list[str] = field(default_factory=list)  # tables read by a Seq Scan
    nodes: list[str] = field(default_factory=list)  # "Limit", "Index Scan on emission_org_period_idx", ...
    time_ms: float = 0.0  # execution time (planning excluded)
    shared_hit: int = 0  # buffers found in shared_buffers
    shared_read: int = 0  # buffers read from the OS / disk
    plan: dict[str, Any] = field(default_factory=dict)  # the raw top plan node


def _walk(node: dict[str, Any], relation: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every node with the table it reads; a Bitmap Index Scan reads for its Bitmap Heap Scan's table."""
    relation = node.get("Relation Name", relation if node["Node Type"].startswith("Bitmap") else "")
    yield node, relation
    for child in node.get("Plans", []):
        yield from _walk(child, relation)


def _node_label(node: dict[str, Any]) -> str:
    kind = node["Node Type"]
    if "Index Name" in node:
        return f"{kind} on {node['Index Name']}"
    if "Relation Name" in node:
        return f"{kind} on {node['Relation Name']}"
    return kind


def summarize_plan(explained: dict[str, Any]) -> PlanSummary:
    """Reduce one element of ``EXPLAIN (FORMAT JSON)`` output (``{"Plan": ..., "Execution Time": ...}``)."""
    top = explained["Plan"]
    summary = PlanSummary(
        time_ms=float(explained.get("Execution Time", 0.0)),
        # A node's buffer counts include its children's, so the top node holds the query's totals.
        shared_hit=int(top.get("Shared Hit Blocks", 0)),
        shared_read=int(top.get("Shared Read Blocks", 0)),
        plan=top,
    )
    for node, relation in _walk(top):
        summary.nodes.append(_node_label(node))
        if node["Node Type"] in INDEX_NODES and node["Index Name"] not in summary.indexes:
            summary.indexes.append(node["Index Name"])
            summary.index_tables[node["Index Name"]] = relation
        if node["Node Type"] == "Seq Scan" and node["Relation Name"] not in summary.seq_scans:
            summary.seq_scans.append(node["Relation Name"])
    return summary


def explain(queryset: QuerySet) -> PlanSummary:
    """Run ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` on ``queryset`` (executing it) on its database."""
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", params)
        raw = cursor.fetchone()[0]
    # psycopg decodes the json column; a str arrives only with custom type adapters.
    document = json.loads(raw) if isinstance(raw, str) else raw
    return summarize_plan(document[0])
