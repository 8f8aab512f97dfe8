"""The API's JSON parser: exact decimals, no non-finite constants, a nesting limit, on every write endpoint."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.exceptions import ParseError

from emissions.api.parsers import MAX_DEPTH, JSONParser
from emissions.models import ActivityRecord

pytestmark = pytest.mark.django_db

WRITE_URLS = [reverse("activity-list"), reverse("calculate"), reverse("calculate-batch")]


def parse(text: str) -> object:
    return JSONParser().parse(io.BytesIO(text.encode()), parser_context={})


def nested(depth: int, *, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("url", WRITE_URLS)
@pytest.mark.parametrize("kind", ["list", "object"])
def test_json_nested_950_deep_is_a_json_400_naming_the_nesting(api, url, kind):
    body = nested(950, kind=kind)
    assert len(body) < 6 * 1024
    response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert f"nested more than {MAX_DEPTH} levels deep" in response.json()["detail"]


@pytest.mark.parametrize("kind", ["list", "object"])
def test_nesting_is_refused_beyond_the_limit_and_not_before(kind):
    assert parse(nested(MAX_DEPTH, kind=kind))
    with pytest.raises(ParseError, match="nested more than"):
        parse(nested(MAX_DEPTH + 1, kind=kind))


def test_numbers_are_read_as_exact_decimals():
    data = parse('{"a": 0.1, "b": 1e-400, "c": 1e400, "d": 12}')
    assert data == {"a": Decimal("0.1"), "b": Decimal("1e-400"), "c": Decimal("1e400"), "d": 12}
    assert all(isinstance(data[key], Decimal) for key in "abc")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants_are_refused(constant):
    with pytest.raises(ParseError, match="not JSON compliant"):
        parse(f'{{"amount": {constant}}}')


def test_a_tiny_json_number_is_a_400_on_amount_not_a_zero(api, electricity_factor):
    # As text: the test client would write a Python float, which has already underflowed to 0.
    body = '{"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": 1e-400, "unit": "MWh"}'
    response = api.post(reverse("calculate"), body, content_type="application/json")
    assert response.status_code == 400
    assert "amount" in response.json()


def test_a_tiny_json_number_is_not_stored_as_zero(api, electricity_factor):
    body = (
        '{"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": 1e-400, "unit": "MWh", '
        '"period_start": "2025-01-01", "period_end": "2025-01-31"}'
    )
    response = api.post(reverse("activity-list"), body, content_type="application/json")
    assert response.status_code == 400
    assert "amount" in response.json()["errors"][0]["errors"]
    assert not ActivityRecord.objects.exists()


def test_a_json_number_keeps_every_digit(api, electricity_factor):
    # More significant digits than a float holds.
    text = (
        '{"category": 3, "method": "activity", "activity": "desnz:7_400_4000_5", "amount": 1234567890123.123456, '
        '"unit": "kWh", "period_start": "2025-01-01", "period_end": "2025-01-31"}'
    )
    response = api.post(reverse("activity-list"), text, content_type="application/json")
    assert response.status_code == 201, response.json()
    assert ActivityRecord.objects.get().amount == Decimal("1234567890123.123456")
