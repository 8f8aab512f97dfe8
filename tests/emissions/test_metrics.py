"""emissions.metrics: the domain's counters move with the work they count (this process's registry)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from emissions.models import ActivityRecord
from tests.emissions.api.payloads import activity_input, electricity_input
from tests.helpers import call_command


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_a_calculation_is_counted_by_category_and_method(api, electricity_factor):
    labels = {"category": "3", "method": "activity"}
    before = sample("vcci_calculations_total", **labels)
    assert api.post("/api/v1/calculate/", electricity_input(), format="json").status_code == 200
    assert sample("vcci_calculations_total", **labels) == before + 1
    # A refused calculation (400) is not one.
    bad = api.post("/api/v1/calculate/", electricity_input(unit="kg"), format="json")
    assert bad.status_code == 400
    assert sample("vcci_calculations_total", **labels) == before + 1
    batch = [electricity_input(), electricity_input(category=1), electricity_input()]
    assert api.post("/api/v1/calculate/batch/", {"items": batch}, format="json").status_code == 200
    assert sample("vcci_calculations_total", **labels) == before + 3
    assert sample("vcci_calculations_total", category="1", method="activity") >= 1


@pytest.mark.django_db
def test_stored_activities_are_observed_as_one_batch(api, electricity_factor):
    count, total = sample("vcci_activity_batch_size_count"), sample("vcci_activity_batch_size_sum")
    response = api.post("/api/v1/activities/", [activity_input(), activity_input(), activity_input()], format="json")
    assert response.status_code == 201
    assert sample("vcci_activity_batch_size_count") == count + 1
    assert sample("vcci_activity_batch_size_sum") == total + 3


@pytest.mark.django_db
def test_a_committed_import_counts_its_rows_and_time(org, electricity_factor, tmp_path: Path):
    path = tmp_path / "activities.csv"
    rows = "".join(f"3,activity,desnz:7_400_4000_5,{n},kWh,2025-01-01,2025-01-31\n" for n in range(1, 8))
    path.write_text("category,method,activity,amount,unit,period_start,period_end\n" + rows)
    before_rows, before_seconds = sample("vcci_import_rows_total"), sample("vcci_import_seconds_total")
    call_command("import_activities", str(path), org=org.slug, dry_run=True, no_progress=True, stdout=io.StringIO())
    assert sample("vcci_import_rows_total") == before_rows  # a dry run writes nothing
    call_command("import_activities", str(path), org=org.slug, no_progress=True, stdout=io.StringIO())
    assert ActivityRecord.objects.filter(organization=org).count() == 7
    assert sample("vcci_import_rows_total") == before_rows + 7
    assert sample("vcci_import_seconds_total") > before_seconds
