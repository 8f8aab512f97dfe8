"""The OpenAPI schema's error responses and the constraints drf-spectacular cannot infer (a postprocessing hook).

Every API error is JSON in one of two shapes, documented once as components and referenced by every operation:

- ``Error``: ``{"detail": "message"}`` (authentication, permission, not found, throttling, capacity; a 409 adds
  what references the object);
- ``ValidationError``: ``{field: [messages]}``, a field's value being a list of messages or, for a nested field,
  an object or list of the same (a batch of activities answers ``{"errors": [{"index": i, "errors": {...}}]}``).
  A 400 is either shape: a body that is not JSON is ``{"detail": ...}``.

``postprocess`` adds to each operation under ``/api/v1/`` the answers it can give besides its own (an operation's
own description of a status, e.g. a 409 of a delete, is kept; its body schema is added when it had none):

- every operation: 401 (no or bad token), 403 (no organization, or a role without the permission), 429
  (throttled, ``Retry-After``), 503 (at capacity or the database unreachable, ``Retry-After``), and 406 where
  the client's ``Accept`` is negotiated (every JSON endpoint; the CSV export ignores ``Accept``);
- an operation with a path id: 404 (no such object, another organization's, or an id that is no number, which
  no URL pattern matches: Django's 404, JSON under ``/api/`` by the project's error handlers);
- an operation with query parameters or a body: 400 (a bad value, naming the parameter or field);
- an operation with a body: 413 (larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``) and 415 (not ``application/json``).

405 is not an operation's answer (it is the answer of a method the path does not document); its shape is
``Error``, registered as the ``MethodNotAllowed`` response component.

It also bounds path ids to ``1..ID_MAX`` (what a primary key can be), which drf-spectacular leaves unbounded, gives
text query parameters the pattern of text without NUL, and marks optional query parameters ``allowEmptyValue``: an
empty one (``?method=``) is taken as absent.

Two field extensions state what DRF's fields refuse and drf-spectacular does not say, so that a value the schema
allows is one the API accepts:

- ``TextFieldExtension`` (every writable ``CharField``): a pattern for what remains once DRF has trimmed
  surrounding whitespace: at most ``max_length`` characters (so not ``maxLength``, which would count the
  whitespace), not blank when the field refuses blank text, no NUL character (DRF refuses it in any text) and no
  leading formula character where the field refuses one (``emissions.inputs.refuse_formula``); or a JSON integer,
  which DRF takes as its decimal text;
- ``DecimalFieldExtension`` (``PlainDecimalField``): a plain decimal with at least one digit and no sign when the
  field's minimum is 0; drf-spectacular's pattern allows ``""``, ``"-"`` and negatives.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from emissions.inputs import MAX_ACTIVITY_ITEMS, PlainDecimalField, refuse_formula
from emissions.models import ID_MAX

API_PREFIX = "/api/v1/"
JSON = "application/json"
ERROR = "Error"
VALIDATION_ERROR = "ValidationError"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'An error: {"detail": message}. Some carry more keys (a 409 names what references the object).',
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Invalid input: {field or parameter: [messages]}; a nested field's errors nest the same way "
    '(an object of fields, or a list with one entry per item); errors of no single field are under "non_field_errors".',
    "minProperties": 1,
    "additionalProperties": {"anyOf": [{"type": "array"}, {"type": "object"}]},
}

RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}

# status -> (description used when the operation documents none, error shape, response headers)
STANDARD: dict[str, tuple[str, str, dict[str, Any]]] = {
    "400": ("Invalid input: the body or a query parameter; the error names it.", "either", {}),
    "401": ("No credentials, or an unknown or inactive token.", ERROR, {}),
    "403": (
        "The credentials are valid but the user may not do this (no organization, or a role without the permission).",
        ERROR,
        {},
    ),
    "404": ("No such object in the caller's organization (another organization's are not found).", ERROR, {}),
    "406": (
        "The Accept header names no media type this endpoint answers with (it answers application/json).",
        ERROR,
        {},
    ),
    "409": ("Conflict.", ERROR, {}),
    "413": ("The request body is larger than the server accepts; split it.", ERROR, {}),
    "415": ("The body is not application/json.", ERROR, {}),
    "422": ("Unprocessable.", "either", {}),
    "429": ("Too many requests: throttled; retry after the Retry-After header's seconds.", ERROR, RETRY_AFTER),
    "502": ("The server's worker failed before answering.", ERROR, {}),
    "503": (
        "The server is at capacity or its database is unreachable: nothing was done; retry after the Retry-After "
        "header's seconds.",
        ERROR,
        RETRY_AFTER,
    ),
}


# Patterns use [0-9], not \d: a fuzzer reading them as Python regexes would send other scripts' digits, which
# the number fields refuse (emissions.inputs.PlainDecimalField).
NO_NUL = r"^[^\u0000]*$"
_CHAR = r"[^\u0000]"
TRIMMED = "x-trimmed"
AS_TEXT = "x-integer-as-text"
_VISIBLE = r"[^\s\u0000]"
_NOT_FORMULA = r"[^\s\u0000=+\-@]"


def text_pattern(*, max_length: int | None, allow_blank: bool, formula: bool) -> str:
    """The pattern of what a trimming ``CharField`` accepts: after DRF strips surrounding whitespace, 1 to
    ``max_length`` characters (or none, with ``allow_blank``), no NUL, and no leading formula character with
    ``formula``. The length is in the pattern, not in ``maxLength``: surrounding whitespace does not count."""
    first = _NOT_FORMULA if formula else _VISIBLE
    if max_length == 1:
        text = first
    else:
        middle = f"{_CHAR}*" if max_length is None else f"{_CHAR}{{0,{max_length - 2}}}"
        text = f"{first}(?:{middle}{_VISIBLE})?"
    return rf"^\s*(?:{text})?\s*$" if allow_blank else rf"^\s*{text}\s*$"


class TextFieldExtension(OpenApiSerializerFieldExtension):
    """A writable ``CharField``'s schema with the pattern of what it accepts (``text_pattern``, module docstring)."""

    target_class = serializers.CharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        if field.read_only or {"pattern", "enum", "format"} & set(schema):
            return schema
        if any(isinstance(validator, RegexValidator) for validator in field.validators):
            return schema  # drf-spectacular states the validator's pattern
        if not field.trim_whitespace:
            schema["pattern"] = NO_NUL
            if not field.allow_blank:
                schema["minLength"] = max(1, schema.get("minLength", 1))
            return schema
        formula = refuse_formula in field.validators
        schema["pattern"] = text_pattern(max_length=field.max_length, allow_blank=field.allow_blank, formula=formula)
        # drf-spectacular adds maxLength from the field's validators after this; postprocess drops it (TRIMMED).
        schema[TRIMMED] = True
        # DRF's CharField takes a JSON integer as its decimal text (a fraction is parsed as a Decimal, which it
        # refuses): the same rules apply to that text (no sign with a formula rule, the length).
        # Past 18 digits the length bound is left out (a literal of up to 500 digits in the schema); a JSON integer
        # that long is nobody's text.
        integer: dict[str, Any] = {"type": "integer"}
        if formula:
            integer["minimum"] = 0
        if field.max_length is not None and field.max_length <= 18:
            integer["maximum"] = 10**field.max_length - 1
            integer.setdefault("minimum", -(10 ** (field.max_length - 1) - 1))
        schema[AS_TEXT] = integer
        return schema


class DecimalFieldExtension(OpenApiSerializerFieldExtension):
    """A ``PlainDecimalField``'s schema: a plain decimal string within its digits (module docstring)."""

    target_class = PlainDecimalField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        field = self.target
        if field.max_whole_digits is None or schema.get("type") != "string":
            return schema
        sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
        whole, places = field.max_whole_digits, field.decimal_places
        fraction = rf"(?:\.[0-9]{{0,{places}}})?" if places else ""
        only_fraction = rf"|\.[0-9]{{1,{places}}}" if places else ""
        schema["pattern"] = rf"^{sign}(?:[0-9]{{1,{whole}}}{fraction}{only_fraction})$"
        return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_body(shape: str) -> dict[str, Any]:
    if shape == "either":
        return {"anyOf": [_ref(VALIDATION_ERROR), _ref(ERROR)]}
    return _ref(shape)


def _statuses(operation: dict[str, Any]) -> list[str]:
    """The error statuses ``operation`` can answer (module docstring)."""
    parameters = operation.get("parameters", [])
    statuses = ["401", "403", "429", "503"]
    if JSON in _success_media_types(operation):
        statuses.append("406")
    if any(p["in"] == "path" for p in parameters):
        statuses.append("404")
    if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
        statuses.append("400")
    if "requestBody" in operation:
        statuses += ["413", "415"]
    return statuses


def _success_media_types(operation: dict[str, Any]) -> set[str]:
    return {
        media_type
        for status, response in operation["responses"].items()
        if status.startswith("2")
        for media_type in response.get("content", {})
    } or {JSON}  # a 204 negotiates its (empty) answer as JSON too


def _document_errors(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    for status in sorted({*_statuses(operation), *(s for s in responses if s in STANDARD)}):
        description, shape, headers = STANDARD[status]
        response = responses.setdefault(status, {"description": description})
        content = response.setdefault("content", {})
        if not content.get(JSON, {}).get("schema"):
            content[JSON] = {"schema": _error_body(shape)}
        if headers:
            response["headers"] = {**headers, **response.get("headers", {})}


def _bound_parameters(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if parameter["in"] == "path" and schema.get("type") == "integer":
            schema.update(minimum=1, maximum=ID_MAX)
        if parameter["in"] != "query":
            continue
        if schema.get("type") == "string" and not {"enum", "format", "pattern"} & set(schema):
            # Django's form fields refuse NUL in any text.
            schema["pattern"] = NO_NUL
        if not parameter.get("required"):
            # An empty optional parameter (?method=) is no filter: django-filter, the paginator and the cursors
            # take an empty value as absent, as an HTML form sends an unset field.
            parameter["allowEmptyValue"] = True


_BLANK = {"type": "string", "maxLength": 0}


def _tidy_text(node: Any) -> None:
    """For the text fields ``TextFieldExtension`` marked: no ``maxLength``/``minLength`` (surrounding whitespace
    does not count; the pattern holds the length), and no drf-spectacular ``oneOf: [pattern, blank]`` where the
    pattern already matches ``""`` (``""`` would match both alternatives and so neither, for ``oneOf``)."""
    if isinstance(node, list):
        for child in node:
            _tidy_text(child)
        return
    if not isinstance(node, dict):
        return
    alternatives = node.get("oneOf")
    if isinstance(alternatives, list) and len(alternatives) == 2 and alternatives[1] == _BLANK:
        inner = alternatives[0]
        if isinstance(inner, dict) and "pattern" in inner and re.search(inner["pattern"], ""):
            del node["oneOf"]
            node.update(inner)
    if node.pop(TRIMMED, False):
        node.pop("maxLength", None)
        node.pop("minLength", None)
    integer = node.pop(AS_TEXT, None)
    if integer is not None:
        outer_keys = ("description", "readOnly", "writeOnly", "nullable")
        outer = {key: node.pop(key) for key in list(node) if key in outer_keys}
        text = dict(node)
        node.clear()
        node.update(outer, anyOf=[text, integer])
    for child in node.values():
        _tidy_text(child)


def _bound_activity_lists(schemas: dict[str, Any]) -> None:
    """The list form of an activities POST holds 1..MAX_ACTIVITY_ITEMS items (``emissions.inputs.activity_inputs``);
    drf-spectacular cannot read bounds off the ``many=True`` serializer of the view's polymorphic request."""
    for variant in schemas.get("ActivityCreateRequest", {}).get("oneOf", []):
        if variant.get("type") == "array":
            variant.update(minItems=1, maxItems=MAX_ACTIVITY_ITEMS)


def postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular ``POSTPROCESSING_HOOKS`` entry: the error components and responses (module docstring)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR] = ERROR_SCHEMA
    schemas[VALIDATION_ERROR] = VALIDATION_ERROR_SCHEMA
    _bound_activity_lists(schemas)
    _tidy_text(schemas)
    result["components"].setdefault("responses", {})["MethodNotAllowed"] = {
        "description": "The path does not answer this method; the Allow header lists those it does.",
        "content": {JSON: {"schema": _ref(ERROR)}},
    }
    for path, operations in result.get("paths", {}).items():
        if not path.startswith(API_PREFIX):
            continue
        for operation in operations.values():
            _document_errors(operation)
            _bound_parameters(operation)
    return result
