"""The OpenAPI schema builds and validates with no warnings."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import call_command


@pytest.mark.django_db
def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    paths = schema["paths"]
    for path in [
        "/api/v1/factors/",
        "/api/v1/suppliers/{id}/",
        "/api/v1/calculate/",
        "/api/v1/calculate/batch/",
        "/api/v1/activities/",
        "/api/v1/emissions/",
        "/api/v1/emissions/summary/",
    ]:
        assert path in paths
    emission_params = {p["name"] for p in paths["/api/v1/emissions/"]["get"]["parameters"]}
    assert {"limit", "after", "before", "category", "supplier", "period_from", "period_to"} <= emission_params
    params = {p["name"]: p for p in paths["/api/v1/emissions/"]["get"]["parameters"]}
    # Whole numbers: a decimal is a 400, not a truncated id.
    assert params["supplier"]["schema"]["type"] == "integer"
    factor_params = {p["name"]: p for p in paths["/api/v1/factors/"]["get"]["parameters"]}
    assert factor_params["year"]["schema"]["type"] == "integer"
    summary_params = {p["name"]: p for p in paths["/api/v1/emissions/summary/"]["get"]["parameters"]}
    assert "month: chronological" in summary_params["group_by"]["description"]
    activity_input = schema["components"]["schemas"]["ActivityInput"]["properties"]
    assert "period_start's year" in activity_input["year"]["description"]
    assert "period_start's year" in activity_input["spend_year"]["description"]


@pytest.mark.django_db
def test_bulk_endpoints_document_their_refusal_and_the_bulk_pools_failure(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    for path, method in [
        ("/api/v1/calculate/batch/", "post"),
        ("/api/v1/activities/", "post"),
        ("/api/v1/emissions/export.csv", "get"),
    ]:
        responses = paths[path][method]["responses"]
        assert "Retry-After" in responses["503"]["description"], path
        assert "may or may not have run" in responses["502"]["description"], path
    # Reads never go to the bulk pool.
    assert "502" not in paths["/api/v1/emissions/"]["get"]["responses"]
