"""The domain's Prometheus metrics: calculations, stored batch sizes and imports.

They live with the domain because they name it (categories, methods, activities); the runtime layer
(``perf.metrics``) serves them at ``/metrics`` with its own, from the same registry and in the same
multiprocess mode. docs/serving.md lists every name.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from perf.metrics import child

INF = float("inf")
# activities_create calls: one API item up to the API's 10,000, import batches of 5,000, larger seed batches.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, INF)

CALCULATIONS = Counter(
    "vcci_calculations_total",
    "Successful calculations (emissions.calculation.calculate), by GHG Scope 3 category and method.",
    ["category", "method"],
)
ACTIVITY_BATCH_SIZE = Histogram(
    "vcci_activity_batch_size",
    "Activities stored per activities_create call (an API POST, an import or seed batch).",
    buckets=BATCH_BUCKETS,
)
IMPORT_ROWS = Counter("vcci_import_rows_total", "Rows written by committed import_activities runs.")
IMPORT_SECONDS = Counter(
    "vcci_import_seconds_total",
    "Wall time of committed import_activities runs; rows/s = rate(vcci_import_rows_total) / rate(this).",
)


def count_calculation(category: int, method: str) -> None:
    """One successful calculation of ``category`` (1-15) by ``method`` (a ``Method`` value)."""
    child(CALCULATIONS, str(category), method).inc()


def observe_activity_batch(size: int) -> None:
    """``size`` activities stored by one ``activities_create`` call."""
    ACTIVITY_BATCH_SIZE.observe(size)


def record_import(rows: int, seconds: float) -> None:
    """A committed ``import_activities`` run: ``rows`` written in ``seconds`` of wall time."""
    IMPORT_ROWS.inc(rows)
    IMPORT_SECONDS.inc(seconds)
