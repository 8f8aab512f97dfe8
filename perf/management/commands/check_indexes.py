"""``manage.py check_indexes``: the operators' index check.

1. Declared: every index the models declare (``Meta.indexes`` and the index-backed constraints,
   ``UniqueConstraint``/``ExclusionConstraint``, of every installed app) exists on its table and is
   valid and ready (``pg_index.indisvalid``/``indisready``; a failed ``CREATE INDEX CONCURRENTLY``
   leaves an invalid one). A problem here fails the check.
2. Unused and overlapping indexes, reported without failing: non-unique indexes never scanned
   since the statistics were last reset (``pg_stat_user_indexes.idx_scan = 0``, read before step
   3's EXPLAINs count as scans), and indexes whose lookups another index on the same table already
   serves (identical, or its key columns a leading prefix of the other's, same method and predicate).
3. Hot queries: ``EXPLAIN (ANALYZE, BUFFERS)`` of every registered hot query (``perf.hot_queries``)
   for one organization (``--org``, else the one with the most data: ``perf.tenants``, as the domain
   registers it). A plan fails when it
   reads a large table (more than ``--min-rows`` rows: ``pg_class.reltuples``, or the collector's live
   row count when larger, as after a bulk load nobody has analyzed yet) with a Seq Scan,
   or when the query's table is large and the plan does not use the query's expected index. On a
   small table the planner may rightly prefer a Seq Scan: that is reported as a warning.

Exit status 0 when nothing failed, 1 otherwise (``CommandError``); ``--json`` prints one JSON
document on stdout either way. Planner statistics matter: after a bulk load run ``VACUUM ANALYZE``
(index-only scans also need the visibility map); stale statistics are reported as a warning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections, router
from django.db.models import UniqueConstraint

from perf import tenants
from perf.hot_queries import HotQuery, PlanSummary, explain, registry
from perf.tenants import Tenant, UnknownTenants

DEFAULT_MIN_ROWS = 100_000
# A table whose rows changed by more than this share since its last ANALYZE has stale statistics.
STALE_STATS_SHARE = 0.2


@dataclass
class DeclaredIndex:
    name: str
    table: str
    model: str
    kind: str  # "index" or "constraint"
    status: str = "ok"  # ok | missing | wrong_table | invalid


@dataclass
class IndexColumns:
    """One index's definition as the catalog stores it, per key column."""

    name: str
    table: str
    method: str
    unique: bool
    predicate: str | None
    keys: list[tuple[str, int, int]]  # (column or expression, operator class oid, collation oid)
    options: list[int]  # per key column: bit 0 DESC, bit 1 NULLS FIRST
    included: list[str]


@dataclass
class HotQueryResult:
    name: str
    table: str
    table_rows: int
    expected_index: str
    indexes_used: list[str] = field(default_factory=list)  # every index the plan reads
    table_indexes_used: list[str] = field(default_factory=list)  # those read for ``table``
    seq_scans: list[dict[str, Any]] = field(default_factory=list)
    plan_nodes: list[str] = field(default_factory=list)
    time_ms: float | None = None
    buffers: dict[str, int] = field(default_factory=dict)
    status: str = "ok"  # ok | warn | fail
    problems: list[str] = field(default_factory=list)


# -- catalog reads -------------------------------------------------------------------------------


def declared_indexes(using: str = DEFAULT_DB_ALIAS) -> list[DeclaredIndex]:
    """Indexes the installed models declare: ``Meta.indexes`` plus constraints PostgreSQL backs with an index."""
    declared = []
    for model in apps.get_models(include_auto_created=True):
        opts = model._meta
        if not opts.managed or opts.proxy or opts.swapped or not router.allow_migrate_model(using, model):
            continue
        label = opts.label
        for index in opts.indexes:
            declared.append(DeclaredIndex(str(index.name), opts.db_table, label, "index"))
        for constraint in opts.constraints:
            # UniqueConstraint is a unique index; ExclusionConstraint (contrib.postgres) a GiST/SP-GiST one.
            if isinstance(constraint, UniqueConstraint) or type(constraint).__name__ == "ExclusionConstraint":
                declared.append(DeclaredIndex(constraint.name, opts.db_table, label, "constraint"))
    return declared


def _index_catalog(using: str) -> dict[str, tuple[str, bool, bool]]:
    """``{index name: (table, indisvalid, indisready)}`` for the schemas on the search path."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, t.relname, x.indisvalid, x.indisready
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = i.relnamespace
            WHERE n.nspname = ANY (current_schemas(false))
            """
        )
        return {name: (table, valid, ready) for name, table, valid, ready in cursor.fetchall()}


def check_declared(using: str = DEFAULT_DB_ALIAS) -> list[DeclaredIndex]:
    catalog = _index_catalog(using)
    results = declared_indexes(using)
    for declared in results:
        found = catalog.get(declared.name)
        if found is None:
            declared.status = "missing"
        elif found[0] != declared.table:
            declared.status = "wrong_table"
        elif not (found[1] and found[2]):
            declared.status = "invalid"
    return results


def _django_tables(using: str) -> list[str]:
    return sorted(connections[using].introspection.django_table_names(only_existing=True, include_views=False))


def unused_indexes(using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """Non-unique indexes on Django's tables never scanned since the statistics were last reset.

    Unique and primary-key indexes are left out: they enforce a constraint whether or not a query reads them.
    """
    with connections[using].cursor() as cursor:
        cursor.execute(
            """
            SELECT s.indexrelname, s.relname, pg_relation_size(s.indexrelid)
            FROM pg_stat_user_indexes s
            JOIN pg_index x ON x.indexrelid = s.indexrelid
            WHERE s.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary
              AND s.schemaname = ANY (current_schemas(false)) AND s.relname = ANY (%s)
            ORDER BY pg_relation_size(s.indexrelid) DESC, s.relname, s.indexrelname
            """,
            [_django_tables(using)],
        )
        return [{"index": name, "table": table, "size_bytes": size} for name, table, size in cursor.fetchall()]


def _index_columns(using: str) -> list[IndexColumns]:
    with connections[using].cursor() as cursor:
        cursor.execute(
            """
            SELECT i.relname, t.relname, am.amname, x.indisunique OR x.indisprimary,
                   pg_get_expr(x.indpred, x.indrelid), x.indnkeyatts, k.n,
                   pg_get_indexdef(x.indexrelid, k.n, true),
                   x.indclass[k.n - 1], x.indcollation[k.n - 1], x.indoption[k.n - 1]
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_am am ON am.oid = i.relam
            JOIN pg_namespace ns ON ns.oid = t.relnamespace
            CROSS JOIN LATERAL generate_series(1, x.indnatts) AS k(n)
            WHERE ns.nspname = ANY (current_schemas(false)) AND t.relname = ANY (%s) AND x.indisvalid
            ORDER BY t.relname, i.relname, k.n
            """,
            [_django_tables(using)],
        )
        indexes: dict[str, IndexColumns] = {}
        for name, table, method, unique, predicate, key_count, n, column, opclass, collation, option in cursor:
            index = indexes.setdefault(name, IndexColumns(name, table, method, unique, predicate, [], [], []))
            if n <= key_count:
                index.keys.append((column, opclass or 0, collation or 0))
                index.options.append(option or 0)
            else:
                index.included.append(column)
    return list(indexes.values())


def _serves(a: IndexColumns, b: IndexColumns) -> str | None:
    """``"duplicate"``/``"overlapping"`` when index ``b`` serves every lookup ``a`` does, else None.

    ``a``'s key columns must be a leading prefix of ``b``'s (an exact match for non-B-tree methods),
    with the same sort directions or all of them reversed (a B-tree scans backwards for free), the
    same predicate, and ``b`` must hold every column ``a`` includes.
    """
    if a.name == b.name or a.table != b.table or a.method != b.method or a.predicate != b.predicate:
        return None
    size = len(a.keys)
    if a.method == "btree":
        if size > len(b.keys) or b.keys[:size] != a.keys:
            return None
        flipped = [option ^ 3 for option in a.options]
        if b.options[:size] not in (a.options, flipped):
            return None
    elif a.keys != b.keys or a.options != b.options:
        return None
    if not set(a.included) <= {column for column, _, _ in b.keys} | set(b.included):
        return None
    if a.keys == b.keys and a.options == b.options and set(a.included) == set(b.included):
        return "duplicate"
    return "overlapping"


def overlapping_indexes(using: str = DEFAULT_DB_ALIAS) -> list[dict[str, Any]]:
    """Indexes another index on the same table makes redundant for lookups (unique ones excepted).

    An overlapping index may still earn its keep (it is smaller, or a foreign key's own index
    Django creates); this is a report for a human, not a failure.
    """
    indexes = _index_columns(using)
    found = []
    reported: set[frozenset[str]] = set()
    for a in indexes:
        if a.unique:
            continue
        for b in indexes:
            kind = _serves(a, b)
            if kind is None or (kind == "duplicate" and frozenset((a.name, b.name)) in reported):
                continue
            reported.add(frozenset((a.name, b.name)))
            found.append(
                {
                    "index": a.name,
                    "covered_by": b.name,
                    "table": a.table,
                    "kind": kind,
                    "columns": [column for column, _, _ in a.keys],
                    "covered_by_columns": [column for column, _, _ in b.keys],
                }
            )
    return found


def table_stats(tables: set[str], using: str = DEFAULT_DB_ALIAS) -> dict[str, dict[str, Any]]:
    """``{table: {"rows": estimated rows, "stale": bool}}``.

    Rows are ``pg_class.reltuples`` (the planner's figure, -1 before the first ANALYZE) or the live
    row count the statistics collector keeps through inserts, whichever is larger: right after a
    bulk load the planner's figure is missing or far too low, and the table must still count as large.
    """
    if not tables:
        return {}
    with connections[using].cursor() as cursor:
        cursor.execute(
            """
            SELECT c.relname, c.reltuples, COALESCE(s.n_live_tup, 0), s.n_mod_since_analyze,
                   COALESCE(s.last_analyze, s.last_autoanalyze) IS NOT NULL
            FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
            WHERE n.nspname = ANY (current_schemas(false)) AND c.relkind IN ('r', 'p') AND c.relname = ANY (%s)
            """,
            [sorted(tables)],
        )
        stats = {}
        for table, reltuples, live, modified, analyzed in cursor.fetchall():
            rows = max(int(reltuples), int(live), 0)
            stale = not analyzed or (modified or 0) > STALE_STATS_SHARE * max(rows, 1)
            stats[table] = {"rows": rows, "stale": stale}
    return stats


# -- hot queries ---------------------------------------------------------------------------------


def check_hot_query(
    query: HotQuery, organization: Tenant, *, min_rows: int, using: str = DEFAULT_DB_ALIAS
) -> HotQueryResult:
    """Explain one hot query and judge its plan against ``min_rows``."""
    result = HotQueryResult(name=query.name, table=query.table, table_rows=0, expected_index=query.expected_index)
    try:
        plan: PlanSummary = explain(query.build(organization))
    except Exception as exc:  # a broken registration must show up as a failed row, not abort the report
        result.status = "fail"
        result.problems.append(f"could not build or explain: {type(exc).__name__}: {exc}")
        return result
    stats = table_stats({query.table, *plan.seq_scans}, using)
    result.table_rows = stats.get(query.table, {"rows": 0})["rows"]
    result.indexes_used = plan.indexes
    result.table_indexes_used = [name for name in plan.indexes if plan.index_tables.get(name) == query.table]
    result.plan_nodes = plan.nodes
    result.time_ms = round(plan.time_ms, 3)
    result.buffers = {"shared_hit": plan.shared_hit, "shared_read": plan.shared_read}
    failures, warnings = [], []
    for table in plan.seq_scans:
        rows = stats.get(table, {"rows": 0})["rows"]
        large = rows > min_rows
        result.seq_scans.append({"table": table, "rows": rows, "large": large})
        if large:
            failures.append(f"Seq Scan on {table} ({rows:,} rows > --min-rows {min_rows:,})")
    if query.expected_index not in plan.indexes:
        message = f"expected index {query.expected_index} not used"
        if result.table_rows > min_rows:
            failures.append(f"{message} ({query.table}: {result.table_rows:,} rows > --min-rows {min_rows:,})")
        else:
            warnings.append(f"{message}; {query.table} is small ({result.table_rows:,} rows), a Seq Scan may be right")
    stale = sorted(table for table, info in stats.items() if info["stale"])
    if stale:
        warnings.append(f"planner statistics stale or missing for {', '.join(stale)}: run ANALYZE")
    result.problems = failures + warnings
    result.status = "fail" if failures else "warn" if warnings else "ok"
    return result


# -- output --------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def _node_types(nodes: list[str]) -> str:
    """Plan node types top-down, repeats counted: ``Limit > Nested Loop x3 > Index Scan x4 > Memoize x3``."""
    counts: dict[str, int] = {}
    for node in nodes:
        kind = node.split(" on ", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    return " > ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in counts.items())


class Command(BaseCommand):
    help = (
        "Check that declared indexes exist and are valid, report unused and overlapping indexes, and EXPLAIN "
        "the registered hot queries; exit 1 if an index is missing/invalid or a hot query is not index-backed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON document instead of tables")
        parser.add_argument(
            "--min-rows",
            type=int,
            default=DEFAULT_MIN_ROWS,
            help=f"Tables with more rows (pg_class.reltuples) are large: no Seq Scan (default {DEFAULT_MIN_ROWS:,})",
        )
        parser.add_argument("--org", help="Slug of the organization to explain (default: the one with the most data)")

    def handle(self, *args: Any, **options: Any) -> None:
        # Hot queries are built on the default database (their managers' default), so the check runs there.
        using = DEFAULT_DB_ALIAS
        min_rows: int = options["min_rows"]
        if min_rows < 0:
            raise CommandError(f"--min-rows must be 0 or more; got {min_rows}.")
        if connections[using].vendor != "postgresql":
            raise CommandError(f"check_indexes needs PostgreSQL; database '{using}' is {connections[using].vendor}.")
        organizations = tenants.registered()
        organization: Tenant | None
        if options["org"]:
            try:
                [organization] = organizations.named([options["org"]])
            except UnknownTenants as exc:
                raise CommandError(f"--org: no organization with slug '{options['org']}'.") from exc
        else:
            organization = organizations.largest()

        declared = check_declared(using)
        # Before the EXPLAINs below, which would count as scans of the indexes they use.
        unused = unused_indexes(using)
        overlapping = overlapping_indexes(using)
        hot = (
            [check_hot_query(q, organization, min_rows=min_rows, using=using) for q in registry()]
            if organization is not None
            else []
        )
        expected = {q.expected_index for q in registry()}
        unregistered = sorted(d.name for d in declared if d.kind == "index" and d.name not in expected)

        failures = [f"index {d.name} on {d.table} ({d.model}): {d.status}" for d in declared if d.status != "ok"]
        failures += [f"hot query {r.name}: {'; '.join(r.problems)}" for r in hot if r.status == "fail"]
        report = {
            "ok": not failures,
            "min_rows": min_rows,
            "organization": None if organization is None else {"id": organization.pk, "slug": organization.slug},
            "declared": [asdict(d) for d in declared],
            "unused": unused,
            "overlapping": overlapping,
            "unregistered": unregistered,
            "hot_queries": [asdict(r) for r in hot],
            "failures": failures,
        }
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self._write_human(report, declared, hot)
        if failures:
            raise CommandError(f"check_indexes: {len(failures)} failure(s).", returncode=1)

    def _write_human(self, report: dict[str, Any], declared: list[DeclaredIndex], hot: list[HotQueryResult]) -> None:
        out = self.stdout
        bad = [d for d in declared if d.status != "ok"]
        out.write(f"Declared indexes: {len(declared) - len(bad)} of {len(declared)} present and valid.")
        for d in bad:
            out.write(self.style.ERROR(f"  {d.status.upper()}: {d.name} on {d.table} ({d.model}, {d.kind})"))

        out.write(f"\nUnused indexes (idx_scan = 0 since the statistics were reset): {len(report['unused'])}")
        for u in report["unused"]:
            out.write(f"  {u['index']} on {u['table']} ({u['size_bytes'] / 1024:,.0f} KiB)")
        out.write(f"\nOverlapping indexes (a lookup the other also serves): {len(report['overlapping'])}")
        for o in report["overlapping"]:
            out.write(
                f"  {o['kind']}: {o['index']} ({', '.join(o['columns'])}) is covered by {o['covered_by']} "
                f"({', '.join(o['covered_by_columns'])}) on {o['table']}"
            )
        if report["unregistered"]:
            out.write("\nDeclared indexes no registered hot query expects: " + ", ".join(report["unregistered"]))

        organization = report["organization"]
        if organization is None:
            out.write(self.style.WARNING("\nHot queries: skipped, there is no organization to explain."))
        else:
            out.write(
                f"\nHot queries for organization '{organization['slug']}' "
                f"(large table: more than {report['min_rows']:,} rows):"
            )
            rows = [
                [
                    r.name,
                    r.expected_index,
                    ", ".join(r.table_indexes_used) or "-",
                    _node_types(r.plan_nodes),
                    "-" if r.time_ms is None else f"{r.time_ms:.2f}",
                    f"{r.buffers.get('shared_hit', 0)}/{r.buffers.get('shared_read', 0)}",
                    r.status.upper(),
                ]
                for r in hot
            ]
            headers = [
                "query",
                "index expected",
                "index used (on its table)",
                "plan nodes",
                "time ms",
                "buffers hit/read",
                "status",
            ]
            out.write(_table(headers, rows))
            for r in hot:
                for problem in r.problems:
                    style = self.style.ERROR if r.status == "fail" else self.style.WARNING
                    out.write(style(f"  {r.name}: {problem}"))

        if report["failures"]:
            out.write(self.style.ERROR(f"\nFAILED: {len(report['failures'])} failure(s)."))
        else:
            warned = sum(r.status == "warn" for r in hot)
            note = f" ({warned} warning(s) above)" if warned else ""
            out.write(self.style.SUCCESS(f"\nOK: every declared index is valid, no hot query failed{note}."))
