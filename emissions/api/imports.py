"""``POST /api/v1/imports/``: a CSV file of activities (``import_activities``' columns), imported all or nothing by a
job.

The body is the file itself (``Content-Type: text/csv``), of any size up to ``IMPORT_MAX_BYTES``: it is streamed to
the ``imports`` storage in blocks, never read whole. The header line is checked on the way (a 400 naming the
problem); the rows are the job's: it answers 202 at once with the job (``Location``: the job's URL), whose errors name
each bad row's file line and column. ``?dry_run=true`` only validates and calculates: the job's result is the rows
and kg CO2e the file would add, and nothing is written.
"""

from __future__ import annotations

from typing import IO, Any, cast

from django.conf import settings
from django.contrib.auth.models import User
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, UnsupportedMediaType, ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emissions.api.jobs import JobDetailSerializer
from emissions.api.permissions import request_org, role_permissions
from emissions.imports import FileProblem
from emissions.models import ActivityRecord
from emissions.services.imports import UploadTooLargeError, import_start, import_upload_store

CSV = "text/csv"
TRUE, FALSE = ("true", "1"), ("false", "0", "")


class CSVParser(BaseParser):
    """Declares ``text/csv`` bodies (content negotiation, the schema); the view streams the body itself instead."""

    media_type = CSV

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        return stream


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def _dry_run(request: Request) -> bool:
    value = request.query_params.get("dry_run", "").strip().lower()
    if value not in TRUE + FALSE:
        raise ValidationError({"dry_run": [f"Must be true or false, not '{value}'."]})
    return value in TRUE


class ImportView(APIView):
    """Upload a CSV file of activities; a job imports it, all or nothing."""

    permission_classes = role_permissions(ActivityRecord)  # a write of activities: analysts and admins
    parser_classes = [CSVParser]

    @extend_schema(
        operation_id="imports_create",
        request={CSV: OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "dry_run",
                OpenApiTypes.BOOL,
                description="Only validate and calculate: the job's result says what the file would add; nothing "
                "is written.",
            )
        ],
        responses={
            202: JobDetailSerializer,
            400: OpenApiResponse(description="The header line is not UTF-8, not CSV or names the wrong columns."),
            413: OpenApiResponse(description="The file is larger than the server's limit."),
            415: OpenApiResponse(description="The body is not text/csv."),
        },
        description="Import a CSV file of activities (the columns of manage.py import_activities, header line first, "
        "UTF-8) all or nothing. Answered 202 with the job at once; the job's errors name each bad row's line (the "
        "header is line 1) and column, and nothing is written unless every row is valid. A server running its jobs "
        "in-process, without a broker (eager mode), runs the job before answering: the 202's job may already be "
        "finished.",
    )
    def post(self, request: Request) -> Response:
        given = request.content_type
        if given.split(";")[0].strip().lower() != CSV:
            raise UnsupportedMediaType(given, detail=f"Send the file as {CSV}, not '{given}'.")
        dry_run = _dry_run(request)
        limit = settings.IMPORT_MAX_BYTES
        declared = request.META.get("CONTENT_LENGTH") or "0"
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(UploadTooLargeError(limit).args[0])
        organization = request_org(request)
        try:
            upload = import_upload_store(organization=organization, stream=request.stream, max_bytes=limit)
        except FileProblem as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        except UploadTooLargeError as exc:
            raise PayloadTooLarge(str(exc)) from None
        job = import_start(
            organization=organization,
            upload=upload,
            dry_run=dry_run,
            chunk_rows=settings.JOB_CHUNK_ROWS,
            requested_by=cast(User, request.user),  # authenticated: the permission classes passed
        )
        # The job as GET /api/v1/jobs/{id}/ shows it, and that address to follow it at.
        body = JobDetailSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
