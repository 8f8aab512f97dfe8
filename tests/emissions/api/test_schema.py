"""The OpenAPI schema builds and validates with no warnings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rest_framework import serializers

from emissions.api.serializers import SupplierFactorInputSerializer, SupplierSerializer
from emissions.inputs import ActivityInputSerializer, CalculationInputSerializer
from emissions.models import ID_MAX
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


# -- the errors, bodies and bounds the schema states (emissions.api.schema) ---------------------------------------


@pytest.fixture
def schema(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    return yaml.safe_load(out.read_text())


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


@pytest.mark.django_db
def test_every_operation_documents_the_errors_it_can_answer_in_json(schema: dict[str, Any]):
    for path, method, operation in operations(schema):
        responses = operation["responses"]
        expected = {"401", "403", "429", "503"}
        parameters = operation.get("parameters", [])
        if any(p["in"] == "path" for p in parameters):
            expected.add("404")
        if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
            expected.add("400")
        if "requestBody" in operation:
            expected |= {"413", "415"}
        if path != "/api/v1/emissions/export.csv":  # the export answers CSV whatever the client accepts
            expected.add("406")
        assert expected <= set(responses), (method, path, expected - set(responses))
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert response["content"]["application/json"]["schema"], (method, path, status)
        for status in ("429", "503"):
            assert "Retry-After" in responses[status]["headers"], (method, path, status)
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["detail"]
    assert components["ValidationError"]["minProperties"] == 1


@pytest.mark.django_db
def test_request_bodies_are_json_only_but_the_import_file(schema: dict[str, Any]):
    bodies = {
        (path, method): operation["requestBody"]
        for path, method, operation in operations(schema)
        if "requestBody" in operation
    }
    assert len(bodies) == 9
    upload = bodies.pop(("/api/v1/imports/", "post"))
    assert upload["content"] == {"text/csv": {"schema": {"type": "string", "format": "binary"}}}
    for body in bodies.values():
        assert list(body["content"]) == ["application/json"]


@pytest.mark.django_db
def test_editing_and_deleting_an_activity_are_documented_with_their_errors(schema: dict[str, Any]):
    operations = schema["paths"]["/api/v1/activities/{id}/"]
    assert set(operations) == {"get", "patch", "delete"}  # no PUT
    patch, delete = operations["patch"], operations["delete"]
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PatchedActivityInput"
    }
    assert "required" not in schema["components"]["schemas"]["PatchedActivityInput"]  # every field is optional
    assert patch["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Activity"
    }
    assert set(patch["responses"]) == {"200", "400", "401", "403", "404", "406", "413", "415", "429", "503"}
    assert set(delete["responses"]) == {"204", "401", "403", "404", "406", "429", "503"}
    assert "content" not in delete["responses"]["204"]


@pytest.mark.django_db
def test_a_form_body_is_refused_415(api: Any):
    response = api.post("/api/v1/suppliers/", {"external_id": "S-1", "name": "Acme"}, format="multipart")
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


@pytest.mark.django_db
def test_ids_limits_and_batches_are_bounded(schema: dict[str, Any]):
    paths = schema["paths"]
    for path, method, operation in operations(schema):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter["schema"]["minimum"] == 1, (method, path)
                assert parameter["schema"]["maximum"] == ID_MAX, (method, path)
            elif parameter["in"] == "query" and not parameter.get("required"):
                assert parameter["allowEmptyValue"] is True, (method, path, parameter["name"])
    params = {p["name"]: p["schema"] for p in paths["/api/v1/emissions/"]["get"]["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert params["supplier"] == {"type": "integer", "minimum": 1, "maximum": ID_MAX}
    factor_params = {p["name"]: p["schema"] for p in paths["/api/v1/factors/"]["get"]["parameters"]}
    assert factor_params["year"] == {"type": "integer", "minimum": 1900, "maximum": 2100}
    components = schema["components"]["schemas"]
    items = components["CalculationBatchRequest"]["properties"]["items"]
    assert (items["minItems"], items["maxItems"]) == (1, 1000)
    (array,) = [v for v in components["ActivityCreateRequest"]["oneOf"] if v.get("type") == "array"]
    assert (array["minItems"], array["maxItems"]) == (1, 10_000)
    idempotency_key = paths["/api/v1/activities/"]["post"]["parameters"][0]["schema"]
    assert (idempotency_key["minLength"], idempotency_key["maxLength"]) == (1, 255)


TEXTS = ["", " ", "a", " a ", "=1", " =1", "-ACME", "@x", "a\x00b", "\ta", "\u00e9", 0, -1, 10**18]
TEXTS += ["x" * 64, " " + "x" * 64, "x" * 65, "x" * 129]


def text_schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    if "anyOf" in schema:
        return any(text_schema_accepts(option, value) for option in schema["anyOf"])
    if schema["type"] == "integer":
        return isinstance(value, int) and schema.get("minimum", value) <= value <= schema.get("maximum", value)
    return isinstance(value, str) and re.search(schema["pattern"], value) is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("component", "name", "field"),
    [
        ("Supplier", "external_id", SupplierSerializer().fields["external_id"]),
        ("Supplier", "name", SupplierSerializer().fields["name"]),
        ("SupplierFactorInput", "unit", SupplierFactorInputSerializer().fields["unit"]),
        ("SupplierFactorInput", "dataset_version", SupplierFactorInputSerializer().fields["dataset_version"]),
        ("ActivityInput", "external_ref", ActivityInputSerializer().fields["external_ref"]),
        ("CalculationInput", "region", CalculationInputSerializer().fields["region"]),
    ],
)
def test_a_text_the_schema_allows_is_one_the_field_accepts(schema: dict[str, Any], component: str, name: str, field):
    property_schema = schema["components"]["schemas"][component]["properties"][name]
    for value in TEXTS:
        try:
            field.run_validation(value)
            accepted = True
        except serializers.ValidationError:
            accepted = False
        assert text_schema_accepts(property_schema, value) == accepted, (component, name, value)


@pytest.mark.django_db
def test_a_decimal_the_schema_allows_is_one_the_field_accepts(schema: dict[str, Any]):
    amount = schema["components"]["schemas"]["CalculationInput"]["properties"]["amount"]["pattern"]
    field = CalculationInputSerializer().fields["amount"]
    for value in ["", "-", ".", "-1", "1", "1.", ".5", "0.123456", "0.1234567", "1" * 18, "1" * 19, "\u0661", "1e3"]:
        try:
            field.run_validation(value)
            accepted = True
        except serializers.ValidationError:
            accepted = False
        if re.search(amount, value):
            assert accepted, value
        elif value != "1e3":  # an exponent is accepted, though the schema shows plain decimals only
            assert not accepted, value
