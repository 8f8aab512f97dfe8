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
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Model, OuterRef, Q, QuerySet, Subquery, URLField
from django.db.models.fields.related import RelatedField
from django.forms import ModelChoiceField
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from calculator.types import present_kg
from emissions import admin_views
from emissions.api.export import csv_response
from emissions.inputs import as_id
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
    SupplierYearRollup,
)
from emissions.rollups import rollup_reads
from emissions.services.jobs import jobs_cancel
from emissions.services.organizations import job_control_permission, job_control_permissions, membership_role_set
from emissions.templatetags.vcci_format import kg
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


class SuperuserColumnsMixin:
    """The ``organization`` column only for superusers, who see every organization: a member's list has one."""

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = super().get_list_display(request)  # type: ignore[misc]
        return columns if request.user.is_superuser else tuple(c for c in columns if c != "organization")


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
class SupplierAdmin(SuperuserColumnsMixin, OrgScopedAdminMixin, FastAdmin):
    list_display = ("name", "external_id", "country", "naics", "emissions_link", "organization", "updated_at")
    list_select_related = ("organization",)
    readonly_fields = ("emissions_link",)
    # Prefix/equality searches on short, indexed-by-org columns; no full-text over big text fields.
    search_fields = ("name", "=external_id", "=naics")
    autocomplete_fields = ("organization",)
    ordering = ("organization_id", "name")  # matches the (organization, name) index

    @admin.display(description="emissions")
    def emissions_link(self, supplier: Supplier) -> str:
        if supplier.pk is None:
            return ""
        url = reverse("admin:emissions_emission_changelist")
        return format_html('<a href="{}?supplier__id__exact={}">Its emissions</a>', url, supplier.pk)


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
    list_display = ("activity_short", "name_short", "region", "year", "unit", "per_unit", "dataset_short")
    list_select_related = ("dataset",)
    list_filter = ("dataset__source", "year")
    # activity is the lookup key (indexed, with region/year); prefix match keeps it on the index.
    search_fields = ("^activity", "name")
    raw_id_fields = ("dataset", "supplier")

    def _is_public(self, obj: Model) -> bool:
        return obj.dataset.organization_id is None  # type: ignore[attr-defined]

    @admin.display(description="activity", ordering="activity")
    def activity_short(self, factor: EmissionFactor) -> str:
        return short_text(factor.activity, 24)

    @admin.display(description="name", ordering="name")
    def name_short(self, factor: EmissionFactor) -> str:
        return short_text(factor.name, 40)

    @admin.display(description="kg CO2e per unit", ordering="co2e_per_unit")
    def per_unit(self, factor: EmissionFactor) -> str:
        return f"{factor.co2e_per_unit.normalize():f}"

    @admin.display(description="dataset", ordering="dataset")
    def dataset_short(self, factor: EmissionFactor) -> str:
        dataset = factor.dataset
        return titled(f"{SOURCE_WORDS.get(dataset.source, dataset.source)} {dataset.version}", str(dataset))


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


# -- activities and emissions: columns for a 1400 px screen, figures for people, results readable ---------------------


def short_text(value: str, limit: int = 32) -> str:
    """``value`` cut to ``limit`` characters with an ellipsis; the whole text in the element's title."""
    if len(value) <= limit:
        return value
    return format_html('<span title="{}">{}…</span>', value, value[: limit - 1])


def people_kg(value: Decimal | None) -> str:
    """kg CO2e rounded for people, the exact figure in the title (``vcci_format.kg``)."""
    if value is None:
        return "-"
    return format_html('<span title="{} kg CO2e">{}</span>', present_kg(value), kg(value))


# Short words for the list columns (the full label is in each cell's title).
METHOD_WORDS = {"spend": "spend", "activity": "activity", "distance": "distance", "supplier_specific": "supplier"}
SOURCE_WORDS = {
    "epa_supply_chain": "EPA SC",
    "desnz": "DESNZ",
    "epa_hub": "EPA Hub",
    "ipcc_gwp": "IPCC",
    "supplier": "supplier",
}


def titled(text: str, title: str) -> str:
    return format_html('<span title="{}">{}</span>', title, text)


class CompactColumnsMixin:
    """Columns that keep a changelist within a 1400 px screen beside the admin's navigation and filters: the
    category's number, the method's and source's short words, ISO dates; each full label in the cell's title.
    "4 Upstream transportation and distribution" and "Average-data (activity)" alone would wrap every row."""

    @admin.display(description="cat.", ordering="category")
    def category_short(self, obj: ActivityRecord | Emission) -> str:
        return titled(str(obj.category), obj.get_category_display())

    @admin.display(description="method", ordering="method")
    def method_short(self, obj: ActivityRecord | Emission) -> str:
        return titled(METHOD_WORDS.get(obj.method, obj.method), obj.get_method_display())

    @admin.display(description="period", ordering="period_start")
    def period(self, obj: ActivityRecord | Emission) -> str:
        return titled(obj.period_start.isoformat(), f"{obj.period_start} to {obj.period_end}")

    @admin.display(description="supplier", ordering="supplier__name")
    def supplier_short(self, obj: ActivityRecord | Emission) -> str:
        return "-" if obj.supplier is None else short_text(obj.supplier.name, 24)


SEARCHED_SUPPLIERS = 200


class SupplierSearchMixin:
    """The declared search, or a supplier: its external id exactly, or the start of its name.

    The organization's matching suppliers are found first (the first ``SEARCHED_SUPPLIERS`` by name: a term that
    starts more names than that is too broad to be useful), then the rows by ``supplier_id IN (...)`` through their
    (organization, supplier, period) index: a join searched row by row over millions of rows would read the whole
    organization for a rare name. The suppliers' table is small beside the rows; its scan is cheap.
    """

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        term = search_term.strip()
        declared, duplicates = super().get_search_results(request, queryset, term)  # type: ignore[misc]
        if not term:
            return declared, duplicates
        suppliers = (
            Supplier.objects.all() if request.user.is_superuser else Supplier.objects.for_org(user_org_id(request) or 0)
        )
        matching = suppliers.filter(Q(external_id=term) | Q(name__istartswith=term)).order_by("name", "pk")
        return declared | queryset.filter(supplier_id__in=matching.values("pk")[:SEARCHED_SUPPLIERS]), duplicates


TOP_SUPPLIER_CHOICES = 10


class SupplierListFilter(admin.SimpleListFilter):
    """Rows of one supplier (``?supplier__id__exact=``, the supplier page's link); the choices are the
    organization's ten largest suppliers by emissions, from the yearly rollup (none offered where the rollups are not
    read: ranking would sum every emission on every page), and the chosen one."""

    title = "supplier"
    parameter_name = "supplier__id__exact"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin[Any]) -> list[tuple[str, str]]:
        # A superuser sees every organization's rows: no one organization's ranking to offer.
        org_id = None if request.user.is_superuser else user_org_id(request)
        choices: list[tuple[str, str]] = []
        if org_id is not None and rollup_reads():
            ranked = (
                SupplierYearRollup.objects.for_org(org_id)
                .filter(supplier__isnull=False)
                .summary("supplier")[:TOP_SUPPLIER_CHOICES]
            )
            choices = [(str(row["key"]), row["supplier_name"]) for row in ranked]
        chosen = as_id(self.value())
        if chosen is not None and str(chosen) not in dict(choices):
            # Named only among the suppliers the user may see (another organization's id is just a number).
            visible = Supplier.objects.all() if request.user.is_superuser else Supplier.objects.for_org(org_id or 0)
            name = visible.filter(pk=chosen).values_list("name", flat=True).first()
            choices.append((str(chosen), name or f"supplier {chosen}"))
        return choices

    def has_output(self) -> bool:
        # Django leaves out (and so never applies) a filter with no choices: a chosen value must be applied or refused,
        # never ignored (a superuser's list, or another organization's id, offers none).
        return super().has_output() or bool(self.value())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if not self.value():
            return None
        chosen = as_id(self.value())
        if chosen is None:
            raise IncorrectLookupParameters(f"supplier: '{self.value()}' is not a supplier's id.")
        return queryset.filter(supplier_id=chosen)


class ResultDisplayMixin:
    """An emission's result as people read it (``result``: the emission a page shows, or None): the factor, the
    fallbacks and warnings, the data quality, the currency conversion. The emission's own page and its activity's
    show the same fields."""

    def result(self, obj: Any) -> Emission | None:
        raise NotImplementedError

    @admin.display(description="factor")
    def factor_text(self, obj: Any) -> str:
        emission = self.result(obj)
        return "" if emission is None or not emission.factor_id else factor_text(emission.factor)

    @admin.display(description="fallbacks")
    def fallbacks_list(self, obj: Any) -> str:
        emission = self.result(obj)
        return "" if emission is None else notes_list(emission.fallbacks, "None: the factor matched as asked.")

    @admin.display(description="warnings")
    def warnings_list(self, obj: Any) -> str:
        emission = self.result(obj)
        return "" if emission is None else notes_list(emission.warnings, "None.")

    @admin.display(description="data quality")
    def quality(self, obj: Any) -> str:
        emission = self.result(obj)
        return "" if emission is None else quality_table(emission.data_quality)

    @admin.display(description="currency conversion")
    def conversion_text(self, obj: Any) -> str:
        emission = self.result(obj)
        return "" if emission is None else conversion_text(emission.conversion)


RESULT_FIELDS = ("result_co2e", "factor_text", "fallbacks_list", "warnings_list", "quality", "conversion_text")


class RecordAdmin(
    ResultDisplayMixin,
    CompactColumnsMixin,
    SupplierSearchMixin,
    SuperuserColumnsMixin,
    PeriodOrderingMixin,
    SuperuserWritesMixin,
    OrgScopedAdminMixin,
    FastAdmin,
):
    """What the activities' and the emissions' admins share: one organization's rows by period, compact columns that
    fit 1400 px, search by supplier, and the calculated result shown readably (``result()`` says which)."""

    date_hierarchy = "period_start"
    autocomplete_fields = ("organization",)


@admin.register(ActivityRecord)
class ActivityRecordAdmin(RecordAdmin):
    """Inputs are entered through the API or the CSV upload (``import/``); hand edits here would leave the emission
    stale. Each activity's page shows its calculated emission readably: figure, factor, fallbacks, data quality."""

    change_list_template = "admin/emissions/activityrecord/change_list.html"
    # No id column: the period links to the page (the ids are in the export and the API); room on a 1400 px screen.
    list_display = (
        "period",
        "category_short",
        "method_short",
        "quantity",
        "activity_short",
        "supplier_short",
        "emission_kg",
        "organization",
    )
    list_select_related = ("supplier", "organization", "emission")
    list_filter = ("category", "method", SupplierListFilter)
    search_fields = ("=external_ref", "^activity")
    search_help_text = "A supplier's external id or the start of its name, or the start of an activity key."
    raw_id_fields = ("supplier", "factor")
    fieldsets = (
        (None, {"fields": ("organization", "supplier", "category", "method", "period_start", "period_end")}),
        ("Quantity", {"fields": ("amount", "unit", "mass", "mass_unit", "distance", "distance_unit")}),
        ("Spend", {"fields": ("currency", "spend_year", "exchange_rate_set", "price_index_set")}),
        ("Factor asked for", {"fields": ("factor", "activity", "region", "year", "source", "dataset_version")}),
        ("Reference", {"fields": ("external_ref",)}),
        ("Calculated emission", {"fields": RESULT_FIELDS}),
    )
    readonly_fields = RESULT_FIELDS

    def get_urls(self) -> list[URLPattern]:
        site = self.admin_site
        return [
            path("import/", site.admin_view(admin_views.import_view), name="emissions_activityrecord_import"),
            path(
                "import/<int:job_id>/",
                site.admin_view(admin_views.import_job_view),
                name="emissions_activityrecord_import_job",
            ),
            *super().get_urls(),
        ]

    @admin.display(description="quantity")
    def quantity(self, activity: ActivityRecord) -> str:
        return f"{activity.amount.normalize():,f} {activity.unit}"

    @admin.display(description="activity", ordering="activity")
    def activity_short(self, activity: ActivityRecord) -> str:
        return short_text(activity.activity, 24)

    @admin.display(description="kg CO2e")
    def emission_kg(self, activity: ActivityRecord) -> str:
        emission = getattr(activity, "emission", None)
        return people_kg(None if emission is None else emission.co2e_kg)

    def result(self, activity: ActivityRecord) -> Emission | None:
        # Six fields show the one emission: loaded once per page, with its factor and dataset.
        if not hasattr(activity, "_result"):
            found = None if activity.pk is None else Emission.objects.with_related().filter(activity_id=activity.pk)
            activity._result = None if found is None else found.first()  # type: ignore[attr-defined]
        return activity._result  # type: ignore[attr-defined]

    @admin.display(description="emission")
    def result_co2e(self, activity: ActivityRecord) -> str:
        emission = self.result(activity)
        if emission is None:
            return "Not calculated."
        url = reverse("admin:emissions_emission_change", args=[emission.pk])
        return format_html('{} CO2e (<a href="{}">emission #{}</a>)', people_kg(emission.co2e_kg), url, emission.pk)


# An emission's page shows its result through these (read-only, readable), never its JSON columns.
EMISSION_RESULT_FIELDS = (
    "co2e_text",
    "biogenic_text",
    "gases_table",
    "factor_text",
    "fallbacks_list",
    "warnings_list",
    "quality",
    "conversion_text",
    "calculated_at",
)


@admin.register(Emission)
class EmissionAdmin(RecordAdmin):
    """Calculator output, read-only; the changelist opens with a per-category summary and downloads as CSV (the
    API's export of the rows the filters select). Each emission's page reads as sentences and tables, not JSON."""

    change_list_template = "admin/emissions/emission/change_list.html"
    list_display = (  # no id column, as the activities'
        "period",
        "category_short",
        "method_short",
        "co2e",
        "supplier_short",
        "source",
        "factor_activity",
        "organization",
    )
    list_select_related = ("supplier", "factor__dataset", "organization")
    list_filter = ("category", "method", "factor__dataset__source", SupplierListFilter)
    search_fields = ("^factor__activity",)
    search_help_text = "A supplier's external id or the start of its name, or the start of the factor's activity key."
    raw_id_fields = ("activity", "supplier", "factor")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "organization",
                    "activity",
                    "supplier",
                    "factor",
                    "category",
                    "method",
                    "period_start",
                    "period_end",
                )
            },
        ),
        (
            "Result",
            {"fields": EMISSION_RESULT_FIELDS},
        ),
    )
    readonly_fields = EMISSION_RESULT_FIELDS

    def result(self, emission: Emission) -> Emission:
        return emission

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.export_view)
        return [path("export/", view, name="emissions_emission_export"), *super().get_urls()]

    def export_view(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        """The rows the changelist's filters and search select (its query string), as the API's emissions CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            rows = self.get_changelist_instance(request).queryset
        except IncorrectLookupParameters as exc:
            # The changelist shows the same with "?e=1"; a download has no page to show it on.
            detail = exc.args[0] if exc.args else "a filter's value is not valid."
            return HttpResponse(f"{detail}\n", status=400, content_type="text/plain; charset=utf-8")
        # A superuser's rows are every organization's, whatever their own membership.
        membership = None if request.user.is_superuser else getattr(request.user, "membership", None)
        return csv_response(rows, slug=membership.organization.slug if membership else "all")

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["category_summary"] = category_summary(context["cl"].queryset)
        return response

    @admin.display(description="kg CO2e", ordering="co2e_kg")
    def co2e(self, emission: Emission) -> str:
        return people_kg(emission.co2e_kg)

    @admin.display(description="source", ordering="factor__dataset__source")
    def source(self, emission: Emission) -> str:
        dataset = emission.factor.dataset
        return titled(SOURCE_WORDS.get(dataset.source, dataset.source), dataset.get_source_display())

    @admin.display(description="factor", ordering="factor__activity")
    def factor_activity(self, emission: Emission) -> str:
        return short_text(emission.factor.activity, 24)

    @admin.display(description="kg CO2e")
    def co2e_text(self, emission: Emission) -> str:
        return format_html("{} (exactly {} kg)", people_kg(emission.co2e_kg), present_kg(emission.co2e_kg))

    @admin.display(description="biogenic CO2 (outside the scopes)")
    def biogenic_text(self, emission: Emission) -> str:
        if emission.biogenic_co2_kg is None:
            return "The factor has no biogenic figure."
        return people_kg(emission.biogenic_co2_kg)

    @admin.display(description="gases")
    def gases_table(self, emission: Emission) -> str:
        if not emission.gases:
            return "The factor gives CO2e only."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td></tr>", ((gas, kg(value)) for gas, value in sorted(emission.gases.items()))
        )
        return format_html("<table><thead><tr><th>gas</th><th>kg</th></tr></thead><tbody>{}</tbody></table>", rows)


def factor_text(factor: EmissionFactor) -> str:
    """A factor as a sentence: its name, figure per unit, dataset, region and year, linked to its page."""
    url = reverse("admin:emissions_emissionfactor_change", args=[factor.pk])
    dataset = factor.dataset
    return format_html(
        '<a href="{}">{}</a>: {} kg CO2e per {} ({} {}, {}, {}; activity key <code>{}</code>)',
        url,
        factor.name or factor.activity,
        f"{factor.co2e_per_unit.normalize():f}",  # 10.000 as 10, not 1E+1
        factor.unit,
        dataset.get_source_display(),
        dataset.version,
        factor.region or "no region",
        factor.year,
        factor.activity,
    )


def notes_list(notes: Any, empty: str) -> str:
    """Fallbacks or warnings (``[{"code", "detail"}]``) as a list: each code in bold, then what it means."""
    items = [note for note in notes or () if isinstance(note, dict)]
    if not items:
        return empty
    return format_html(
        "<ul>{}</ul>",
        format_html_join(
            "", "<li><strong>{}</strong>: {}</li>", ((n.get("code", ""), n.get("detail", "")) for n in items)
        ),
    )


QUALITY_WORDS = {1: "very good", 2: "good", 3: "fair", 4: "poor", 5: "very poor"}
QUALITY_INDICATORS = ("technology", "time", "geography", "completeness", "reliability")


def quality_table(data_quality: Any) -> str:
    """The GHG Protocol's five data-quality indicators and their mean as a table (1 very good ... 5 very poor)."""
    if not isinstance(data_quality, dict) or not data_quality:
        return "Not scored."
    rows = []
    for name in QUALITY_INDICATORS:
        score = data_quality.get(name)
        word = QUALITY_WORDS.get(score, "") if isinstance(score, int) else ""
        rows.append((name, "-" if score is None else score, word))
    body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
    return format_html(
        "<table><thead><tr><th>indicator</th><th>score</th><th></th></tr></thead><tbody>{}</tbody>"
        "<tfoot><tr><td>mean</td><td>{}</td><td>1 very good … 5 very poor</td></tr></tfoot></table>",
        body,
        data_quality.get("score", "-"),
    )


def conversion_text(conversion: Any) -> str:
    """How a spend amount reached the factor's currency and price year, as lines; a sentence for other bases."""
    if not isinstance(conversion, dict):
        return "None: not a spend amount."
    lines = [
        format_html(
            "Spent {} {} in {}; the factor is priced in {} of {}.",
            conversion.get("amount"),
            conversion.get("currency"),
            conversion.get("spend_year"),
            conversion.get("factor_currency"),
            conversion.get("price_year"),
        )
    ]
    rate = conversion.get("exchange_rate")
    if isinstance(rate, dict):
        lines.append(
            format_html(
                "Exchange rate {} ({} set, {}, {}).",
                rate.get("value"),
                rate.get("set"),
                rate.get("year"),
                rate.get("how"),
            )
        )
    index = conversion.get("price_index")
    if isinstance(index, dict):
        before, after = index.get("from") or {}, index.get("to") or {}
        lines.append(
            format_html(
                "Price index ({} set): {} in {}, {} in {}.",
                index.get("set"),
                before.get("value"),
                before.get("year"),
                after.get("value"),
                after.get("year"),
            )
        )
    return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((line,) for line in lines)))


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
class JobAdmin(SuperuserColumnsMixin, OrgScopedAdminMixin, FastAdmin):
    """Jobs (imports, recalculations) as they run: read-only, org-scoped; "Cancel selected jobs" cancels them.

    Nothing of a job is edited here: its row is the workers' (``emissions.jobs.runner``). Cancelling one needs the
    permission of its kind's write (``emissions.services.organizations.job_control_permission``), as in the API.
    """

    list_display = (
        "id",
        "kind",
        "state",
        "progress",
        "error_total",
        "requested_by",
        "created",
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

    @admin.display(description="progress, rows")
    def progress(self, job: Job) -> str:
        # The bar over the rows: two columns side by side would not fit a 1400 px screen.
        return format_html('{}<br><span class="vcci-rows">{}</span>', self.progress_bar(job), rows_text(job))

    # Not "errors": the model's field of that name (its JSON list) would be shown instead.
    @admin.display(description="errors", ordering="error_count")
    def error_total(self, job: Job) -> int:
        return job.error_count

    @admin.display(description="rows done / total")
    def rows(self, job: Job) -> str:
        return rows_text(job)

    @admin.display(description="chunks done / total")
    def chunks(self, job: Job) -> str:
        return f"{job.chunks_done} / {job.chunks_total}"

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return titled(timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M"), str(job.created_at))

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
