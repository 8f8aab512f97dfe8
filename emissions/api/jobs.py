"""The jobs API: the caller's organization's jobs (imports, recalculations) as they run, and cancelling one.

Jobs are live state: a running job's progress changes with every chunk a worker commits, so nothing here goes
through the response cache (``perf.conditional``); every answer is read from the job row. Another organization's
job is a 404 on every endpoint, as an unknown id is. Reading jobs is a read (``view_job``, every role); cancelling
one needs the permission its kind's write needs (``emissions.services.organizations.JOB_KIND_PERMISSIONS``).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from emissions.api.permissions import request_org, role_permissions
from emissions.api.views import OrgScopedMixin
from emissions.jobs.progress import job_duration, job_percent
from emissions.models import Job
from emissions.services.jobs import JobFinishedError, job_cancel
from emissions.services.organizations import ROLE_PERMISSIONS, job_control_permission
from perf.pagination import KeysetPagination

# -- serializers ----------------------------------------------------------------------------------


class JobProgressSerializer(serializers.Serializer):
    chunks_done = serializers.IntegerField(help_text="Chunks committed so far.")
    chunks_total = serializers.IntegerField(help_text="Chunks planned (0 until the job is planned).")
    rows_done = serializers.IntegerField(help_text="Rows the committed chunks processed.")
    rows_total = serializers.IntegerField(allow_null=True, help_text="Rows to process; null until known.")
    percent = serializers.IntegerField(
        min_value=0, max_value=100, help_text="0-100, rounded down: 100 only once the job succeeded."
    )


class JobSerializer(serializers.ModelSerializer):
    """A job as the list shows it: what it is, where it stands, who asked for it and when."""

    url = serializers.HyperlinkedIdentityField(view_name="job-detail")
    progress = serializers.SerializerMethodField()
    requested_by = serializers.SerializerMethodField(help_text="The requesting user's username; null if unknown.")
    duration = serializers.SerializerMethodField(
        help_text="Seconds from start to finish (to now while running), as a decimal string; null before it started."
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "kind",
            "state",
            "progress",
            "error_count",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "duration",
        ]
        read_only_fields = fields

    @extend_schema_field(JobProgressSerializer)
    def get_progress(self, job: Job) -> dict[str, Any]:
        return {
            "chunks_done": job.chunks_done,
            "chunks_total": job.chunks_total,
            "rows_done": job.rows_done,
            "rows_total": job.rows_total,
            "percent": job_percent(job),
        }

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_requested_by(self, job: Job) -> str | None:
        return None if job.requested_by is None else job.requested_by.get_username()

    @extend_schema_field(serializers.DecimalField(max_digits=14, decimal_places=3, allow_null=True))
    def get_duration(self, job: Job) -> str | None:
        duration = job_duration(job)
        return None if duration is None else str(duration)


class JobDetailSerializer(JobSerializer):
    """A job with its parameters, its problems (the first ``Job.MAX_ERRORS`` of ``error_count``) and its result."""

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "params", "errors", "result"]
        read_only_fields = fields
        # Built from the model's fields (a declared ``errors`` would hide ``Serializer.errors``).
        extra_kwargs = {
            "params": {"help_text": "The kind's parameters as submitted."},
            "errors": {
                "help_text": "The first 1000 problems, in order: a row's ({line or row, field, messages}) or the "
                "job's own ({detail})."
            },
            "result": {"help_text": "What the finished job produced; empty until it succeeded."},
        }


class JobConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    state = serializers.ChoiceField(choices=Job.State.choices, help_text="The state the job finished in.")


# -- filters --------------------------------------------------------------------------------------


class JobFilter(django_filters.FilterSet):
    """``?kind=`` and ``?state=``; a value that is no kind or state is a 400 naming the parameter."""

    kind = django_filters.ChoiceFilter(choices=Job.Kind.choices)
    state = django_filters.ChoiceFilter(choices=Job.State.choices)

    class Meta:
        model = Job
        fields = ["kind", "state"]


# -- views ----------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(
        description="The caller's organization's jobs, newest first (cursor pages: ?limit=, then the next/previous "
        "links); ?kind= and ?state= filter them. Never cached: progress is read from the job as it is now."
    ),
    retrieve=extend_schema(
        description="One job: its parameters, progress, the first 1000 of its problems (error_count counts them "
        "all) and, once it succeeded, its result."
    ),
)
class JobViewSet(OrgScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The caller's organization's jobs, newest first, keyset-paginated on (created_at, id); never cached."""

    model = Job
    # Cancelling is a POST that needs no ``add_job``: the view checks the kind's permission on the job itself.
    permission_classes = role_permissions(Job, POST="view")
    serializer_class = JobSerializer
    filterset_class = JobFilter
    pagination_class = KeysetPagination
    keyset_ordering = ("-created_at", "-id")

    def scoped(self, organization_id: int) -> QuerySet[Job]:
        return Job.objects.for_org(organization_id).with_related()

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return JobSerializer if self.action == "list" else JobDetailSerializer

    def check_control(self, request: Request, job: Job) -> None:
        """403 unless the caller's role has the permission a job of this kind needs to be controlled."""
        user = request.user
        if user.is_superuser:
            return
        codename = job_control_permission(job.kind)
        role = user.membership.role  # type: ignore[union-attr]
        if codename not in ROLE_PERMISSIONS.get(role, frozenset()):
            raise PermissionDenied(
                f"Your role '{role}' may not cancel {job.kind} jobs: it lacks the '{codename}' permission."
            )

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(JobDetailSerializer, description="The job, cancelled: nothing of it became visible."),
            409: OpenApiResponse(
                JobConflictSerializer,
                description="The job already finished (succeeded, failed or cancelled); 'state' says how.",
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a queued or running job: what its chunks staged is discarded, and a chunk still running rolls back."""
        job = self.get_object()
        self.check_control(request, job)
        try:
            cancelled = job_cancel(organization=request_org(request), job_id=job.pk)
        except Job.DoesNotExist:  # deleted since (its organization's deletion cascades)
            raise Http404 from None
        except JobFinishedError as exc:
            body = {"detail": str(exc), "state": exc.job.state}
            return Response(body, status=status.HTTP_409_CONFLICT)
        cancelled.requested_by = job.requested_by  # loaded with the job already
        return Response(JobDetailSerializer(cancelled, context=self.get_serializer_context()).data)
