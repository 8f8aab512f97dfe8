"""ops/prometheus/alerts.yml: every metric it names is one /metrics exports, every alert is complete (for, severity,
summary, description, runbook), documented in docs/operations.md, and tested by alerts_test.yml both firing and
silent. promtool itself checks and runs those tests (make rules, part of make ci)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.promql import SCRAPE_SERIES, metric_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


ALERTS = alert_rules()
ALERT_IDS = [rule["alert"] for rule in ALERTS]


def test_metric_names_reads_promql_selectors_only():
    expression = (
        'histogram_quantile(0.95, sum by (job, le) (rate(a_bucket{job="vcci",view!~"x|y"}[5m]))) > 0.5'
        " and on (job) sum(rate(b_total[$__rate_interval] offset 1h)) without (instance) > 1e3"
        ' or label_replace(c, "dst", "$1", "src", "(.*)") unless up'
    )
    assert metric_names(expression) == {"a_bucket", "b_total", "c", "up"}


def test_the_rule_file_holds_the_alerts_the_operations_doc_describes():
    assert len(set(ALERT_IDS)) == len(ALERT_IDS), "alert names must be unique"
    assert {
        "VCCIHighLatencyP95",
        "VCCICacheHitRateLow",
        "VCCIDatabasePoolSaturated",
        "VCCIHighErrorRate",
        "VCCISlowQueries",
        "VCCIWorkerDown",
        "VCCIPostgreSQLDown",
        "VCCIRedisDown",
    } <= set(ALERT_IDS)


@pytest.mark.django_db
@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_every_metric_an_alert_uses_is_exported(rule, exported):
    used = metric_names(rule["expr"])
    assert used, f"no metric name found in {rule['alert']}'s expression"
    assert used - exported - SCRAPE_SERIES == set()


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_every_alert_waits_is_labelled_and_explained(rule):
    assert rule["for"], "an alert without `for:` pages on one bad evaluation"
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook"} <= set(annotations)
    assert annotations["runbook"].startswith(f"docs/operations.md#{rule['alert'].lower()}:")
    assert f"### {rule['alert']}" in OPERATIONS_DOC.read_text()


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_every_alert_has_a_unit_test_that_fires_it_and_one_where_it_stays_silent(rule):
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == rule["alert"]
    ]
    assert any(case["exp_alerts"] for case in cases), "no test fires it"
    assert any(not case["exp_alerts"] for case in cases), "no test shows it silent"
