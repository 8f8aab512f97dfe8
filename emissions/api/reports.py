"""Reports: ``GET /reports/inventory/`` is the Scope 3 inventory of a reporting period (``emissions.reports``).

A thin view: the query serializer checks the period (a calendar year, or a window of months), the report
reads the rollups; cached as the emissions summaries are, per organization and query, and answered with 304 to a
current ETag.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from emissions import exports
from emissions.api.permissions import request_org, request_org_id, role_permissions
from emissions.api.views import OrgScopedMixin
from emissions.cache import report_namespaces
from emissions.inputs import MONTH_PATTERN, YEAR_SCHEMA, InventoryQuerySerializer
from emissions.models import Category, Emission, Method
from emissions.reports import Status, inventory
from perf.cache import Namespace
from perf.conditional import CachedResponseMixin

# -- the query --------------------------------------------------------------------------------------


# -- the answer (documents the shape; the report builds plain dicts) -------------------------------


class MethodShareSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=Method.choices)
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    co2e_t = serializers.CharField()
    count = serializers.IntegerField()
    share = serializers.CharField(allow_null=True, help_text="% of the category's t CO2e, 2 decimals")


class InventoryDataQualitySerializer(serializers.Serializer):
    record_weighted = serializers.CharField(
        allow_null=True, help_text="Mean of the results' scores (1 very good ... 5 very poor), 2 decimals"
    )
    emission_weighted = serializers.CharField(allow_null=True, help_text="The same, weighted by kg CO2e")


class UncertaintySerializer(serializers.Serializer):
    low_t = serializers.CharField(help_text="2.5th percentile of the Monte Carlo sums, t CO2e (to the kg)")
    median_t = serializers.CharField()
    high_t = serializers.CharField(help_text="97.5th percentile")


class InventoryFiguresSerializer(serializers.Serializer):
    co2e_kg = serializers.CharField(help_text="Exact: the sum of the stored results")
    co2e_t = serializers.CharField()
    biogenic_co2_t = serializers.CharField(
        allow_null=True, help_text="Biogenic CO2, outside the scopes (not in co2e); null when no result has a figure"
    )
    count = serializers.IntegerField(help_text="Stored results")
    methods = MethodShareSerializer(many=True, help_text="Largest first")
    primary_data_share = serializers.CharField(
        allow_null=True,
        help_text="% of the t CO2e computed from suppliers' own data (ESRS E1 AR 46(g)); null when there is none",
    )
    data_quality = InventoryDataQualitySerializer()
    uncertainty = UncertaintySerializer(allow_null=True, help_text="95 % interval; null without results")
    base_year_co2e_t = serializers.CharField(allow_null=True, help_text="Null without a base year")
    change_pct = serializers.CharField(
        allow_null=True, help_text="% change against the base year; null without one, or when it was 0"
    )


class InventoryCategorySerializer(InventoryFiguresSerializer):
    category = serializers.ChoiceField(choices=Category.choices)
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    status = serializers.ChoiceField(
        choices=[Status.CALCULATED, Status.NOT_CALCULATED, Status.NOT_RELEVANT],
        help_text="not_relevant: the organization excluded it (explanation says why); else whether it has results",
    )
    explanation = serializers.CharField(allow_null=True, help_text="Why it is not relevant; null otherwise")


class BaseYearSerializer(serializers.Serializer):
    year = serializers.IntegerField()
    period_from = serializers.DateField(help_text="The reporting period's months, in the base year")
    period_to = serializers.DateField()
    co2e_t = serializers.CharField()
    change_pct = serializers.CharField(allow_null=True)


class NamedRestatementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    dataset = serializers.CharField(help_text="SOURCE:VERSION recalculated against")
    change_pct = serializers.CharField(allow_null=True)
    significant = serializers.BooleanField()
    scope = serializers.DictField()


class UncertaintyMethodSerializer(serializers.Serializer):
    draws = serializers.IntegerField()
    seed = serializers.IntegerField()
    interval = serializers.CharField()


class InventorySerializer(serializers.Serializer):
    period_from = serializers.DateField()
    period_to = serializers.DateField()
    categories = InventoryCategorySerializer(many=True, help_text="The 15 categories, in order")
    total = InventoryFiguresSerializer()
    base_year = BaseYearSerializer(allow_null=True, help_text="The organization's base year; null without one")
    restatements = NamedRestatementSerializer(
        many=True, help_text="Recalculations applied to the reporting period or the base year (their figures are in)"
    )
    uncertainty_method = UncertaintyMethodSerializer()


# -- the tables reporters file ----------------------------------------------------------------------


class TableCSVRenderer(BaseRenderer):
    """A table's rows (``emissions.exports.as_json``'s list of objects) as CSV with a header."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return exports.as_csv(list(data[0]), [list(row.values()) for row in data])


class TableXLSXRenderer(BaseRenderer):
    """A table's rows as an XLSX workbook of one sheet, named after the table."""

    media_type = exports.XLSX_CONTENT_TYPE
    format = "xlsx"
    charset = None
    render_style = "binary"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        title = (renderer_context or {}).get("view").action.replace("_", "-")  # type: ignore[union-attr]
        return exports.as_xlsx(list(data[0]), [list(row.values()) for row in data], title=title)


TABLE_RENDERERS = [*api_settings.DEFAULT_RENDERER_CLASSES, TableCSVRenderer, TableXLSXRenderer]
TABLE_ROWS_SCHEMA = {"type": "array", "items": {"type": "object", "additionalProperties": True}}


def table_schema(name: str, description: str) -> Any:
    return extend_schema(
        description=description,
        parameters=[
            OpenApiParameter("year", YEAR_SCHEMA, description="A calendar year; or month_from and month_to"),
            OpenApiParameter("month_from", str, pattern=MONTH_PATTERN, description="YYYY-MM: the first month"),
            OpenApiParameter("month_to", str, pattern=MONTH_PATTERN, description="YYYY-MM: the last month"),
            OpenApiParameter("format", str, enum=["json", "csv", "xlsx"], description="json (default), csv or xlsx"),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(TABLE_ROWS_SCHEMA, description=f"The {name} rows"),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="A header, then the rows"),
            (200, exports.XLSX_CONTENT_TYPE): OpenApiResponse(OpenApiTypes.BINARY, description="One sheet"),
            400: OpenApiResponse(description="{field: [messages]}, in JSON whatever the format asked for"),
        },
    )


# -- the view ---------------------------------------------------------------------------------------


class ReportViewSet(CachedResponseMixin, OrgScopedMixin, viewsets.GenericViewSet):
    """Reports of the caller's organization (actions only: no list, no detail)."""

    model = Emission
    serializer_class = InventorySerializer
    cache_resource = "emissions"
    cached_actions = ("inventory",)
    cache_query_params = ("format", "year", "month_from", "month_to")
    permission_classes = role_permissions(Emission)
    pagination_class = None
    filter_backends: list[Any] = []

    def scoped(self, organization_id: int) -> QuerySet[Emission]:
        return Emission.objects.for_org(organization_id)

    def cache_namespaces(self, organization_id: int) -> list[Namespace]:
        return report_namespaces(organization_id)

    @extend_schema(
        parameters=[
            OpenApiParameter("year", YEAR_SCHEMA, description="A calendar year; or month_from and month_to"),
            OpenApiParameter("month_from", str, pattern=MONTH_PATTERN, description="YYYY-MM: the first month"),
            OpenApiParameter("month_to", str, pattern=MONTH_PATTERN, description="YYYY-MM: the last month, not before"),
        ],
        responses={
            200: InventorySerializer,
            400: OpenApiResponse(
                description="{field: [messages]}: neither year nor months, both, one month of two, or month_to "
                "before month_from"
            ),
        },
    )
    @action(detail=False, methods=["get"], url_path="inventory")
    def inventory(self, request: Request, **kwargs: Any) -> Any:  # kwargs: a URL format suffix
        """The Scope 3 inventory of the emissions wholly within the period: for each of the 15 categories its
        status, t CO2e, biogenic CO2, methods and their shares, the share from suppliers' own data, the data
        quality, a 95 % uncertainty interval, and the change against the organization's base year; totals; the
        restatements whose figures are in. Sums are exact; the interval is a seeded Monte Carlo estimate."""
        return self.cached_response(request, lambda: self._inventory(request))

    def _inventory(self, request: Request) -> Response:
        query = InventoryQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        period = query.validated_data
        organization = request_org(request)
        report = inventory(organization, period_from=period["period_from"], period_to=period["period_to"])
        return Response(InventorySerializer(report).data)

    def caller_organization_id(self, request: Request) -> int:
        return request_org_id(request)


class ReportTableViewSet(OrgScopedMixin, viewsets.GenericViewSet):
    """The tables reporters file, from the inventory (``emissions.exports``), as JSON, CSV or XLSX: not cached (CSV
    and XLSX never are, and the inventory they read is 12 ms at a million emissions)."""

    model = Emission
    serializer_class = InventorySerializer
    permission_classes = role_permissions(Emission)
    pagination_class = None
    filter_backends: list[Any] = []

    def scoped(self, organization_id: int) -> QuerySet[Emission]:
        return Emission.objects.for_org(organization_id)

    @table_schema(
        "ESRS E1-6",
        "The ESRS E1-6 Scope 3 table of the period's inventory: gross Scope 3 GHG emissions per significant category "
        "(calculated, not excluded), the total, their base year and change, and the share from primary data.",
    )
    @action(detail=False, methods=["get"], url_path="esrs-e1-6", renderer_classes=TABLE_RENDERERS)
    def esrs_e1_6(self, request: Request, **kwargs: Any) -> Response:  # kwargs: a URL format suffix
        return self._table(request, "esrs-e1-6")

    @table_schema(
        "CDP Scope 3",
        "The CDP Scope 3 table of the period's inventory: the 15 categories and the two 'Other', with their "
        "evaluation status, metric tons CO2e, methodology, % from supplier data and an explanation.",
    )
    @action(detail=False, methods=["get"], url_path="cdp-scope-3", renderer_classes=TABLE_RENDERERS)
    def cdp_scope_3(self, request: Request, **kwargs: Any) -> Response:  # kwargs: a URL format suffix
        return self._table(request, "cdp-scope-3")

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[Any, str]:
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:
            # An unknown ?format= (DRF's answer is a 404): in JSON, to be a 400 naming it (or the 405 of a method
            # the route does not have).
            return JSONRenderer(), JSONRenderer.media_type

    def _table(self, request: Request, name: str) -> Response:
        requested = request.query_params.get("format", self.format_kwarg)  # ?format= or a .csv suffix
        if requested is not None and requested not in exports.FORMATS:
            raise ValidationError({"format": [f"Must be one of {', '.join(exports.FORMATS)}."]})
        query = InventoryQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        period = query.validated_data
        report = inventory(request_org(request), period_from=period["period_from"], period_to=period["period_to"])
        response = Response(exports.as_json(*exports.table(report, name)))
        file_format = request.accepted_renderer.format
        if file_format in ("csv", "xlsx"):  # a download (the browsable API's page is not)
            filename = f"{name}-{period['period_from']:%Y-%m}-{period['period_to']:%Y-%m}.{file_format}"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def options(self, request: Request, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]  # as DRF's stub
        # DRF's metadata, in JSON whatever format was asked for (the table renderers render rows only).
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().options(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        # Errors are {field: [messages]}, which only JSON carries, whatever format the client asked for.
        if getattr(self.request, "accepted_renderer", None) is not None and self.request.accepted_renderer.format in (
            "csv",
            "xlsx",
        ):
            self.request.accepted_renderer = JSONRenderer()
            self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)
