"""Recalculations and their restatements: ``POST /recalculations/`` queues a job; ``/restatements/`` reads what
finished jobs changed (``emissions.jobs.recalculation``).

Thin views: the request serializer checks shapes, ``recalculation_submit`` checks meaning (the dataset is one the
organization may use, its suppliers, the source); reads are scoped to the caller's organization, so another
organization's restatement is a 404.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from calculator import rules
from emissions.api.jobs import JobDetailSerializer
from emissions.api.permissions import request_org, request_org_id, role_permissions
from emissions.api.serializers import ConversionField
from emissions.api.views import OrgScopedMixin
from emissions.inputs import KnownFieldsSerializer, PlainIntegerField
from emissions.models import ID_MAX, EmissionFactor, FactorDataset, Restatement, RestatementLine
from emissions.services.recalculations import recalculation_submit
from perf.pagination import KeysetPagination

MAX_SCOPE_SUPPLIERS = 1000

# -- serializers ------------------------------------------------------------------------------------


class RecalculationRequestSerializer(KnownFieldsSerializer):
    """What to recalculate: the target dataset and the scope (every filter optional; none: all emissions)."""

    dataset = PlainIntegerField(
        min_value=1, max_value=ID_MAX, help_text="Id of the factor dataset version to recalculate against"
    )
    period_from = serializers.DateField(
        required=False, allow_null=True, help_text="Emissions whose period starts on or after this day"
    )
    period_to = serializers.DateField(
        required=False, allow_null=True, help_text="Emissions whose period ends on or before this day"
    )
    categories = serializers.ListField(
        child=PlainIntegerField(min_value=rules.CATEGORY_MIN, max_value=rules.CATEGORY_MAX),
        required=False,
        max_length=rules.CATEGORY_MAX,
        help_text="Scope 3 categories; none: all",
    )
    suppliers = serializers.ListField(
        child=PlainIntegerField(min_value=1, max_value=ID_MAX),
        required=False,
        max_length=MAX_SCOPE_SUPPLIERS,
        help_text="Supplier ids; none: all (and emissions without a supplier)",
    )
    source = serializers.ChoiceField(  # type: ignore[assignment]  # FIELD_NAMES (emissions.api.serializers)
        choices=FactorDataset.Source.choices,
        required=False,
        allow_blank=True,
        help_text="Only emissions whose current factor is of this source (it must be the dataset's own); "
        "emissions of another source are left as they are in any case",
    )


class DatasetRefSerializer(serializers.ModelSerializer):
    class Meta:
        model = FactorDataset
        fields = ["id", "source", "version", "name", "basis_year"]
        read_only_fields = fields


class GroupTotalsSerializer(serializers.Serializer):
    before = serializers.DecimalField(max_digits=40, decimal_places=6, help_text="kg CO2e")
    after = serializers.DecimalField(max_digits=40, decimal_places=6, help_text="kg CO2e")
    change_pct = serializers.DecimalField(max_digits=30, decimal_places=4, allow_null=True)


class RestatementSerializer(serializers.ModelSerializer):
    """A restatement's totals over its scope; ``id`` is the id of the job that wrote it."""

    id = serializers.IntegerField(source="pk", read_only=True)
    target_dataset = DatasetRefSerializer(read_only=True)

    class Meta:
        model = Restatement
        fields = [
            "id",
            "target_dataset",
            "scope",
            "created_at",
            "total_before_kg",
            "total_after_kg",
            "change_pct",
            "threshold_pct",
            "significant",
            "emissions_in_scope",
            "emissions_recalculated",
            "emissions_not_applicable",
            "emissions_changed",
        ]
        read_only_fields = fields


class RestatementDetailSerializer(RestatementSerializer):
    """A restatement with its totals per category (key: the category number) and per supplier (key: the supplier
    id, ``none`` for emissions without one)."""

    per_category = serializers.DictField(child=GroupTotalsSerializer(), read_only=True)
    per_supplier = serializers.DictField(child=GroupTotalsSerializer(), read_only=True)

    class Meta(RestatementSerializer.Meta):
        fields = [*RestatementSerializer.Meta.fields, "per_category", "per_supplier"]
        read_only_fields = fields


class LineFactorSerializer(serializers.ModelSerializer):
    source = serializers.CharField(source="dataset.source", read_only=True)  # type: ignore[assignment]  # FIELD_NAMES
    dataset_version = serializers.CharField(source="dataset.version", read_only=True)

    class Meta:
        model = EmissionFactor
        fields = ["id", "source", "dataset_version", "activity", "region", "year", "unit", "co2e_per_unit"]
        read_only_fields = fields


class RestatementLineSerializer(serializers.ModelSerializer):
    """One emission the recalculation changed: the factor and figures it had, and those it has since."""

    before_factor = LineFactorSerializer(read_only=True)
    after_factor = LineFactorSerializer(read_only=True)
    after_conversion = ConversionField(read_only=True, allow_null=True)

    class Meta:
        model = RestatementLine
        fields = [
            "emission_id",
            "activity_id",
            "category",
            "supplier_id",
            "before_factor",
            "before_co2e_kg",
            "before_biogenic_co2_kg",
            "after_factor",
            "after_co2e_kg",
            "after_biogenic_co2_kg",
            "after_gases",
            "after_data_quality",
            "after_fallbacks",
            "after_warnings",
            "after_conversion",
        ]
        read_only_fields = fields


# -- views ------------------------------------------------------------------------------------------


class RecalculationView(APIView):
    """Queue a recalculation of the caller's emissions against a factor dataset version."""

    permission_classes = role_permissions(Restatement)  # a recalculation writes a restatement

    @extend_schema(
        request=RecalculationRequestSerializer,
        responses={
            202: OpenApiResponse(
                JobDetailSerializer,
                description="Queued: the job (its url is also the Location header; once it succeeded, its "
                "result.restatement is the restatement's id). Stored results change only when it succeeds.",
            ),
            400: OpenApiResponse(description="{field: [messages]}"),
        },
    )
    def post(self, request: Request) -> Response:
        body = RecalculationRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job = recalculation_submit(
            organization=request_org(request),
            requested_by=request.user if request.user.is_authenticated else None,
            target_dataset_id=data["dataset"],
            period_from=data.get("period_from"),
            period_to=data.get("period_to"),
            categories=data.get("categories") or (),
            supplier_ids=data.get("suppliers") or (),
            source=data.get("source") or None,
        )
        queued = JobDetailSerializer(job, context={"request": request}).data
        return Response(
            queued,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": request.build_absolute_uri(reverse("job-detail", args=[job.pk]))},
        )


@extend_schema_view(
    retrieve=extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="The restatement's (its job's) id")]
    )
)
class RestatementViewSet(OrgScopedMixin, viewsets.ReadOnlyModelViewSet):
    """What finished recalculations changed, the latest requested first (keyset-paginated on the job's id)."""

    model = Restatement
    permission_classes = role_permissions(Restatement)
    pagination_class = KeysetPagination
    # Not on created_at: a cursor of a datetime would have to carry its time zone.
    keyset_ordering = ("-job",)

    def scoped(self, organization_id: int) -> QuerySet[Restatement]:
        return Restatement.objects.for_org(organization_id).with_related()

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return RestatementDetailSerializer if self.action == "retrieve" else RestatementSerializer


class RestatementLineViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The emissions one restatement changed, by emission id (keyset-paginated); another organization's is a 404."""

    serializer_class = RestatementLineSerializer
    permission_classes = role_permissions(Restatement)
    pagination_class = KeysetPagination
    keyset_ordering = ("emission_id",)

    def get_queryset(self) -> QuerySet[RestatementLine]:
        if getattr(self, "swagger_fake_view", False):
            return RestatementLine.objects.none()
        # The restatement's organization is checked in the page's own query (no separate lookup).
        return RestatementLine.objects.filter(
            restatement_id=self.kwargs["restatement_pk"],
            restatement__organization_id=request_org_id(self.request),
        ).select_related("before_factor__dataset", "after_factor__dataset")

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().list(request, *args, **kwargs)
        if not response.data["results"]:
            # An empty page is ambiguous: a restatement that changed nothing, or one that is not the caller's.
            get_object_or_404(Restatement.objects.for_org(request_org_id(request)), pk=kwargs["restatement_pk"])
        return response
