"""What the operator files (ops/) may name: the metric names in a PromQL expression, and the names /metrics exports.

The alert rules and the dashboard are text the code does not import, so a renamed or removed metric would leave
them silently empty. The tests of ops/ compare every metric name their queries use with the names the app's
/metrics really publishes, after requests that create django-prometheus's metrics and move the project's own.
"""

from __future__ import annotations

import re

from django.db import connection
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

# Series Prometheus writes itself for every scrape, not the application.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# The process and runtime collectors' families (process_*, python_*): served by a single process (tests, runserver),
# not by a gunicorn server in multiprocess mode, so no rule or panel may rely on them.
SINGLE_PROCESS_PREFIXES = ("process_", "python_")

# PromQL words that look like names: binary operators, modifiers, and the values inf and nan.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left", "group_right", "offset"}
    | {"inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|\w+)")
# A name not preceded by a name character, a digit or a dot (1e3, 0.5), and not a function call.
_NAME = re.compile(r"(?<![\w.:$])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:])(?!\s*\()")

# Sample names a metric family of each type exposes (prometheus_client, text format 0.0.4).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects (PromQL, with Grafana's ``$variables`` allowed)."""
    text = _STRING.sub(" ", expression)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _NAME.findall(text) if name not in KEYWORDS}


def exported_metric_names(client: Client | None = None) -> set[str]:
    """Every sample name ``/metrics`` publishes in production, after requests that create and move the app's metrics.

    A labelled metric that nothing has moved yet (no admission refusal, say) is published as its ``# TYPE``
    line only; its sample names follow from its type. Needs database access (``/readyz``, the scrape's checks).
    """
    client = client or Client()
    for path in ("/healthz", "/readyz", "/api/v1/factors/", "/no-such-page"):
        client.get(path)
    with override_settings(SLOW_QUERY_MS=0), connection.cursor() as cursor:  # a slow query: vcci_db_slow_query_seconds
        cursor.execute("SELECT 1")
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    names: set[str] = set()
    for family in text_string_to_metric_families(response.content.decode()):
        if family.name.startswith(SINGLE_PROCESS_PREFIXES):
            continue
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
