"""ops/grafana/vcci.json: valid JSON for Grafana, every panel on the Prometheus datasource variable, and every query
(panels and variables) naming only metrics /metrics exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ops.promql import SCRAPE_SERIES, metric_names

DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "vcci.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# label_values(<series selector>, <label>): the selector is PromQL, the label is not a metric.
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*\w+\)$")


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def graph_panels() -> list[dict[str, Any]]:
    return [panel for panel in panels(load()) if panel["type"] != "row"]


GRAPHS = graph_panels()


def test_the_dashboard_has_a_prometheus_datasource_variable_and_unique_panel_ids():
    dashboard = load()
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]


def test_the_dashboard_shows_what_the_operations_doc_promises():
    queries = " ".join(target["expr"] for panel in GRAPHS for target in panel["targets"])
    for metric in (
        "django_http_requests_latency_seconds_by_view_method_bucket",  # latency per endpoint
        "django_http_responses_total_by_status_view_method_total",  # throughput and errors
        "vcci_cache_events_total",  # cache tiers
        "vcci_db_pool_connections",  # pool in use / size
        "vcci_db_pool_requests_queued_total",  # pool waits
        "vcci_db_slow_query_seconds_count",  # slow queries
        "vcci_admission_refused_total",  # admission refusals
        "vcci_admission_retry_after_seconds_bucket",  # the Retry-After they told (operations.md's runbook)
    ):
        assert metric in queries, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (view, le)" in queries


@pytest.mark.parametrize("panel", GRAPHS, ids=[panel["title"] for panel in GRAPHS])
def test_every_panel_queries_the_datasource_variable(panel):
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"]
    assert all(target["datasource"] == DATASOURCE for target in panel["targets"])


@pytest.mark.django_db
@pytest.mark.parametrize("panel", GRAPHS, ids=[panel["title"] for panel in GRAPHS])
def test_every_panel_uses_only_exported_metrics(panel, exported):
    for target in panel["targets"]:
        used = metric_names(target["expr"])
        assert used, f"no metric name found in {target['expr']!r}"
        assert used - exported - SCRAPE_SERIES == set(), target["refId"]


@pytest.mark.django_db
def test_every_variable_query_uses_only_exported_metrics(exported):
    queries = [variable for variable in load()["templating"]["list"] if variable["type"] == "query"]
    assert queries
    for variable in queries:
        match = LABEL_VALUES.match(variable["query"]["query"])
        assert match, variable["name"]
        assert metric_names(match["selector"]) - exported - SCRAPE_SERIES == set(), variable["name"]
