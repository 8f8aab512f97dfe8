"""API error responses: every 4xx names the field and the problem.

Services raise domain errors (Django ``ValidationError``, ``InUseError``, ``ActivitiesInvalidError``,
``CalculationError``); this handler turns them into responses so
views stay thin and services stay free of HTTP.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from calculator.types import CalculationError
from emissions.services.activities import ActivitiesInvalidError
from emissions.services.suppliers import InUseError


def validation_error_body(exc: DjangoValidationError) -> dict[str, list[str]]:
    """``{field: [messages]}`` for a Django ValidationError (non-field errors under ``non_field_errors``)."""
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if field == "__all__" else field): messages
            for field, messages in exc.message_dict.items()
        }
    return {"non_field_errors": exc.messages}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, CalculationError):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ActivitiesInvalidError):
        return Response({"errors": [e.as_dict() for e in exc.errors]}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoValidationError):
        return Response(validation_error_body(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        # Django raises this while DRF reads the body; unhandled, it would become an HTML 400 page.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        detail = f"The request body is larger than the {limit:,}-byte limit; split it into smaller requests."
        return Response({"detail": detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, InUseError):
        body = {"detail": str(exc), "references": exc.references, "referenced_by": exc.referenced_by}
        return Response(body, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)
