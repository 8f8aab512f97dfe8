from __future__ import annotations

import pytest

from tests.ops.promql import exported_metric_names


@pytest.fixture
def exported(db: None) -> set[str]:
    """The sample names /metrics publishes (tests.ops.promql.exported_metric_names)."""
    return exported_metric_names()
