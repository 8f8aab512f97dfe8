"""The admin's own pages beside its changelists: the dashboard, the CSV upload of activities and its job's page, and
the downloads (the emissions of a changelist, the ESRS E1-6 and CDP Scope 3 tables).

Every page works on one organization: a staff user's own (their membership's); a superuser, who has none, picks one
(``?organization=``). Permissions are the roles' (``emissions.services.organizations``), through the user's groups as
everywhere in the admin: reading emissions to see the dashboard or download, adding activities to upload.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from calculator import rules
from emissions import exports
from emissions.dashboard import DashboardQuery, dashboard, dashboard_years
from emissions.imports import COLUMNS as IMPORT_COLUMNS
from emissions.imports import FileProblem
from emissions.inputs import as_id
from emissions.jobs.progress import job_percent, rows_text
from emissions.models import Category, Job, Organization, Supplier
from emissions.reports import inventory
from emissions.services.imports import UploadTooLargeError, import_start, import_upload_store

VIEW_EMISSIONS = "emissions.view_emission"
ADD_ACTIVITIES = "emissions.add_activityrecord"
# While an import runs, its page reloads itself this often (seconds).
JOB_REFRESH_SECONDS = 2


def whole_number(text: str | None) -> int | None:
    """``text`` as a non-negative integer (ASCII digits only: ``"²".isdigit()`` holds too), else None: a year or a
    length (an id is ``emissions.inputs.as_id``'s)."""
    return int(text) if text and text.isascii() and text.isdigit() else None


def require(request: HttpRequest, permission: str) -> None:
    """``PermissionDenied`` (the admin's 403 page) unless the user's role carries ``permission``."""
    if not request.user.has_perm(permission):
        raise PermissionDenied


def page_organization(request: HttpRequest) -> Organization | None:
    """The organization a page shows: the staff user's own; a superuser's choice (``?organization=<id>``, or the
    only organization there is); None while a superuser has not chosen. 404 for an unknown choice."""
    membership = getattr(request.user, "membership", None)
    if membership is not None:
        return cast(Organization, membership.organization)
    if not request.user.is_superuser:
        raise PermissionDenied  # staff without a membership see no tenant's data anywhere in the admin
    chosen = request.GET.get("organization") or request.POST.get("organization")
    if chosen:
        number = as_id(chosen)
        if number is None:
            raise Http404("No such organization.")
        return get_object_or_404(Organization, pk=number)
    organizations = list(Organization.objects.order_by("pk")[:2])
    return organizations[0] if len(organizations) == 1 else None


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    """The admin's own context (site header, navigation, permissions) for a page titled ``title``."""
    return {**admin.site.each_context(request), "title": title, **extra}


def _choose_organization(request: HttpRequest, title: str) -> TemplateResponse:
    """The organizations to choose from, each linking to this page with its other parameters kept."""
    query = request.GET.copy()
    links = []
    for organization in Organization.objects.order_by("name").values("pk", "name"):
        query["organization"] = str(organization["pk"])
        links.append((f"{request.path}?{query.urlencode()}", organization["name"]))
    return TemplateResponse(
        request, "admin/emissions/choose_organization.html", _context(request, title, organizations=links)
    )


# -- dashboard --------------------------------------------------------------------------------------------------


class DashboardForm(forms.Form):
    """The dashboard's filters: a year (default: the newest with results), a category, a supplier of the
    organization's (by id: the page offers the year's largest, and any supplier's link leads here)."""

    year = forms.IntegerField(required=False, min_value=rules.YEAR_MIN, max_value=rules.YEAR_MAX)
    category = forms.TypedChoiceField(
        required=False, choices=[("", "All categories"), *Category.choices], coerce=int, empty_value=None
    )
    supplier = forms.IntegerField(required=False, min_value=1)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.supplier_name = ""

    def clean_supplier(self) -> int | None:
        supplier_id: int | None = self.cleaned_data.get("supplier")
        if supplier_id is None:
            return None
        name = Supplier.objects.for_org(self.organization).filter(pk=supplier_id).values_list("name", flat=True)
        found = name.first()
        if found is None:
            raise forms.ValidationError("No supplier of your organization has this id.")
        self.supplier_name = found
        return supplier_id


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """The organization's year: total, categories, monthly trend with its uncertainty band, top suppliers, the
    data-quality mix (``emissions.dashboard``), as charts and as tables; the year's reports to download."""
    require(request, VIEW_EMISSIONS)
    title = "Dashboard"
    organization = page_organization(request)
    if organization is None:
        return _choose_organization(request, title)
    years = dashboard_years(organization.pk)
    form = DashboardForm(request.GET or None, organization=organization)
    query = DashboardQuery(organization_id=organization.pk, year=years[0] if years else timezone.localdate().year)
    status = 200
    if form.is_bound:
        if form.is_valid():
            data = form.cleaned_data
            query = DashboardQuery(
                organization_id=organization.pk,
                year=data["year"] or query.year,
                category=data["category"],
                supplier_id=data["supplier"],
            )
        else:
            status = 400
    figures = dashboard(query)
    if query.year not in years:
        years = sorted({*years, query.year}, reverse=True)
    return TemplateResponse(
        request,
        "admin/emissions/dashboard.html",
        _context(
            request,
            f"{title}: {organization.name}, {query.year}",
            organization=organization,
            superuser_choice=request.user.is_superuser and not hasattr(request.user, "membership"),
            form=form,
            query=query,
            years=years,
            categories=Category.choices,
            supplier_name=form.supplier_name,
            figures=figures,
            tables=[(name, label) for name, label in REPORT_TABLES.items()],
            formats=exports.FORMATS,
        ),
        status=status,
    )


# -- downloads --------------------------------------------------------------------------------------------------

REPORT_TABLES = {"esrs-e1-6": "ESRS E1-6 Scope 3", "cdp-scope-3": "CDP Scope 3"}
CONTENT_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": exports.XLSX_CONTENT_TYPE,
}


def report_download_view(request: HttpRequest, name: str, file_format: str) -> HttpResponse:
    """The ESRS E1-6 or CDP Scope 3 table of ``?year=`` as CSV, XLSX or JSON, the same file as the API's and
    ``export_report``'s (``emissions.exports``)."""
    require(request, VIEW_EMISSIONS)
    if name not in REPORT_TABLES or file_format not in exports.FORMATS:
        raise Http404("No such report or format.")
    organization = page_organization(request)
    if organization is None:
        return _choose_organization(request, REPORT_TABLES[name])
    year = whole_number(request.GET.get("year"))
    if year is None or not rules.YEAR_MIN <= year <= rules.YEAR_MAX:
        return HttpResponse(
            f"year: give a year from {rules.YEAR_MIN} to {rules.YEAR_MAX}.\n", status=400, content_type="text/plain"
        )
    report = inventory(organization, period_from=dt.date(year, 1, 1), period_to=dt.date(year, 12, 31))
    header, rows = exports.table(report, name)
    body = exports.as_file(header, rows, file_format=file_format, title=name)
    response = HttpResponse(body, content_type=CONTENT_TYPES[file_format])
    filename = f"{name}-{organization.slug}-{year}.{file_format}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# -- the CSV upload ---------------------------------------------------------------------------------------------


class ImportForm(forms.Form):
    """A CSV file of activities (the columns of ``manage.py import_activities``) and whether only to check it."""

    file = forms.FileField(help_text="UTF-8 CSV, header line first: the columns of the API's import.")
    dry_run = forms.BooleanField(
        required=False,
        initial=True,
        label="Dry run",
        help_text="Only validate and calculate: every row's errors are listed and nothing is written.",
    )


def import_view(request: HttpRequest) -> HttpResponse:
    """Upload a CSV file of activities: stored, then imported all or nothing by an import job (the API's); its page
    (``import_job_view``) follows it and lists each bad row's problems."""
    require(request, ADD_ACTIVITIES)
    title = "Import activities"
    declared = whole_number(request.META.get("CONTENT_LENGTH"))
    if request.method == "POST" and declared is not None and declared > settings.IMPORT_MAX_BYTES:
        # Refused before anything reads the body (Django would spool it to a temporary file), as the API does: 413.
        message = UploadTooLargeError(settings.IMPORT_MAX_BYTES).args[0]
        return HttpResponse(f"file: {message}\n", status=413, content_type="text/plain; charset=utf-8")
    organization = page_organization(request)
    if organization is None:
        return _choose_organization(request, title)
    form = ImportForm(request.POST or None, request.FILES or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                upload = import_upload_store(
                    organization=organization, stream=form.cleaned_data["file"], max_bytes=settings.IMPORT_MAX_BYTES
                )
            except (FileProblem, UploadTooLargeError) as exc:
                form.add_error("file", str(exc))
            else:
                job = import_start(
                    organization=organization,
                    upload=upload,
                    dry_run=form.cleaned_data["dry_run"],
                    chunk_rows=settings.JOB_CHUNK_ROWS,
                    requested_by=cast(User, request.user),
                )
                target = reverse("admin:emissions_activityrecord_import_job", args=[job.pk])
                return HttpResponseRedirect(f"{target}?organization={organization.pk}")
        status = 400
    return TemplateResponse(
        request,
        "admin/emissions/import.html",
        _context(
            request,
            title,
            form=form,
            organization=organization,
            columns=IMPORT_COLUMNS,
            recent=Job.objects.for_org(organization).filter(kind=Job.Kind.IMPORT).order_by("-created_at", "-id")[:5],
        ),
        status=status,
    )


def import_job_view(request: HttpRequest, job_id: int) -> HttpResponse:
    """An import job of the organization's: its state and progress (the page reloads itself until it ends), its
    result, and each bad row's line, column and problems."""
    require(request, VIEW_EMISSIONS)
    organization = page_organization(request)
    if organization is None:
        return _choose_organization(request, "Import")
    job = get_object_or_404(Job.objects.for_org(organization).filter(kind=Job.Kind.IMPORT), pk=job_id)
    row_errors = [error for error in job.errors if "line" in error]
    problems = [error["detail"] for error in job.errors if "detail" in error]
    return TemplateResponse(
        request,
        "admin/emissions/import_job.html",
        _context(
            request,
            f"Import #{job.pk}" + (" (dry run)" if job.params.get("dry_run") else ""),
            job=job,
            organization=organization,
            percent=job_percent(job),
            rows=rows_text(job),
            row_errors=row_errors,
            more_errors=max(0, job.error_count - len(row_errors) - len(problems)),
            problems=problems,
            refresh=JOB_REFRESH_SECONDS if job.state in Job.UNFINISHED else None,
            emissions_url=reverse("admin:emissions_emission_changelist"),
        ),
    )
