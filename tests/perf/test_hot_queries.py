"""The hot-query registry and the EXPLAIN summary."""

from __future__ import annotations

from typing import Any

import pytest

from emissions.models import Organization
from perf.hot_queries import HotQuery, explain, register, registry, summarize_plan, unregister


def _build(organization: Organization) -> Any:
    return Organization.objects.filter(pk=organization.pk)


def test_registry_discovers_each_apps_hot_queries_module() -> None:
    names = {query.name for query in registry()}
    required = {
        "emissions.list.first_page",
        "emissions.list.deep_page",
        "emissions.list.category",
        "emissions.list.supplier",
        "emissions.list.method",
        "emissions.summary.category",
        "emissions.summary.supplier",
        "emissions.summary.month",
        "emissions.summary.method",
        "factors.search",
        "factors.resolve",
        "suppliers.list",
    }
    assert required <= names


def test_register_rejects_a_different_query_under_a_taken_name() -> None:
    query = HotQuery("test.registry.one", _build, "emissions_organization_pkey", "emissions_organization")
    try:
        assert register(query) is query
        register(query)  # the same query again is harmless (a module imported twice)
        other = HotQuery("test.registry.one", _build, "other_idx", "emissions_organization")
        with pytest.raises(ValueError, match=r"test\.registry\.one"):
            register(other)
        assert [q for q in registry() if q.name == "test.registry.one"] == [query]
    finally:
        unregister("test.registry.one")
    assert "test.registry.one" not in {q.name for q in registry()}


def test_summarize_plan_collects_indexes_with_their_tables_seq_scans_time_and_buffers() -> None:
    explained = {
        "Execution Time": 1.25,
        "Plan": {
            "Node Type": "Limit",
            "Shared Hit Blocks": 40,
            "Shared Read Blocks": 2,
            "Plans": [
                {
                    "Node Type": "Nested Loop",
                    "Plans": [
                        {"Node Type": "Index Scan", "Index Name": "a_idx", "Relation Name": "t_a"},
                        {
                            "Node Type": "Bitmap Heap Scan",
                            "Relation Name": "t_b",
                            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "b_idx"}],
                        },
                        {"Node Type": "Seq Scan", "Relation Name": "t_c"},
                        {"Node Type": "Index Only Scan", "Index Name": "a_idx", "Relation Name": "t_a"},
                    ],
                }
            ],
        },
    }
    plan = summarize_plan(explained)
    assert plan.indexes == ["a_idx", "b_idx"]
    assert plan.index_tables == {"a_idx": "t_a", "b_idx": "t_b"}
    assert plan.seq_scans == ["t_c"]
    assert plan.nodes[0] == "Limit"
    assert "Index Scan on a_idx" in plan.nodes
    assert "Seq Scan on t_c" in plan.nodes
    assert (plan.time_ms, plan.shared_hit, plan.shared_read) == (1.25, 40, 2)


@pytest.mark.django_db
def test_explain_runs_explain_analyze_on_the_queryset(org: Organization) -> None:
    plan = explain(Organization.objects.filter(slug=org.slug))
    scans = [node for node in plan.nodes if node.endswith("emissions_organization") or "organization" in node]
    assert scans, plan.nodes  # the plan reads the organization table, by index or sequentially
    assert plan.time_ms >= 0
    # ANALYZE executed the query: the top node reports the row it found.
    assert plan.plan["Actual Rows"] == 1
