"""API v1 views. Thin: serializers validate, services write, QuerySet methods read.

Every queryset is scoped to the caller's organization, so another organization's rows are
indistinguishable from rows that do not exist (404, absent from lists and totals).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from django.db.models import Model, QuerySet
from django.http import Http404
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from emissions import inputs
from emissions.api import export, idempotency
from emissions.api import serializers as s
from emissions.api.filters import ActivityFilter, EmissionFilter, FactorFilter
from emissions.api.permissions import request_org, request_org_id, role_permissions
from emissions.audit import emission_history
from emissions.cache import emission_list_namespaces, emission_namespaces, factor_namespaces, supplier_namespaces
from emissions.calculation import calculate
from emissions.models import ID_MAX, SUMMARY_KEYS, ActivityRecord, Emission, EmissionFactor, EmissionQuerySet, Supplier
from emissions.rollups import summary_rollups
from emissions.services.activities import activity_delete, activity_update
from emissions.services.batches import activities_submit, calculations_run
from emissions.services.supplier_factors import supplier_factor_create, supplier_factor_delete
from emissions.services.suppliers import supplier_create, supplier_delete, supplier_update
from emissions.summaries import emission_summary
from perf.admission import heavy
from perf.cache import Namespace
from perf.conditional import CachedReadMixin
from perf.gcpause import collection_paused
from perf.pagination import KeysetPagination
from perf.rows import RowListMixin, written_response


class OrgScopedMixin:
    """``get_queryset()`` is ``scoped(caller's organization id)``; schema generation (no user) gets an empty one."""

    model: type[Model]

    def scoped(self, organization_id: int) -> QuerySet:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):
            return self.model._default_manager.none()
        return self.scoped(request_org_id(self.request))  # type: ignore[attr-defined]


class OrgCachedReadMixin(CachedReadMixin):
    """``CachedReadMixin`` for the organization-scoped API: namespaces per caller's organization."""

    def caller_organization_id(self, request: Request) -> int:
        return request_org_id(request)


# -- factors ------------------------------------------------------------------------------------


class FactorViewSet(OrgCachedReadMixin, OrgScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Emission factors the caller may use: every public dataset plus its own supplier-specific ones.

    Every page is cached (search pages included): the catalogue is a few thousand rows and changes
    only when factors are imported.
    """

    model = EmissionFactor
    cache_resource = "factors"
    permission_classes = role_permissions(EmissionFactor)
    serializer_class = s.FactorSerializer
    filterset_class = FactorFilter
    pagination_class = KeysetPagination
    keyset_ordering = ("activity", "id")

    def scoped(self, organization_id: int) -> QuerySet[EmissionFactor]:
        return EmissionFactor.objects.visible_to(organization_id).with_related()

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        return factor_namespaces(organization_id)


# -- suppliers ----------------------------------------------------------------------------------


class SupplierViewSet(
    OrgCachedReadMixin,
    OrgScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's suppliers. Deleting one still referenced (activities, emissions, its own factors) answers 409."""

    model = Supplier
    cache_resource = "suppliers"
    permission_classes = role_permissions(Supplier)
    serializer_class = s.SupplierSerializer
    pagination_class = KeysetPagination
    keyset_ordering = ("name", "id")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped(self, organization_id: int) -> QuerySet[Supplier]:
        return Supplier.objects.for_org(organization_id)

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        return supplier_namespaces(organization_id)

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if not getattr(self, "swagger_fake_view", False):
            context["organization_id"] = request_org_id(self.request)
        return context

    def perform_create(self, serializer: BaseSerializer) -> None:
        serializer.instance = supplier_create(organization=request_org(self.request), data=serializer.validated_data)

    def perform_update(self, serializer: BaseSerializer) -> None:
        supplier = cast(Supplier, serializer.instance)
        serializer.instance = supplier_update(supplier=supplier, data=serializer.validated_data)

    def perform_destroy(self, instance: Supplier) -> None:
        supplier_delete(supplier=instance)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="Activities, emissions or factors use it")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().destroy(request, *args, **kwargs)


class SupplierFactorViewSet(
    OrgCachedReadMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Factors one of the caller's suppliers provided; the supplier_specific method prefers them.

    Another organization's supplier is a 404. Deleting a factor that stored results use answers 409.
    """

    serializer_class = s.FactorSerializer
    pagination_class = KeysetPagination
    keyset_ordering = ("activity", "id")
    http_method_names = ["get", "post", "delete", "head", "options"]
    permission_classes = role_permissions(EmissionFactor)
    cache_resource = "suppliers"

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        # A supplier's factors are the organization's factors; the supplier itself (its existence) too.
        return [*supplier_namespaces(organization_id), *factor_namespaces(organization_id)]

    def supplier(self) -> Supplier:
        """The supplier in the URL, if it is the caller's (one query, memoized per request)."""
        if not hasattr(self, "_supplier"):
            suppliers = Supplier.objects.for_org(request_org_id(self.request))
            self._supplier = get_object_or_404(suppliers, pk=self.kwargs["supplier_pk"])
        return self._supplier

    def get_queryset(self) -> QuerySet[EmissionFactor]:
        if getattr(self, "swagger_fake_view", False):
            return EmissionFactor.objects.none()
        organization_id = request_org_id(self.request)
        # The supplier's organization is checked in the same query as the page (no separate supplier lookup);
        # visible_to() as well: only factors in the caller's own datasets, whatever supplier_id says.
        return (
            EmissionFactor.objects.visible_to(organization_id)
            .filter(supplier_id=self.kwargs["supplier_pk"], supplier__organization_id=organization_id)
            .with_related()
        )

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return self.cached_response(request, lambda: self._list(request, *args, **kwargs))

    def _list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = mixins.ListModelMixin.list(self, request, *args, **kwargs)
        if not response.data["results"]:
            # An empty page is ambiguous: a supplier without factors, or one that is not the caller's (404).
            self.supplier()
        return response

    @extend_schema(
        request=s.SupplierFactorInputSerializer,
        responses={201: s.FactorSerializer, 400: OpenApiResponse(description="{field: [messages]}")},
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        supplier = self.supplier()
        serializer = s.SupplierFactorInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        factor = supplier_factor_create(supplier=supplier, data=dict(serializer.validated_data))
        return Response(s.FactorSerializer(factor).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="Stored results use the factor")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        supplier_factor_delete(factor=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# -- calculation --------------------------------------------------------------------------------


class CalculateView(APIView):
    """Calculate one activity; nothing is stored."""

    permission_classes = role_permissions(EmissionFactor, POST="view")  # stores nothing: a read of factors

    @extend_schema(
        request=s.CalculationInputSerializer,
        responses={200: s.CalculationResultSerializer, 400: OpenApiResponse(description="{field: [messages]}")},
    )
    def post(self, request: Request) -> Response:
        serializer = s.CalculationInputSerializer(
            data=request.data, context={"organization_id": request_org_id(request)}
        )
        serializer.is_valid(raise_exception=True)
        # CalculationError becomes a 400 naming the field (emissions.api.errors).
        result = calculate(serializer.to_calculation_input(), organization=request_org(request))
        return written_response(request, result.as_dict())


# A batch this large (bytes of JSON, about 100 items) is bulk work: admitted by slot, refused first when the server
# is at capacity (perf.admission). Smaller batches and single items are served as reads are.
BULK_BODY_BYTES = 16 * 1024
BUSY = OpenApiResponse(
    description="The server is at capacity (bulk work is refused first): nothing was done; retry after the "
    "Retry-After header's seconds. Body: {detail}."
)
# Bulk work runs in the bulk pool (perf.bulkpool); one that fails after receiving the request is answered 502.
BULK_POOL_FAILED = OpenApiResponse(
    description="The bulk pool serving this request failed before answering: the request may or may not have run "
    "(retry a write with the same Idempotency-Key, which cannot write twice). Body: {detail}."
)


@heavy("post", min_body=BULK_BODY_BYTES)
class CalculateBatchView(APIView):
    """Calculate up to 1,000 activities; each item succeeds or fails on its own, results in input order."""

    permission_classes = role_permissions(EmissionFactor, POST="view")  # stores nothing: a read of factors

    @extend_schema(
        request=s.CalculationBatchRequestSerializer,
        parameters=[idempotency.HEADER_PARAMETER],
        responses={
            200: s.CalculationBatchResultSerializer,
            400: OpenApiResponse(description="{items: [messages]}"),
            **idempotency.RESPONSES,
            502: BULK_POOL_FAILED,
            503: BUSY,
        },
    )
    @idempotency.idempotent
    @collection_paused()  # bounded bulk work (perf.gcpause): parsing, validation, results
    def post(self, request: Request) -> Response:
        batch = s.CalculationBatchSerializer(data=request.data)
        batch.is_valid(raise_exception=True)
        organization = request_org(request)
        items = inputs.calculation_inputs(batch.validated_data["items"], organization_id=organization.pk)
        outcomes = calculations_run(organization=organization, items=items)
        results = [{"error": outcome} if isinstance(outcome, dict) else outcome.as_dict() for outcome in outcomes]
        return written_response(request, {"results": results})


def emission_read_namespaces(view: Any, organization_id: int) -> list[Namespace]:
    """A detail reads what changes stored rows; a list or summary also the additions its period filter can see
    (``emissions.cache.emission_list_namespaces``). Precondition: ``view.action`` and ``view.request`` are set."""
    if view.action == "retrieve":
        return emission_namespaces(organization_id)
    return emission_list_namespaces(organization_id, *view.filterset_class.period_bounds(view.request.GET))


# -- activities ---------------------------------------------------------------------------------


@extend_schema_view(
    create=extend_schema(
        request=PolymorphicProxySerializer(
            component_name="ActivityCreateRequest",
            serializers=[inputs.ActivityInputSerializer, inputs.ActivityInputSerializer(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        parameters=[idempotency.HEADER_PARAMETER],
        responses={
            201: PolymorphicProxySerializer(
                component_name="ActivityCreateResponse",
                serializers=[s.ActivitySerializer, s.ActivitySerializer(many=True)],
                resource_type_field_name=None,
                many=False,
            ),
            400: OpenApiResponse(description='{"errors": [{"index": i, "errors": {field: [messages]}}]}'),
            **idempotency.RESPONSES,
            502: BULK_POOL_FAILED,
            503: BUSY,
        },
        description="Store one activity (answered with one object) or a list of up to 10,000 (answered with a "
        "list in the same order), all or nothing. Every item is validated and calculated first; if any fails, "
        "nothing is written and the response lists each failing index (0 for a single object).",
    ),
    partial_update=extend_schema(
        request=inputs.ActivityInputSerializer,
        responses={200: s.ActivitySerializer, 400: OpenApiResponse(description="{field: [messages]}")},
        description="Change some of the activity's fields (the create body's names; the others keep what was "
        "sent) and recalculate its emission, in one transaction. The merged activity is validated and calculated "
        "as a create is; if that fails nothing is written. A year or spend_year left to the period follows a new "
        "period. Answered with the activity as GET shows it, with its new emission (same ids). Safe to retry as "
        "it is (no Idempotency-Key); no If-Match.",
    ),
    destroy=extend_schema(
        responses={204: None},
        description="Delete the activity and its emission, in one transaction. No Idempotency-Key: a retry of a "
        "delete that went through answers 404.",
    ),
)
@heavy("post", min_body=BULK_BODY_BYTES)
class ActivityViewSet(
    OrgCachedReadMixin,
    RowListMixin,
    OrgScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Activity lines with their calculated emission. First pages (per filter set) are cached, deep pages from
    their second request (``deep_pages_on_repeat``). PATCH recalculates one, DELETE removes it with its emission
    (``activity_update`` / ``activity_delete``); there is no PUT.

    List pages are written from value rows (``perf.rows``), as ``ActivitySerializer`` would write them.
    """

    model = ActivityRecord
    cache_resource = "emissions"
    permission_classes = role_permissions(ActivityRecord)
    deep_pages_on_repeat = True
    serializer_class = s.ActivitySerializer
    row_computed = s.STORED_RESULT_COMPUTED
    filterset_class = ActivityFilter
    pagination_class = KeysetPagination
    keyset_ordering = ("-period_start", "-id")
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped(self, organization_id: int) -> QuerySet[ActivityRecord]:
        return ActivityRecord.objects.for_org(organization_id).with_related()

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        return emission_read_namespaces(self, organization_id)

    @idempotency.idempotent
    @collection_paused()  # bounded bulk work (perf.gcpause): parsing, validation, writes, the response's data
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        organization = request_org(request)
        items = inputs.activity_inputs(request.data, organization_id=organization.pk)
        # All or nothing; every item's validation and calculation errors in one ActivitiesInvalidError (a 400).
        records = activities_submit(organization=organization, items=items)
        many = isinstance(request.data, list)
        # Written from value rows read back (one query), as the list's pages are: DRF's serializer over the 500
        # records of a large batch took about a third of the request.
        rows = self.rows_response(
            self.scoped(organization.pk), [record.pk for record in records], many=many, status=status.HTTP_201_CREATED
        )
        if rows is not None:
            return rows
        if many:
            return Response(s.ActivitySerializer(records, many=True).data, status=status.HTTP_201_CREATED)
        return Response(s.ActivitySerializer(records[0]).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with activity_or_404():
            record = activity_update(
                organization=request_org(request), activity_id=url_id(self.kwargs["pk"]), changes=request.data
            )
        return Response(s.ActivitySerializer(record).data)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with activity_or_404():
            activity_delete(organization=request_org(request), activity_id=url_id(self.kwargs["pk"]))
        return Response(status=status.HTTP_204_NO_CONTENT)


# What GET answers for an id that is not one of the caller's activities (DRF's get_object_or_404, Django's message).
ACTIVITY_NOT_FOUND = f"No {ActivityRecord._meta.object_name} matches the given query."


def url_id(value: str) -> int:
    """The URL's id as a number; an id that is none, or beyond what a primary key can be (the database would refuse
    the query), is not found (``ActivityRecord.DoesNotExist``), as GET says."""
    try:
        number = int(value)
    except ValueError:
        raise ActivityRecord.DoesNotExist from None
    if not 1 <= number <= ID_MAX:
        raise ActivityRecord.DoesNotExist
    return number


@contextmanager
def activity_or_404() -> Iterator[None]:
    """A write of an activity the caller's organization does not have answers 404, as GET does (no leak)."""
    try:
        yield
    except ActivityRecord.DoesNotExist:
        raise Http404(ACTIVITY_NOT_FOUND) from None


# -- emissions ----------------------------------------------------------------------------------


class EmissionViewSet(OrgCachedReadMixin, RowListMixin, OrgScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Stored results, newest period first, keyset-paginated on (period_start, id).

    First pages (per filter set) and summaries are cached, deep pages from their second request
    (``deep_pages_on_repeat``); every page answers conditional GETs. List pages
    are written from value rows (``perf.rows``), as ``EmissionSerializer`` would write them.
    """

    model = Emission
    cache_resource = "emissions"
    permission_classes = role_permissions(Emission)
    deep_pages_on_repeat = True
    cache_query_params = ("format", "group_by")  # group_by: the summary's
    cached_actions = ("list", "retrieve", "summary")
    serializer_class = s.EmissionSerializer
    row_computed = s.STORED_RESULT_COMPUTED
    filterset_class = EmissionFilter
    pagination_class = KeysetPagination
    keyset_ordering = ("-period_start", "-id")

    def scoped(self, organization_id: int) -> QuerySet[Emission]:
        return Emission.objects.for_org(organization_id).with_related()

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        return emission_read_namespaces(self, organization_id)

    @extend_schema(
        filters=False,
        responses={200: s.EmissionVersionSerializer(many=True), 404: OpenApiResponse(description="No such emission")},
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def history(self, request: Request, pk: str | None = None) -> Response:
        """The emission's versions, oldest first: each insert, update (a recalculation, an edit) and delete, with
        who made it, in which request or job, and the values it left (the factor with its dataset).

        A deleted emission's history stays readable. An emission written before the audit trail was installed
        has no recorded version until it changes (an empty list). Another organization's emission: 404.
        """
        emission_id = int(pk) if pk is not None and pk.isdigit() and int(pk) <= ID_MAX else None
        history = None
        if emission_id is not None:
            history = emission_history(organization_id=request_org_id(request), emission_id=emission_id)
        if history is None:
            raise NotFound()
        serializer = s.EmissionVersionSerializer(history.events, many=True, context={"factors": history.factors})
        return Response(serializer.data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "group_by",
                str,
                enum=list(SUMMARY_KEYS),
                required=True,
                description="How to group the totals. Groups come largest co2e_kg first (ties by key), "
                "except month: chronological, oldest first.",
            ),
        ],
        # The emissions list's filters (EmissionFilter) apply and are documented from it.
        filters=True,
        responses={200: s.SummarySerializer, 400: OpenApiResponse(description="{group_by: [messages]}")},
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def summary(self, request: Request) -> HttpResponseBase:
        """Totals of the (filtered) emissions grouped by category, supplier, month or method.

        Groups are ordered by co2e_kg descending (ties by key); by month they are chronological.
        """
        return self.cached_response(request, lambda: self._summary(request))

    def _summary(self, request: Request) -> Response:
        group_by = request.query_params.get("group_by", "")
        if group_by not in SUMMARY_KEYS:
            raise ValidationError({"group_by": [f"Must be one of {', '.join(SUMMARY_KEYS)}; got '{group_by}'."]})
        # Filtered first: a bad filter is a 400 whichever source answers.
        queryset = cast(EmissionQuerySet, self.filter_queryset(self.get_queryset()))
        filters = self.filterset_class.cleaned(request.query_params)
        rollups = summary_rollups(request_org_id(request), group_by=group_by, filters=filters)
        return Response(emission_summary(queryset if rollups is None else rollups, group_by=group_by))


# -- export ---------------------------------------------------------------------------------------


class CSVRenderer(BaseRenderer):
    """Declares ``text/csv`` so content negotiation accepts CSV clients.

    The export view makes its body itself (streamed, or kept from an earlier request); this renderer never
    renders a body, and error responses are JSON (``EmissionExportView.handle_exception``).
    """

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        raise NotImplementedError("The CSV export streams its own body.")


class CSVOnlyNegotiation(BaseContentNegotiation):
    """The export always answers CSV (DRF's documented "ignore the client" negotiation): an ``Accept:
    application/json`` sent by a generic HTTP client's defaults must not turn a download into a 406."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


@heavy("get")
class EmissionExportView(OrgScopedMixin, GenericAPIView):
    """The caller's stored emissions as a CSV download, streamed at constant memory; the list's filters apply."""

    model = Emission
    filterset_class = EmissionFilter
    permission_classes = role_permissions(Emission)
    pagination_class = None
    renderer_classes = [CSVRenderer]
    content_negotiation_class = CSVOnlyNegotiation

    def scoped(self, organization_id: int) -> QuerySet[Emission]:
        # No select_related: the export reads value tuples with its own joins (emissions.api.export).
        return Emission.objects.for_org(organization_id)

    def answer_json(self) -> None:
        """Render this request's response as JSON, whatever the client accepted (the CSV renderer renders nothing)."""
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are {field: [messages]}, which only JSON can carry, whatever the client accepted.
        self.answer_json()
        return super().handle_exception(exc)

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]  # as DRF's stub
        # DRF's metadata, in JSON as every other endpoint answers OPTIONS.
        self.answer_json()
        return super().options(request, *args, **kwargs)

    @extend_schema(
        operation_id="v1_emissions_export_csv",
        # A download, not a list, so filter discovery is switched on explicitly: EmissionFilter documents itself.
        filters=True,
        responses={
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="Header line, then one line per emission, newest period first. Columns: "
                + ", ".join(export.COLUMNS)
                + ". Decimals are plain decimal strings; fallbacks are codes joined by ';'. Carries an ETag: sent"
                " back in If-None-Match, it is answered 304 Not Modified until the exported rows change.",
            ),
            (400, "application/json"): OpenApiResponse(description="{parameter: [messages]}"),
            (502, "application/json"): BULK_POOL_FAILED,
            (503, "application/json"): BUSY,
        },
    )
    def get(self, request: Request) -> HttpResponseBase:
        queryset = self.filter_queryset(self.get_queryset())  # validates the filters first (a 400 names the field)
        organization = request_org(request)
        return export.cached_csv_response(
            request._request,
            queryset,
            slug=organization.slug,
            namespaces=emission_list_namespaces(organization.pk, *EmissionFilter.period_bounds(request.GET)),
            # Only requests made of the filters: any other parameter would make each request a new copy to keep.
            keep=set(EmissionFilter.base_filters).issuperset(request.GET),
        )
