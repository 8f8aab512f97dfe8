"""Django admin for the emissions domain: org-scoped for staff, fast on millions of rows.

Scoping: a superuser sees every organization. Any other staff user sees only the rows of
the organization in ``request.user.membership`` (none without a membership), can only
pick related objects of that organization, and every save is forced into it. Public
emission factors (datasets without an organization) are visible to everyone but only
superusers may change them.

A foreign key shows or offers another row in four places, each scoped the same way
(``scoped_related_queryset``): the form field's choices (so a submitted id of another
organization is an invalid choice), the raw-id widget's label (Django's looks any id up
through the default manager: ``ScopedRawIdWidget`` names only rows among the choices, in the
add form's URL parameters and in a rejected form's re-render alike), the choices of a list
filter over the key (``OrgRelatedFieldListFilter``, put in place by ``get_list_filter``), and
autocomplete, whose results come from the related model's own admin queryset, org-scoped here.

Speed: every FK uses a raw-id or autocomplete widget (no <select> with a million options),
changelists select their related rows in the same query, never show the unfiltered total
(``show_full_result_count = False``) and page with ``EstimatedCountPaginator``, which does
not run ``COUNT(*)`` over a whole big table.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.auth.models import User
from django.db.models import Model, OuterRef, Q, QuerySet, Subquery, URLField
from django.db.models.fields.related import RelatedField
from django.forms import ModelChoiceField
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from emissions.jobs.progress import duration_text, job_duration, job_percent, rows_text
from emissions.models import (
    ActivityRecord,
    AuditEvent,
    Category,
    CategoryExclusion,
    Emission,
    EmissionFactor,
    EmissionQuerySet,
    ExchangeRate,
    FactorDataset,
    Job,
    Membership,
    Organization,
    PriceIndex,
    Supplier,
)
from emissions.services.jobs import jobs_cancel
from emissions.services.organizations import job_control_permission, job_control_permissions, membership_role_set
from perf.admin import EstimatedCountPaginator, ScopedRawIdWidget

# VCCI's name where Django's admin says "Django administration".
admin.site.site_header = "VCCI administration"
admin.site.site_title = "VCCI"
admin.site.index_title = "Value Chain Carbon Intelligence"


def user_org_id(request: HttpRequest) -> int | None:
    """The organization id of the requesting staff user, or None when they have no membership.

    One query per request: the user object caches its membership, a missing one included.
    """
    membership = getattr(request.user, "membership", None)
    return None if membership is None else membership.organization_id


class FastAdmin(admin.ModelAdmin):
    """Defaults for changelists over large tables."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50


class OrgScopedAdminMixin:
    """Limits a ModelAdmin to the requesting user's organization unless they are a superuser.

    ``org_lookup`` is the path from the model to its organization id (``organization_id``
    for tenant-owned rows). Related choices are limited per related model in
    ``scoped_related_queryset``, so a staff user cannot attach another tenant's supplier,
    activity or supplier-specific factor.
    """

    org_lookup = "organization_id"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        qs = super().get_queryset(request)  # type: ignore[misc]
        if request.user.is_superuser:
            return qs
        org_id = user_org_id(request)
        if org_id is None:
            return qs.none()
        return self.scope_queryset(qs, org_id)

    def scope_queryset(self, qs: QuerySet[Any], org_id: int) -> QuerySet[Any]:
        return qs.filter(**{self.org_lookup: org_id})

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        if not request.user.is_superuser and hasattr(obj, "organization_id"):
            obj.organization_id = user_org_id(request)
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)  # type: ignore[misc]
        if not request.user.is_superuser and any(f.name == "organization" for f in self.model._meta.fields):  # type: ignore[attr-defined]
            # The only organization a staff user may pick; preselected so the add form just works.
            initial.setdefault("organization", user_org_id(request))
        return initial

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not request.user.is_superuser:
            org_id = user_org_id(request)
            scoped = scoped_related_queryset(db_field.related_model, org_id)
            if scoped is not None:
                kwargs["queryset"] = scoped
                # Django gives an autocomplete field precedence over a raw-id one; so does this. (An
                # autocomplete widget renders its selected option from the field's queryset: scoped.)
                autocomplete = db_field.name in self.get_autocomplete_fields(request)  # type: ignore[attr-defined]
                if "widget" not in kwargs and not autocomplete and db_field.name in self.raw_id_fields:  # type: ignore[attr-defined]
                    site = self.admin_site  # type: ignore[attr-defined]
                    kwargs["widget"] = ScopedRawIdWidget(db_field.remote_field, site, scoped, using=kwargs.get("using"))
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]
        if (
            not request.user.is_superuser
            and db_field.related_model is Organization
            and isinstance(field, ModelChoiceField)
        ):
            # Exactly one valid choice. Keeping the field (rather than excluding it) lets the form
            # validate the (organization, ...) unique constraints before saving.
            field.empty_label = None
        return field

    def get_list_filter(self, request: HttpRequest) -> Any:
        """The declared list filters, each over a foreign key (or a path ending in one) scoped.

        Django's ``RelatedFieldListFilter`` lists every row of the related table; scoping keeps the
        choices to the organization's, and adds no filter: one over a big table stays a design choice.
        """
        return [self._scoped_list_filter(entry) for entry in super().get_list_filter(request)]  # type: ignore[misc]

    def _scoped_list_filter(self, entry: Any) -> Any:
        if isinstance(entry, str):
            field = get_fields_from_path(self.model, entry)[-1]  # type: ignore[attr-defined]
            return (entry, OrgRelatedFieldListFilter) if field.is_relation else entry
        if isinstance(entry, tuple) and entry[1] is admin.RelatedFieldListFilter:
            return (entry[0], OrgRelatedFieldListFilter)
        return entry


class OrgRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A list filter over a foreign key whose choices are the staff user's organization's rows."""

    def field_choices(
        self, field: RelatedField[Any, Any], request: HttpRequest, model_admin: admin.ModelAdmin[Any]
    ) -> Any:
        if request.user.is_superuser:
            return super().field_choices(field, request, model_admin)
        scoped = scoped_related_queryset(field.related_model, user_org_id(request))
        if scoped is None:
            return super().field_choices(field, request, model_admin)
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(
            include_blank=False, limit_choices_to={"pk__in": scoped.values("pk")}, ordering=ordering
        )


TENANT_RELATED: tuple[type[Model], ...] = (Organization, Supplier, ActivityRecord, FactorDataset, EmissionFactor, User)


def scoped_related_queryset(model: type[Model], org_id: int | None) -> QuerySet[Any] | None:
    """Choices a non-superuser may pick for an FK to ``model``; None when the model is not tenant data."""
    if org_id is None:
        # Staff without a membership may pick nothing tenant-owned.
        return model._default_manager.none() if model in TENANT_RELATED else None
    if model is Organization:
        return Organization.objects.filter(pk=org_id)
    if model is Supplier:
        return Supplier.objects.for_org(org_id)
    if model is ActivityRecord:
        return ActivityRecord.objects.for_org(org_id)
    if model is FactorDataset:
        # Only the org's own datasets: public datasets are superuser-maintained.
        return FactorDataset.objects.filter(organization_id=org_id)
    if model is EmissionFactor:
        return EmissionFactor.objects.visible_to(org_id)
    if model is User:
        # A membership's user, for instance: the organization's members, never another's by name.
        return User.objects.filter(membership__organization_id=org_id)
    return None


class PeriodOrderingMixin:
    """Newest first, in the order an index can deliver without sorting the table.

    Org staff read through the (organization, -period_start, -id) index. Superusers see all
    organizations, where no index leads with period_start, so they get the primary key order
    (newest rows first) instead of a sort over millions of rows.
    """

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        return ("-id",) if request.user.is_superuser else ("-period_start", "-id")


class SuperuserWritesMixin:
    """Read-only for everyone but superusers (reference data and calculator output)."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return request.user.is_superuser


@admin.register(Organization)
class OrganizationAdmin(SuperuserWritesMixin, OrgScopedAdminMixin, FastAdmin):
    org_lookup = "pk"
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Membership)
class MembershipAdmin(SuperuserWritesMixin, OrgScopedAdminMixin, FastAdmin):
    # Superuser-only writes: an org admin able to edit memberships could pull any user into their org.
    list_display = ("user", "organization", "role", "created_at")
    list_select_related = ("user", "organization")
    list_filter = ("role",)
    search_fields = ("user__username", "organization__slug")
    raw_id_fields = ("user",)
    autocomplete_fields = ("organization",)

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if isinstance(obj, Membership) and (not change or "role" in form.changed_data):
            # The admin's permissions come from the role's group, which the membership row alone does not move.
            membership_role_set(membership=obj, role=obj.role)


@admin.register(CategoryExclusion)
class CategoryExclusionAdmin(OrgScopedAdminMixin, FastAdmin):
    """The Scope 3 categories an organization has assessed as not relevant, and why (the inventory shows them)."""

    list_display = ("category", "explanation", "organization", "updated_at")
    list_select_related = ("organization",)
    autocomplete_fields = ("organization",)
    ordering = ("organization_id", "category")  # matches category_exclusion_org_cat_uniq


@admin.register(Supplier)
class SupplierAdmin(OrgScopedAdminMixin, FastAdmin):
    list_display = ("name", "external_id", "country", "naics", "organization", "updated_at")
    list_select_related = ("organization",)
    # Prefix/equality searches on short, indexed-by-org columns; no full-text over big text fields.
    search_fields = ("name", "=external_id", "=naics")
    autocomplete_fields = ("organization",)
    ordering = ("organization_id", "name")  # matches the (organization, name) index


class FactorVisibilityMixin(OrgScopedAdminMixin):
    """Public factor data (no organization) is visible to all staff, editable by superusers only."""

    dataset_org_field = "organization"

    def scope_queryset(self, qs: QuerySet[Any], org_id: int) -> QuerySet[Any]:
        field = self.dataset_org_field
        return qs.filter(Q(**{f"{field}__isnull": True}) | Q(**{f"{field}_id": org_id}))

    def _is_public(self, obj: Model) -> bool:
        raise NotImplementedError

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and not request.user.is_superuser and self._is_public(obj):
            return False
        return super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if obj is not None and not request.user.is_superuser and self._is_public(obj):
            return False
        return super().has_delete_permission(request, obj)  # type: ignore[misc]


@admin.register(FactorDataset)
class FactorDatasetAdmin(FactorVisibilityMixin, FastAdmin):
    list_display = ("name", "source", "version", "basis_year", "gwp_set", "organization", "imported_at")
    # Publisher URLs are https; also opts in to Django 6.0's default now.
    formfield_overrides = {URLField: {"assume_scheme": "https"}}
    list_select_related = ("organization",)
    list_filter = ("source",)
    search_fields = ("name", "=version")
    autocomplete_fields = ("organization",)

    def _is_public(self, obj: Model) -> bool:
        return obj.organization_id is None  # type: ignore[attr-defined]


@admin.register(EmissionFactor)
class EmissionFactorAdmin(FactorVisibilityMixin, FastAdmin):
    dataset_org_field = "dataset__organization"
    list_display = ("activity", "name", "region", "year", "unit", "co2e_per_unit", "dataset")
    list_select_related = ("dataset",)
    list_filter = ("dataset__source", "year")
    # activity is the lookup key (indexed, with region/year); prefix match keeps it on the index.
    search_fields = ("^activity", "name")
    raw_id_fields = ("dataset", "supplier")

    def _is_public(self, obj: Model) -> bool:
        return obj.dataset.organization_id is None  # type: ignore[attr-defined]


class ReferenceSetAdmin(SuperuserWritesMixin, FactorVisibilityMixin, FastAdmin):
    """Reference sets: staff see the public sets and their organization's own; superusers load and edit them."""

    list_select_related = ("organization",)
    search_fields = ("=currency", "=set_name")
    autocomplete_fields = ("organization",)

    def _is_public(self, obj: Model) -> bool:
        return obj.organization_id is None  # type: ignore[attr-defined]


@admin.register(ExchangeRate)
class ExchangeRateAdmin(ReferenceSetAdmin):
    list_display = ("set_name", "organization", "currency", "quote_currency", "year", "rate", "source")
    list_filter = ("set_name", "quote_currency")


@admin.register(PriceIndex)
class PriceIndexAdmin(ReferenceSetAdmin):
    list_display = ("set_name", "organization", "currency", "year", "value", "source")
    list_filter = ("set_name",)


@admin.register(ActivityRecord)
class ActivityRecordAdmin(PeriodOrderingMixin, SuperuserWritesMixin, OrgScopedAdminMixin, FastAdmin):
    """Inputs are entered through the API; hand edits here would leave the emission stale."""

    list_display = (
        "id",
        "period_start",
        "category",
        "method",
        "amount",
        "unit",
        "activity",
        "supplier",
        "organization",
    )
    list_select_related = ("supplier", "organization")
    list_filter = ("category", "method")
    date_hierarchy = "period_start"
    search_fields = ("=external_ref", "^activity")
    raw_id_fields = ("supplier", "factor")
    autocomplete_fields = ("organization",)


@admin.register(Emission)
class EmissionAdmin(PeriodOrderingMixin, SuperuserWritesMixin, OrgScopedAdminMixin, FastAdmin):
    """Calculator output, read-only; the changelist opens with a per-category summary."""

    change_list_template = "admin/emissions/emission/change_list.html"
    list_display = (
        "id",
        "period_start",
        "category",
        "method",
        "co2e_kg",
        "supplier",
        "factor__activity",
        "organization",
    )
    list_select_related = ("supplier", "factor", "organization")
    list_filter = ("category", "method")
    date_hierarchy = "period_start"
    search_fields = ("^factor__activity",)
    raw_id_fields = ("activity", "supplier", "factor")
    autocomplete_fields = ("organization",)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["category_summary"] = category_summary(context["cl"].queryset)
        return response


def category_summary(queryset: EmissionQuerySet) -> dict[str, Any]:
    """Totals per Scope 3 category for ``queryset`` (the filtered changelist), in one GROUP BY query.

    Returns ``rows`` (category label, tonnes CO2e, records, share in percent, sorted by
    tonnes descending) and the overall ``total_t`` / ``records``. All numbers are Decimal.
    """
    groups = list(queryset.summary("category"))  # largest total first, ties by category
    total_kg = sum((group["total_kg"] for group in groups), Decimal(0))
    labels = dict(Category.choices)
    rows = [
        {
            "category": group["key"],
            "label": labels.get(group["key"], str(group["key"])),
            "tonnes": group["total_kg"] / Decimal(1000),
            "records": group["count"],
            "share": (group["total_kg"] * 100 / total_kg) if total_kg else Decimal(0),
        }
        for group in groups
    ]
    return {"rows": rows, "total_t": total_kg / Decimal(1000), "records": sum(r["records"] for r in rows)}


@admin.register(AuditEvent)
class AuditEventAdmin(OrgScopedAdminMixin, FastAdmin):
    """The audit log, read-only for everyone (superusers included): only the database's triggers write it."""

    list_display = ("occurred_at", "action", "table_name", "object_id", "actor", "request_id", "job_id")
    list_filter = ("action", "table_name")  # choices: no query over the log
    search_fields = ("=object_id", "=request_id")
    readonly_fields = [field.name for field in AuditEvent._meta.fields] + ["actor"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        username = User.objects.filter(pk=OuterRef("actor_id")).values("username")[:1]
        return super().get_queryset(request).annotate(actor_username=Subquery(username))

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # Org staff read their log newest first through (organization_id, occurred_at, id); superusers by id.
        return ("-id",) if request.user.is_superuser else ("-occurred_at", "-id")

    @admin.display(description="actor")
    def actor(self, obj: AuditEvent) -> str:
        return getattr(obj, "actor_username", None) or ("" if obj.actor_id is None else f"user {obj.actor_id}")

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# -- jobs -------------------------------------------------------------------------------------------


def fieldset_fields(fieldsets: Any) -> tuple[str, ...]:
    """Every field the ``fieldsets`` show, in order (all of them read-only for a read-only admin)."""
    return tuple(field for _, options in fieldsets for field in options["fields"])


@admin.register(Job)
class JobAdmin(OrgScopedAdminMixin, FastAdmin):
    """Jobs (imports, recalculations) as they run: read-only, org-scoped; "Cancel selected jobs" cancels them.

    Nothing of a job is edited here: its row is the workers' (``emissions.jobs.runner``). Cancelling one needs the
    permission of its kind's write (``emissions.services.organizations.job_control_permission``), as in the API.
    """

    list_display = (
        "id",
        "kind",
        "state",
        "progress_bar",
        "rows",
        "error_count",
        "requested_by",
        "created_at",
        "duration",
        "organization",
    )
    list_select_related = ("requested_by", "organization")
    list_filter = ("kind", "state")
    ordering = ("-created_at", "-id")
    actions = ["cancel_selected"]
    fieldsets = (
        (None, {"fields": ("organization", "kind", "state", "requested_by")}),
        ("Progress", {"fields": ("progress_bar", "chunks", "rows", "error_count")}),
        ("Timings", {"fields": ("created_at", "started_at", "finished_at", "duration")}),
        ("Parameters, problems and result", {"fields": ("params_json", "errors_json", "result_json")}),
    )
    readonly_fields = fieldset_fields(fieldsets)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Whether the user may cancel jobs of some kind (each job's own kind is checked when it is cancelled)."""
        return any(request.user.has_perm(f"emissions.{codename}") for codename in job_control_permissions())

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        percent = job_percent(job)
        return format_html(
            '<progress value="{}" max="100" title="{}%">{}%</progress> {}%', percent, percent, percent, percent
        )

    @admin.display(description="rows done / total")
    def rows(self, job: Job) -> str:
        return rows_text(job)

    @admin.display(description="chunks done / total")
    def chunks(self, job: Job) -> str:
        return f"{job.chunks_done} / {job.chunks_total}"

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        return duration_text(job_duration(job))

    @admin.display(description="parameters")
    def params_json(self, job: Job) -> str:
        return json_block(job.params)

    @admin.display(description="errors (the first 1000)")
    def errors_json(self, job: Job) -> str:
        return json_block(job.errors)

    @admin.display(description="result")
    def result_json(self, job: Job) -> str:
        return json_block(job.result)

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        # The queryset is the changelist's: scoped to the user's organization (a superuser's: any).
        allowed: list[int] = []
        refused: list[int] = []
        for job_id, kind in queryset.order_by("pk").values_list("pk", "kind"):
            permitted = request.user.has_perm(f"emissions.{job_control_permission(kind)}")
            (allowed if permitted else refused).append(job_id)
        done = jobs_cancel(organization=None, job_ids=allowed)
        cancelled = done.cancelled
        finished = [f"#{job.pk} ({job.state})" for job in done.finished]
        if cancelled:
            self.message_user(request, f"Cancelled {len(cancelled)} job(s): nothing of them became visible.")
        if finished:
            self.message_user(
                request, f"Not cancelled, already finished: {', '.join(finished)}.", level=messages.WARNING
            )
        if refused:
            listed = ", ".join(f"#{job_id}" for job_id in refused)
            self.message_user(request, f"Not cancelled, your role may not: {listed}.", level=messages.ERROR)


def json_block(value: Any) -> str:
    """``value`` as indented JSON in a <pre> block, escaped."""
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))
