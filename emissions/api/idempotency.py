"""The ``Idempotency-Key`` request header on the API's bulk writes (``emissions.services.idempotency``).

``@idempotent`` on a view's handler: without the header the handler runs as before; with it, the handler runs
inside ``idempotent_write``'s transaction, its successful answer is stored with the write, and the client gets
exactly the stored bytes, in JSON, the first time and on every retry (``Idempotent-Replayed: true`` on retries).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from emissions.api.permissions import request_org_id
from emissions.services.idempotency import (
    KEY_MAX_LENGTH,
    IdempotencyKeyInProgress,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    StoredAnswer,
    idempotency_key_check,
    idempotent_write,
    request_fingerprint,
)
from perf.rows import RenderedJSONResponse

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Seconds a client should wait before retrying while the key's first request runs.
IN_PROGRESS_RETRY_AFTER = 1

# For the operations' OpenAPI description.
HEADER_PARAMETER = OpenApiParameter(
    HEADER,
    # Printable ASCII (idempotency_key_check); no surrounding spaces, which HTTP strips from a header's value.
    {"type": "string", "minLength": 1, "maxLength": KEY_MAX_LENGTH, "pattern": r"^[!-~](?:[ -~]*[!-~])?$"},
    location=OpenApiParameter.HEADER,
    required=False,
    description="Makes the request safe to retry (up to 255 printable ASCII characters, unique per request, e.g. a "
    "UUID). The first request to succeed with a key stores its answer with its write; a retry with the same key and "
    "the same body gets that answer again (header Idempotent-Replayed: true) and writes nothing. Keys belong to the "
    "organization and are kept for IDEMPOTENCY_KEY_TTL seconds (a day by default). A request that failed stored "
    "nothing, so its retry runs again.",
)
RESPONSES = {
    409: OpenApiResponse(
        description="A request with this Idempotency-Key is still running: retry after the Retry-After header's "
        "seconds to get its answer. Body: {detail}."
    ),
    422: OpenApiResponse(
        description="This Idempotency-Key was used for another request (another body or endpoint); nothing was "
        "done. Body: {Idempotency-Key: [message]}."
    ),
}

Handler = Callable[..., Any]
STORED_RENDERER = JSONRenderer()


def idempotent(handler: Handler) -> Handler:
    """Wrap an ``APIView`` handler (``post``/``create``) so that the ``Idempotency-Key`` header is honoured.

    Precondition: the handler's caller has an organization (the view's permissions ran: ``HasOrganization``).
    """

    @functools.wraps(handler)
    def wrapper(view: APIView, request: Request, *args: Any, **kwargs: Any) -> Any:
        raw = request.headers.get(HEADER)
        if raw is None:
            return handler(view, request, *args, **kwargs)
        try:
            key = idempotency_key_check(raw)
        except IdempotencyKeyInvalid as exc:
            raise ValidationError({HEADER: [f"The {HEADER} header {exc}."]}) from None
        fingerprint = request_fingerprint(method=request.method or "", path=request.path, data=request.data)

        first: list[Any] = []  # the handler's own response, for a failure that is not kept

        def write() -> StoredAnswer | None:
            response = handler(view, request, *args, **kwargs)
            first.append(response)
            if not status.is_success(response.status_code):
                return None
            if not isinstance(response, Response):
                raise TypeError(f"@idempotent needs a handler answering a DRF Response; got {type(response)}.")
            # Always JSON, whatever this request accepted: the stored bytes answer every retry, and a retry may
            # accept something else (the browsable API's HTML needs the live request and response besides).
            if isinstance(response, RenderedJSONResponse):
                body = response.body  # written already, as STORED_RENDERER writes it (perf.rows.renders_rows)
            else:
                body = STORED_RENDERER.render(response.data, STORED_RENDERER.media_type, view.get_renderer_context())
            return StoredAnswer(status_code=response.status_code, content_type=STORED_RENDERER.media_type, body=body)

        try:
            answer, replayed = idempotent_write(
                organization_id=request_org_id(request), key=key, fingerprint=fingerprint, write=write
            )
        except IdempotencyKeyReused:
            detail = f"This {HEADER} was used for another request (another body or endpoint); use a new key."
            return Response({HEADER: [detail]}, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        except IdempotencyKeyInProgress:
            return Response(
                {"detail": f"A request with this {HEADER} is still running; retry to get its answer."},
                status=status.HTTP_409_CONFLICT,
                headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER)},
            )
        if answer is None:
            # The handler failed without raising (a non-2xx it returned): nothing was kept, its answer goes out.
            return first[0]
        response = HttpResponse(answer.body, status=answer.status_code, content_type=answer.content_type)
        if replayed:
            response[REPLAYED_HEADER] = "true"
        return response

    return wrapper
