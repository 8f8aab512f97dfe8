"""The Scope 3 domain: tenants, suppliers, emission factors, activities and their results.

Every tenant-owned row carries ``organization``; reads go through ``for_org()`` on the
model's QuerySet so that no view, admin page or command can forget the scope.
Amounts and emissions are ``Decimal`` end to end.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Self, TypedDict

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncMonth, Upper
from django.utils import timezone
from django_countries.fields import CountryField

from calculator import rules


class DecimalDigits(TypedDict):
    """``max_digits``/``decimal_places`` for a ``DecimalField``; typed so ``**`` splats type-check."""

    max_digits: int
    decimal_places: int


# Emission intensities span 1e-9 (a trace gas per USD) to 1e5 (kg CO2e per tonne of a
# high-GWP gas); 30 digits with 15 after the point hold both without rounding.
FACTOR_DIGITS: DecimalDigits = {"max_digits": 30, "decimal_places": 15}
# Activity amounts: up to 10^15 of any unit, with 6 decimals.
AMOUNT_DIGITS: DecimalDigits = {"max_digits": rules.AMOUNT_MAX_DIGITS, "decimal_places": rules.AMOUNT_PLACES}
# Emission results in kg CO2e: 6 decimals (milligrams) are below any factor's precision.
CO2E_DIGITS: DecimalDigits = {"max_digits": rules.CO2E_MAX_DIGITS, "decimal_places": rules.CO2E_PLACES}
# Primary keys are bigint: a larger id would reach PostgreSQL as an out-of-range error.
ID_MAX = 2**63 - 1

naics_validator = RegexValidator(r"^\d{6}$", "NAICS code must be exactly 6 digits.")
currency_validator = RegexValidator(rules.CURRENCY_PATTERN, "Currency must be an ISO 4217 code such as USD.")
set_name_validator = RegexValidator(
    rules.SET_NAME_PATTERN, "A set name is lower-case letters, digits, '.', '_' or '-' (e.g. ecb, budget-2025)."
)


def reference_owner_field() -> models.ForeignKey:
    """The organization a reference set belongs to; empty for a public set (every organization's)."""
    return models.ForeignKey(
        "Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Owner of a private set; empty: a public set every organization can use",
    )


def set_name_field(*, default: str = "", help_text: str) -> models.CharField:
    """A reference set's name (``rules.is_set_name``); blank only where blank means the default set."""
    return models.CharField(
        max_length=rules.SET_NAME_MAX_LENGTH,
        blank=not default,
        default=default,
        validators=[set_name_validator],
        help_text=help_text,
    )


class OrgScopedQuerySet(models.QuerySet):
    """Base QuerySet for tenant-owned rows."""

    def for_org(self, organization: Organization | int) -> Self:
        org_id = organization if isinstance(organization, int) else organization.pk
        return self.filter(organization_id=org_id)


class Organization(models.Model):
    """A tenant. Every supplier, activity and emission belongs to exactly one organization."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    restatement_threshold_pct = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="A recalculation changing the total by at least this percentage is significant; "
        "empty: the RESTATEMENT_THRESHOLD_PCT setting",
    )
    base_year = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(rules.YEAR_MIN), MaxValueValidator(rules.YEAR_MAX)],
        help_text="The calendar year the inventory is compared with (GHG Protocol base year); empty: none",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """Ties a user to the one organization whose data the user may see and change."""

    class Role(models.TextChoices):
        """What the member may do: read (viewer), also record activities (analyst), also change the organization's
        suppliers and factors (admin). The permissions of each: ``emissions.services.organizations``."""

        ADMIN = "admin", "Admin"
        ANALYST = "analyst", "Analyst"
        VIEWER = "viewer", "Viewer"

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANALYST)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = OrgScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization}"


class SupplierQuerySet(OrgScopedQuerySet):
    pass


class Supplier(models.Model):
    """A company the organization buys from; ``external_id`` is the key in the org's ERP."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="suppliers")
    external_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    country = CountryField(blank=True)
    naics = models.CharField(max_length=6, blank=True, validators=[naics_validator], help_text="6-digit NAICS 2017")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = SupplierQuerySet.as_manager()
    # Set by from_db (not a column): the organization the row had when loaded.
    loaded_organization_id: int | None = None

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "external_id"], name="supplier_org_external_id_uniq"),
        ]
        # Backs the supplier list's keyset order (name, id) within an organization.
        indexes = [models.Index(fields=["organization", "name", "id"], name="supplier_org_name_idx")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any, **kwargs: Any) -> Self:
        supplier = super().from_db(db, field_names, values, **kwargs)
        # The organization it was loaded with: if a save moves it to another one (the admin, a shell),
        # cache invalidation must reach both (emissions.cache).
        supplier.loaded_organization_id = supplier.__dict__.get("organization_id")
        return supplier


class FactorDataset(models.Model):
    """One published edition of a factor source (e.g. DESNZ 2025, EPA supply chain v1.3.0).

    Public datasets have no organization. A dataset with an organization holds factors that
    one of that organization's suppliers provided (supplier-specific factors) and is visible
    to that organization only.
    """

    class Source(models.TextChoices):
        EPA_SUPPLY_CHAIN = "epa_supply_chain", "US EPA Supply Chain GHG Emission Factors"
        DESNZ = "desnz", "UK DESNZ GHG Conversion Factors"
        EPA_HUB = "epa_hub", "US EPA GHG Emission Factors Hub"
        IPCC_GWP = "ipcc_gwp", "IPCC Global Warming Potentials"
        SUPPLIER = "supplier", "Supplier-provided"

    source = models.CharField(max_length=32, choices=Source.choices)
    version = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    publisher = models.CharField(max_length=200, blank=True)
    licence = models.CharField(max_length=300, blank=True)
    url = models.URLField(max_length=500, blank=True)
    basis_year = models.PositiveSmallIntegerField(help_text="Year the factors describe (price year for spend factors)")
    gwp_set = models.CharField(max_length=16, blank=True, help_text="e.g. AR5 GWP-100")
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the source file(s)")
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="factor_datasets"
    )
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "version"],
                condition=Q(organization__isnull=True),
                name="dataset_public_source_version_uniq",
            ),
            models.UniqueConstraint(
                fields=["organization", "source", "version"],
                condition=Q(organization__isnull=False),
                name="dataset_org_source_version_uniq",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.version}"


class EmissionFactorQuerySet(models.QuerySet):
    def visible_to(self, organization: Organization | int) -> EmissionFactorQuerySet:
        """Public factors plus the organization's own supplier-specific factors.

        A supplier factor is visible only through its organization's dataset: one that (by a
        mistake ``clean()`` would have caught) sits in a public dataset stays invisible to all.
        """
        org_id = organization if isinstance(organization, int) else organization.pk
        return self.filter(
            Q(dataset__organization__isnull=True, supplier__isnull=True) | Q(dataset__organization_id=org_id)
        )

    def with_related(self) -> EmissionFactorQuerySet:
        return self.select_related("dataset")

    def average_candidates(self, organization: Organization | int, activities: Iterable[str]) -> EmissionFactorQuerySet:
        """The average-data candidates for ``activities``: visible, not a supplier's own, dataset loaded, by id.

        The calculator's resolver selects among these (``calculator.resolve``); one query for any number of keys.
        """
        return (
            self.visible_to(organization)
            .with_related()
            .filter(activity__in=list(activities), supplier__isnull=True)
            .order_by("pk")
        )


class EmissionFactor(models.Model):
    """kg CO2e per one ``unit`` of an activity, from one dataset.

    ``activity`` is the stable lookup key (``naics:331110``, ``desnz:7_400_4000_5``, ...).
    ``unit`` is a units-library expression (``kWh``, ``L``, ``t*km``, ``USD``); ``unit_label``
    keeps the publisher's wording. ``gases`` holds the per-gas components in kg CO2e per
    unit as decimal strings, e.g. ``{"CO2": "0.17489", "CH4": "0.0009", "N2O": "0.00122"}``.
    Spend factors carry ``currency`` and the dataset's ``basis_year`` is their price year.
    ``biogenic_co2_per_unit`` is the kg of biogenic CO2 per unit from burning biomass, which the
    GHG Protocol reports outside the scopes: never part of ``co2e_per_unit`` (nor of ``gases``).
    NULL when the publisher gives no such figure (see the README for which publishers do).
    """

    dataset = models.ForeignKey(FactorDataset, on_delete=models.PROTECT, related_name="factors")
    activity = models.CharField(max_length=128)
    name = models.CharField(max_length=500)
    category = models.CharField(max_length=300, blank=True, help_text="Publisher's grouping (levels, sector)")
    region = models.CharField(max_length=16, help_text="ISO 3166-1 alpha-2, or GLOBAL")
    year = models.PositiveSmallIntegerField()
    unit = models.CharField(max_length=64)
    unit_label = models.CharField(max_length=128, blank=True)
    currency = models.CharField(max_length=3, blank=True, validators=[currency_validator])
    co2e_per_unit = models.DecimalField(**FACTOR_DIGITS)
    biogenic_co2_per_unit = models.DecimalField(
        null=True, blank=True, help_text="kg biogenic CO2 per unit, outside the scopes (not in CO2e)", **FACTOR_DIGITS
    )
    gwp_set = models.CharField(max_length=16, blank=True)
    gases = models.JSONField(default=dict, blank=True)
    supplier = models.ForeignKey(
        Supplier,
        null=True,
        blank=True,
        # A supplier's own factors are evidence behind results: deleting the supplier must not erase them.
        on_delete=models.PROTECT,
        related_name="factors",
        help_text="Set for supplier-specific factors",
    )
    extra = models.JSONField(default=dict, blank=True, help_text="Other published values (e.g. without margins)")

    objects = EmissionFactorQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "activity"], name="factor_dataset_activity_uniq"),
            models.CheckConstraint(condition=Q(co2e_per_unit__gte=0), name="factor_co2e_non_negative"),
            models.CheckConstraint(
                condition=Q(biogenic_co2_per_unit__gte=0) | Q(biogenic_co2_per_unit__isnull=True),
                name="factor_biogenic_non_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["activity", "region", "year"], name="factor_act_region_year_idx"),
            # Backs the factor list's keyset order (activity, id).
            models.Index(fields=["activity", "id"], name="factor_activity_id_idx"),
            # The factor list's ?search= is name__icontains OR activity__icontains, which PostgreSQL runs as
            # UPPER(col::text) LIKE UPPER('%term%'): only a trigram index on those same UPPER() expressions
            # serves a leading-wildcard LIKE. One GIN index over both expressions answers the OR as a BitmapOr.
            GinIndex(
                OpClass(Upper("name"), name="gin_trgm_ops"),
                OpClass(Upper("activity"), name="gin_trgm_ops"),
                name="factor_search_trgm_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.activity} ({self.region} {self.year}): {self.co2e_per_unit} kg CO2e/{self.unit}"

    def clean(self) -> None:
        """A supplier factor belongs to a dataset of the supplier's own organization, never to a public one."""
        super().clean()
        if self.supplier is None:
            return
        dataset_org = self.dataset.organization_id if self.dataset_id else None
        if dataset_org is None or dataset_org != self.supplier.organization_id:
            raise ValidationError(
                {"supplier": "A supplier-specific factor must be in a dataset of the supplier's own organization."}
            )


class ExchangeRate(models.Model):
    """Annual-average rate: 1 ``currency`` = ``rate`` ``quote_currency`` in ``year``, in the set ``set_name``.

    A set is one consistent table (``ecb``: the shipped ECB annual averages; a user's own, e.g. budget rates,
    under its own name); a spend calculation names the set it converts with, else ``ecb``. A set is public
    (``organization`` empty) or one organization's own, which only that organization sees and which, for it,
    takes the place of a public set of the same name.
    """

    set_name = set_name_field(default=rules.DEFAULT_EXCHANGE_RATE_SET, help_text="The set this rate belongs to")
    organization = reference_owner_field()
    currency = models.CharField(max_length=3, validators=[currency_validator])
    quote_currency = models.CharField(max_length=3, validators=[currency_validator], default="USD")
    year = models.PositiveSmallIntegerField()
    rate = models.DecimalField(max_digits=20, decimal_places=10)
    source = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            # A public set's key, and an organization's own set's key (partial: a NULL owner is not distinct).
            models.UniqueConstraint(
                fields=["set_name", "currency", "quote_currency", "year"],
                condition=Q(organization__isnull=True),
                name="fx_public_set_key_uniq",
            ),
            models.UniqueConstraint(
                fields=["organization", "set_name", "currency", "quote_currency", "year"],
                condition=Q(organization__isnull=False),
                name="fx_own_set_key_uniq",
            ),
            models.CheckConstraint(condition=Q(rate__gt=0), name="fx_rate_positive"),
        ]

    def __str__(self) -> str:
        return f"1 {self.currency} = {self.rate} {self.quote_currency} ({self.year}, {self.set_name})"


class PriceIndex(models.Model):
    """Annual price-index level for a currency area in the set ``set_name`` (``cpi-u``: US CPI-U, shipped; a
    sector index under its own name), used to move spend between price years. Public or one organization's own,
    as ``ExchangeRate``'s sets are."""

    set_name = set_name_field(default=rules.DEFAULT_PRICE_INDEX_SET, help_text="The set this level belongs to")
    organization = reference_owner_field()
    currency = models.CharField(max_length=3, validators=[currency_validator])
    year = models.PositiveSmallIntegerField()
    value = models.DecimalField(max_digits=20, decimal_places=6)
    source = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name_plural = "price indexes"
        constraints = [
            models.UniqueConstraint(
                fields=["set_name", "currency", "year"],
                condition=Q(organization__isnull=True),
                name="price_index_public_set_key_uniq",
            ),
            models.UniqueConstraint(
                fields=["organization", "set_name", "currency", "year"],
                condition=Q(organization__isnull=False),
                name="price_index_own_set_key_uniq",
            ),
            models.CheckConstraint(condition=Q(value__gt=0), name="price_index_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.currency} {self.year}: {self.value} ({self.set_name})"


class Category(models.IntegerChoices):
    """The 15 Scope 3 categories of the GHG Protocol."""

    PURCHASED_GOODS = 1, "1 Purchased goods and services"
    CAPITAL_GOODS = 2, "2 Capital goods"
    FUEL_ENERGY = 3, "3 Fuel- and energy-related activities"
    UPSTREAM_TRANSPORT = 4, "4 Upstream transportation and distribution"
    WASTE = 5, "5 Waste generated in operations"
    BUSINESS_TRAVEL = 6, "6 Business travel"
    COMMUTING = 7, "7 Employee commuting"
    UPSTREAM_LEASED = 8, "8 Upstream leased assets"
    DOWNSTREAM_TRANSPORT = 9, "9 Downstream transportation and distribution"
    PROCESSING = 10, "10 Processing of sold products"
    USE_OF_SOLD = 11, "11 Use of sold products"
    END_OF_LIFE = 12, "12 End-of-life treatment of sold products"
    DOWNSTREAM_LEASED = 13, "13 Downstream leased assets"
    FRANCHISES = 14, "14 Franchises"
    INVESTMENTS = 15, "15 Investments"


# OWASP's CSV injection guidance: a spreadsheet (Excel, LibreOffice, Google Sheets) opening a CSV file reads a cell
# that starts with one of these characters as a formula, which can fetch URLs or, through DDE, run commands. The
# exports neutralize such text cells with a leading single quote (emissions.inputs.neutralized); text that will reach
# a CSV export or a user's spreadsheet is refused (emissions.inputs.refuse_formula, plain_text_validator) with the
# same characters, so a new value never needs it.
# Every value starting with one is refused, a lone "-" and a name such as "-ACME" included: "-ACME" is read as a
# formula (#NAME?) and "-2+3+cmd|' /C calc'!A0" is the classic payload, and telling a harmless "-" prefix from a
# formula would mean parsing every spreadsheet's formula syntax. A lone "-" used as "none" is sent empty instead.
# Tab and carriage return are on OWASP's list too; the text fields trim surrounding whitespace before this check,
# so "\t=1" is refused for its "=", and a value that only starts with a tab is kept without it.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULA_MESSAGE = (
    "Must not start with =, +, -, @, a tab or a carriage return: a spreadsheet opening it from a CSV file would "
    "run it as a formula."
)


class CategoryExclusionQuerySet(OrgScopedQuerySet):
    pass


def plain_text_validator(value: str) -> None:
    """Text that reaches a spreadsheet (the CDP export's explanation): no formula start (``FORMULA_PREFIXES``) and
    no control character other than a line break or a tab (an XLSX file cannot hold one)."""
    if value.startswith(FORMULA_PREFIXES):
        raise ValidationError(FORMULA_MESSAGE)
    if CONTROL_CHARACTERS.search(value):
        raise ValidationError("Must not contain control characters.")


CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class CategoryExclusion(models.Model):
    """A Scope 3 category the organization has assessed as not relevant to its inventory, and why.

    The GHG Protocol's Scope 3 Standard (ch. 6) asks that excluded categories be disclosed and justified; the
    inventory lists such a category as ``not_relevant`` with this explanation (and any results it still has).
    """

    # No index of its own: category_exclusion_org_cat_uniq leads with the organization.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="category_exclusions", db_index=False
    )
    category = models.PositiveSmallIntegerField(
        choices=Category.choices, validators=[MinValueValidator(1), MaxValueValidator(15)]
    )
    explanation = models.TextField(
        max_length=2000,
        validators=[plain_text_validator],
        help_text="Why the category is not relevant (shown in reports)",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CategoryExclusionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "category"], name="category_exclusion_org_cat_uniq"),
            models.CheckConstraint(condition=Q(category__gte=1, category__lte=15), name="category_exclusion_1_15"),
        ]
        ordering = ["organization_id", "category"]

    def __str__(self) -> str:
        return f"{self.get_category_display()}: not relevant"


class Method(models.TextChoices):
    """``calculator.rules.Method`` with labels (the values are the calculator's)."""

    SPEND = rules.Method.SPEND.value, "Spend-based"
    ACTIVITY = rules.Method.ACTIVITY.value, "Average-data (activity)"
    DISTANCE = rules.Method.DISTANCE.value, "Distance-based"
    SUPPLIER_SPECIFIC = rules.Method.SUPPLIER_SPECIFIC.value, "Supplier-specific"


class ActivityRecordQuerySet(OrgScopedQuerySet):
    def with_related(self) -> ActivityRecordQuerySet:
        return self.select_related("supplier", "emission", "emission__factor", "emission__factor__dataset")


class ActivityRecord(models.Model):
    """One input line: what was bought, shipped, travelled or consumed, and how much.

    The selector fields (``factor`` or ``activity`` + ``region``/``year``/``source``/
    ``dataset_version``) say which factor to use; the calculator records any fallback.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="activities")
    supplier = models.ForeignKey(Supplier, null=True, blank=True, on_delete=models.PROTECT, related_name="activities")
    category = models.PositiveSmallIntegerField(
        choices=Category.choices, validators=[MinValueValidator(1), MaxValueValidator(15)]
    )
    method = models.CharField(max_length=24, choices=Method.choices)
    factor = models.ForeignKey(
        EmissionFactor,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Pinned factor (factor_id); otherwise resolved from the selector fields",
    )
    activity = models.CharField(max_length=128, blank=True)
    region = models.CharField(max_length=16, blank=True)
    year = models.PositiveSmallIntegerField(null=True, blank=True)
    source = models.CharField(max_length=32, blank=True)
    dataset_version = models.CharField(max_length=32, blank=True)
    amount = models.DecimalField(**AMOUNT_DIGITS)
    unit = models.CharField(max_length=64)
    currency = models.CharField(max_length=3, blank=True, validators=[currency_validator])
    spend_year = models.PositiveSmallIntegerField(null=True, blank=True)
    exchange_rate_set = set_name_field(help_text="Exchange-rate set for a spend amount; blank: ecb")
    price_index_set = set_name_field(help_text="Price-index set for a spend amount; blank: cpi-u")
    mass = models.DecimalField(null=True, blank=True, **AMOUNT_DIGITS)
    mass_unit = models.CharField(max_length=32, blank=True)
    distance = models.DecimalField(null=True, blank=True, **AMOUNT_DIGITS)
    distance_unit = models.CharField(max_length=32, blank=True)
    period_start = models.DateField()
    period_end = models.DateField()
    external_ref = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ActivityRecordQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="activity_amount_non_negative"),
            models.CheckConstraint(condition=Q(mass__gte=0) | Q(mass__isnull=True), name="activity_mass_non_negative"),
            models.CheckConstraint(
                condition=Q(distance__gte=0) | Q(distance__isnull=True), name="activity_distance_non_negative"
            ),
            models.CheckConstraint(condition=Q(category__gte=1, category__lte=15), name="activity_category_1_15"),
            models.CheckConstraint(condition=Q(period_end__gte=F("period_start")), name="activity_period_ordered"),
        ]
        indexes = [
            models.Index(fields=["organization", "-period_start", "-id"], name="activity_org_period_idx"),
            # The activities list filtered by ?category= / ?supplier= / ?method=, in its keyset order:
            # the equality columns first, so one index range holds exactly the filtered page sequence.
            models.Index(
                fields=["organization", "category", "-period_start", "-id"], name="activity_org_cat_period_idx"
            ),
            models.Index(
                fields=["organization", "supplier", "-period_start", "-id"], name="activity_org_sup_period_idx"
            ),
            models.Index(
                fields=["organization", "method", "-period_start", "-id"], name="activity_org_meth_period_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_method_display()} {self.amount} {self.unit} ({self.period_start})"


# Summary group -> what the rows are grouped on.
SUMMARY_KEYS: dict[str, Any] = {
    "category": F("category"),
    "supplier": F("supplier_id"),
    "month": TruncMonth("period_start"),
    "method": F("method"),
}


class EmissionQuerySet(OrgScopedQuerySet):
    def with_related(self) -> EmissionQuerySet:
        return self.select_related("supplier", "factor", "factor__dataset")

    def in_scope(
        self,
        *,
        period_from: dt.date | None = None,
        period_to: dt.date | None = None,
        categories: Iterable[int] = (),
        supplier_ids: Iterable[int] = (),
        source: str = "",
    ) -> EmissionQuerySet:
        """The emissions a recalculation's scope names: periods within ``period_from`` .. ``period_to`` (as the
        list's ``period_from``/``period_to`` filters), any of ``categories`` / ``supplier_ids`` when given, and
        with a current factor of dataset ``source`` when given. Empty filters do not filter."""
        queryset = self
        if period_from is not None:
            queryset = queryset.filter(period_start__gte=period_from)
        if period_to is not None:
            queryset = queryset.filter(period_end__lte=period_to)
        if categories := list(categories):
            queryset = queryset.filter(category__in=categories)
        if supplier_ids := list(supplier_ids):
            queryset = queryset.filter(supplier_id__in=supplier_ids)
        if source:
            queryset = queryset.filter(factor__dataset__source=source)
        return queryset

    def summary(self, group_by: str) -> models.QuerySet[Any, dict[str, Any]]:
        """Totals of these emissions per group, in one GROUP BY query; ``group_by`` is a ``SUMMARY_KEYS`` name.

        Each row is ``{"key", "total_kg", "biogenic_kg", "count"}`` (plus ``"supplier_name"`` by supplier;
        ``key`` is the first day of the month by month); ``biogenic_kg`` sums the group's biogenic CO2 and is
        None when no emission of the group has a biogenic figure. Months come chronologically (a time
        series); other groups as a ranking: largest ``total_kg`` first, ties by key. The queryset's own
        ordering is dropped (``values()`` drops select_related), so the query reads only the columns the
        covering index ``emission_org_cat_period_idx`` holds (and, by supplier, the supplier's name).
        """
        return grouped_totals(
            self,
            group_by,
            SUMMARY_KEYS,
            total_kg=Sum("co2e_kg"),
            biogenic_kg=Sum("biogenic_co2_kg"),
            count=Count("id"),
        )


def grouped_totals(
    queryset: models.QuerySet[Any], group_by: str, keys: dict[str, Any], **aggregates: Any
) -> models.QuerySet[Any, dict[str, Any]]:
    """``queryset`` grouped on ``keys[group_by]`` with ``aggregates`` (``total_kg``, ``biogenic_kg``, ``count``), as
    ``EmissionQuerySet.summary`` documents; the raw emissions and the rollups (``RollupQuerySet.summary``) share it."""
    if group_by not in keys:
        raise ValueError(f"group_by must be one of {', '.join(keys)}; got {group_by!r}.")
    grouped = queryset.order_by().values(key=keys[group_by]).annotate(**aggregates)
    if group_by == "supplier":
        # Looked up per group after the aggregation (a correlated subquery on the grouped key): grouping on the
        # joined name instead would hash a text column for every row summed.
        name = Supplier.objects.filter(pk=models.OuterRef("key")).values("name")
        grouped = grouped.annotate(supplier_name=models.Subquery(name))
    return grouped.order_by(*(["key"] if group_by == "month" else ["-total_kg", "key"]))


class Emission(models.Model):
    """The calculated result of one activity record, with the factor and every fallback used.

    ``data_quality`` holds the GHG Protocol's five indicators (1 = very good ... 5 = very
    poor) and their mean; ``fallbacks`` and ``warnings`` are lists of
    ``{"code": ..., "detail": ...}`` objects. ``biogenic_co2_kg`` is the biogenic CO2 reported
    outside the scopes (not in ``co2e_kg``); NULL when the factor has no biogenic figure.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="emissions")
    activity = models.OneToOneField(ActivityRecord, on_delete=models.CASCADE, related_name="emission")
    supplier = models.ForeignKey(Supplier, null=True, blank=True, on_delete=models.PROTECT, related_name="emissions")
    category = models.PositiveSmallIntegerField(choices=Category.choices)
    method = models.CharField(max_length=24, choices=Method.choices)
    period_start = models.DateField()
    period_end = models.DateField()
    factor = models.ForeignKey(EmissionFactor, on_delete=models.PROTECT, related_name="emissions")
    co2e_kg = models.DecimalField(**CO2E_DIGITS)
    biogenic_co2_kg = models.DecimalField(null=True, blank=True, **CO2E_DIGITS)
    gases = models.JSONField(default=dict, blank=True)
    data_quality = models.JSONField(default=dict)
    fallbacks = models.JSONField(default=list, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    # How a spend amount reached the factor's currency and price year, with the rate and index rows used
    # (``calculator.shapes.ConversionDict``); NULL for other bases.
    conversion = models.JSONField(null=True, blank=True)
    calculated_at = models.DateTimeField(auto_now_add=True)

    objects = EmissionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(co2e_kg__gte=0), name="emission_co2e_non_negative"),
            models.CheckConstraint(
                condition=Q(biogenic_co2_kg__gte=0) | Q(biogenic_co2_kg__isnull=True),
                name="emission_biogenic_non_negative",
            ),
            models.CheckConstraint(condition=Q(category__gte=1, category__lte=15), name="emission_category_1_15"),
        ]
        indexes = [
            # Keyset pagination of the emissions list: newest period first, id as tie-breaker.
            models.Index(fields=["organization", "-period_start", "-id"], name="emission_org_period_idx"),
            # Two jobs in one index. Keyed, it is the ?category= list in keyset order. Covering (INCLUDE), it
            # holds every column the summary aggregations read (group keys, period window, co2e_kg and
            # biogenic_co2_kg, id for the count), so /emissions/summary/ by category, supplier, method or month
            # is an index-only scan of the organization's entries instead of a read of its wide rows (JSON
            # gases, data quality, notes).
            models.Index(
                fields=["organization", "category", "-period_start", "-id"],
                include=["supplier", "method", "period_end", "co2e_kg", "biogenic_co2_kg"],
                name="emission_org_cat_period_idx",
            ),
            # The emissions list filtered by ?supplier= / ?method=, in its keyset order.
            models.Index(
                fields=["organization", "supplier", "-period_start", "-id"], name="emission_org_sup_period_idx"
            ),
            models.Index(
                fields=["organization", "method", "-period_start", "-id"], name="emission_org_meth_period_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.co2e_kg} kg CO2e ({self.get_category_display()})"

    @property
    def co2e_tonnes(self) -> Decimal:
        return kg_to_tonnes(self.co2e_kg)


def kg_to_tonnes(kg: Decimal) -> Decimal:
    """``Emission.co2e_tonnes`` of a ``co2e_kg`` value (the API's list pages compute it from the column alone)."""
    return kg / Decimal(1000)


class IdempotencyRecord(models.Model):
    """A write's answer, kept under the client's ``Idempotency-Key`` so that a retry gets it back instead of writing
    again (``emissions.services.idempotency``).

    The record is inserted in the same transaction as the write it answers, so a committed write always has its
    record and a rolled-back one never does: a client that timed out can retry with the same key without
    double-counting. Keys are scoped to the organization; ``fingerprint`` (SHA-256 of method, path and body)
    tells a retry from a different request reusing the key. Records older than ``IDEMPOTENCY_KEY_TTL`` are
    forgotten (``manage.py purge_idempotency_keys``).
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    content_type = models.CharField(max_length=128)
    body = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_org_key_uniq"),
        ]
        # The purge deletes by age across organizations.
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code})"


class JobQuerySet(OrgScopedQuerySet):
    def with_related(self) -> JobQuerySet:
        return self.select_related("requested_by")

    def unfinished(self) -> JobQuerySet:
        return self.filter(state__in=Job.UNFINISHED)


class Job(models.Model):
    """Work bigger than a request (an import, a recalculation), run by Celery workers in chunks (``emissions.jobs``).

    A job is planned into ``JobChunk`` rows; each chunk is done, and counted in ``chunks_done`` / ``rows_done``, in the
    same transaction as its work, so a worker killed mid-chunk leaves the chunk pending and its rerun starts clean.
    When every chunk is done, one ``finish`` transaction makes the work visible (or discards it) and sets the final
    state. ``errors`` holds the first ``Job.MAX_ERRORS`` problems (row- or chunk-numbered), ``error_count`` all of them.
    ``params`` are the kind's parameters as submitted; ``result`` what the finished job produced (counts, totals, the
    restatement it wrote).
    """

    class Kind(models.TextChoices):
        IMPORT = "import", "Activity import"
        RECALCULATION = "recalculation", "Recalculation"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    UNFINISHED = (State.QUEUED, State.RUNNING)
    MAX_ERRORS = 1000

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveBigIntegerField(null=True, blank=True, help_text="Unknown until the job is planned")
    rows_done = models.PositiveBigIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(chunks_done__lte=F("chunks_total")), name="job_chunks_done_le_total"),
        ]
        indexes = [
            # The jobs list: newest first, keyset on (created_at, id).
            models.Index(fields=["organization", "-created_at", "-id"], name="job_org_created_idx"),
            # Workers resuming unfinished jobs at start-up.
            models.Index(fields=["state"], condition=Q(state__in=["queued", "running"]), name="job_unfinished_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk} ({self.state})"

    @property
    def finished(self) -> bool:
        return self.state not in self.UNFINISHED


class JobChunk(models.Model):
    """One idempotent slice of a job: ``payload`` says what it covers (a file part, an id range).

    ``state`` becomes ``done`` in the transaction that did the chunk's work, never before, so a chunk is done
    exactly once however often its task is delivered.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Done"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    payload = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    rows = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="jobchunk_job_index_uniq")]

    def __str__(self) -> str:
        return f"chunk {self.index} of job {self.job_id} ({self.state})"


# Restatement totals: a sum of up to billions of stored results, each with CO2E_DIGITS.
TOTAL_DIGITS: DecimalDigits = {"max_digits": rules.CO2E_MAX_DIGITS + 10, "decimal_places": rules.CO2E_PLACES}
# A change in percent: 4 decimals, and room for a total that grew from almost nothing.
PCT_DIGITS: DecimalDigits = {"max_digits": 30, "decimal_places": 4}


class RestatementQuerySet(OrgScopedQuerySet):
    def with_related(self) -> RestatementQuerySet:
        return self.select_related("target_dataset")


class Restatement(models.Model):
    """What one recalculation job changed (``emissions.jobs.recalculation``): written when the job commits.

    Its primary key is its job's id, so the job's chunks can stage their ``RestatementLine`` rows under it before
    this row exists. ``scope`` holds the job's filters; totals are kg CO2e over every stored emission in that scope
    (those the target dataset does not apply to included, unchanged), before and after. ``change_pct`` is
    ``(after - before) / before x 100`` rounded to 4 places (None when ``before`` is 0); ``significant`` says whether
    its absolute value reached ``threshold_pct``, the organization's threshold when the job ran.
    ``per_category`` and ``per_supplier`` map a category number, a supplier id (or ``"none"``) to
    ``{"before", "after", "change_pct"}`` as decimal strings (``change_pct`` may be None).
    """

    job = models.OneToOneField(
        Job, primary_key=True, on_delete=models.CASCADE, related_name="restatement", serialize=False
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="restatements")
    # The dataset the results were recalculated against stays as long as a restatement names it.
    target_dataset = models.ForeignKey(FactorDataset, on_delete=models.PROTECT, related_name="restatements")
    scope = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    total_before_kg = models.DecimalField(**TOTAL_DIGITS)
    total_after_kg = models.DecimalField(**TOTAL_DIGITS)
    change_pct = models.DecimalField(null=True, blank=True, **PCT_DIGITS)
    threshold_pct = models.DecimalField(max_digits=5, decimal_places=2)
    significant = models.BooleanField()
    per_category = models.JSONField(default=dict, blank=True)
    per_supplier = models.JSONField(default=dict, blank=True)
    emissions_in_scope = models.PositiveBigIntegerField(default=0)
    emissions_recalculated = models.PositiveBigIntegerField(default=0)
    emissions_not_applicable = models.PositiveBigIntegerField(
        default=0, help_text="In scope, but their factor is of another source than the target dataset"
    )
    emissions_changed = models.PositiveBigIntegerField(default=0)

    objects = RestatementQuerySet.as_manager()

    class Meta:
        # The restatements list: newest job first (keyset on the job's id).
        indexes = [models.Index(fields=["organization", "-job"], name="restatement_org_job_idx")]

    def __str__(self) -> str:
        return f"Restatement #{self.pk}: {self.total_before_kg} -> {self.total_after_kg} kg CO2e"


class RestatementLine(models.Model):
    """One emission a recalculation changed: its result before and after (the history of that emission).

    Written only for emissions whose factor (its values, not merely its row) or result changed. The job's chunks
    stage these rows (COPY) before the ``Restatement`` exists, under the job's id, which is the restatement's id:
    hence no database constraint on ``restatement`` (the finish creates the row in the transaction that applies
    the lines; a failed or cancelled job's lines are deleted). ``emission_id`` and ``activity_id`` are plain
    ids: the history outlives a deleted emission. The factors are kept (``PROTECT``) so that the previous factor
    and its dataset stay readable.
    """

    restatement = models.ForeignKey(
        Restatement, on_delete=models.CASCADE, related_name="lines", db_constraint=False, db_index=False
    )
    emission_id = models.BigIntegerField()
    activity_id = models.BigIntegerField()
    category = models.PositiveSmallIntegerField(choices=Category.choices)
    supplier_id = models.BigIntegerField(null=True, blank=True)
    before_factor = models.ForeignKey(EmissionFactor, on_delete=models.PROTECT, related_name="+")
    before_co2e_kg = models.DecimalField(**CO2E_DIGITS)
    before_biogenic_co2_kg = models.DecimalField(null=True, blank=True, **CO2E_DIGITS)
    # The emission's ``calculated_at`` as its chunk read it: the finish applies the line only to an emission that
    # still has it (every edit sets it), so a result is never computed from inputs since changed.
    before_calculated_at = models.DateTimeField()
    after_factor = models.ForeignKey(EmissionFactor, on_delete=models.PROTECT, related_name="+")
    after_co2e_kg = models.DecimalField(**CO2E_DIGITS)
    after_biogenic_co2_kg = models.DecimalField(null=True, blank=True, **CO2E_DIGITS)
    after_gases = models.JSONField(default=dict, blank=True)
    after_data_quality = models.JSONField(default=dict)
    after_fallbacks = models.JSONField(default=list, blank=True)
    after_warnings = models.JSONField(default=list, blank=True)
    after_conversion = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            # Each emission once per restatement; also the index of the lines list and of the finish's UPDATE.
            models.UniqueConstraint(fields=["restatement", "emission_id"], name="restatementline_emission_uniq"),
        ]

    def __str__(self) -> str:
        return f"emission {self.emission_id}: {self.before_co2e_kg} -> {self.after_co2e_kg} kg CO2e"


class DecimalJSONDecoder(json.JSONDecoder):
    """JSON with non-integer numbers read as ``Decimal``: audit rows hold amounts and results as JSON numbers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parse_float", Decimal)
        super().__init__(*args, **kwargs)


class AuditEventQuerySet(OrgScopedQuerySet):
    def history(self, model: type[models.Model], object_id: int) -> AuditEventQuerySet:
        """One row's events, oldest first (served by ``audit_object_idx``; chain ``for_org`` before it)."""
        return self.filter(table_name=model._meta.db_table, object_id=object_id).order_by("id")

    def with_actor(self) -> AuditEventQuerySet:
        """Each event annotated with ``actor_username`` (None for no actor, or a user since deleted), in the same
        query."""
        from django.contrib.auth import get_user_model

        username = get_user_model()._default_manager.filter(pk=models.OuterRef("actor_id")).values("username")[:1]
        return self.annotate(actor_username=models.Subquery(username))


class AuditEvent(models.Model):
    """One recorded change of a supplier, activity, emission or supplier-provided factor. Append-only.

    Written only by the database's statement-level triggers (migration ``0009_audit_trail``), for INSERT,
    UPDATE (rows whose values changed; ``updated_at`` alone is no change) and DELETE, COPY included; never by
    the application, and a trigger refuses any UPDATE or DELETE of this table (TRUNCATE, which only the
    table's owner may run, empties it). ``row`` is the whole row after an insert or update, or as it was
    when deleted, with column names as keys; ``changed`` holds, for an update, the previous value of each
    changed column. ``organization_id``, ``actor_id`` and ``job_id`` are plain integers without foreign
    keys: deleting an organization, a user or a job must not delete or rewrite the log of what they did.
    Who, which request and which job come from ``emissions.audit``.
    """

    class Action(models.TextChoices):
        INSERT = "insert", "Insert"
        UPDATE = "update", "Update"
        DELETE = "delete", "Delete"

    class Table(models.TextChoices):
        """The audited tables (``emissions.audit.AUDITED_TABLES``)."""

        SUPPLIER = "emissions_supplier", "Supplier"
        ACTIVITY = "emissions_activityrecord", "Activity"
        EMISSION = "emissions_emission", "Emission"
        SUPPLIER_FACTOR = "emissions_emissionfactor", "Supplier factor"

    occurred_at = models.DateTimeField(help_text="Start of the writing transaction")
    table_name = models.CharField(max_length=63, choices=Table.choices)
    object_id = models.BigIntegerField()
    organization_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=6, choices=Action.choices)
    row = models.JSONField(decoder=DecimalJSONDecoder)
    changed = models.JSONField(null=True, blank=True, decoder=DecimalJSONDecoder)
    actor_id = models.BigIntegerField(null=True, blank=True, help_text="User id")
    request_id = models.CharField(max_length=128, blank=True)
    job_id = models.BigIntegerField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [
            # The history of one object: organization, table, object, in order.
            models.Index(fields=["organization_id", "table_name", "object_id", "id"], name="audit_object_idx"),
            # An organization's log by time.
            models.Index(fields=["organization_id", "occurred_at", "id"], name="audit_org_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.table_name} {self.object_id} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"


# -- rollups --------------------------------------------------------------------------------------

# Rollup sums: a million results of the largest allowed value still fit (CO2E_MAX_DIGITS + 7 digits).
ROLLUP_SUM_DIGITS: DecimalDigits = {"max_digits": rules.CO2E_MAX_DIGITS + 8, "decimal_places": rules.CO2E_PLACES}
# Sums of squared results (the uncertainty's variance), exact: twice the places of a result.
ROLLUP_SQUARES_DIGITS: DecimalDigits = {
    "max_digits": 2 * rules.CO2E_MAX_DIGITS + 8,
    "decimal_places": 2 * rules.CO2E_PLACES,
}

# Summary group -> the rollup column it groups on (by month: a monthly rollup's period).
ROLLUP_SUMMARY_KEYS: dict[str, Any] = {
    "category": F("category"),
    "supplier": F("supplier_id"),
    "month": F("period"),
    "method": F("method"),
}


class RollupQuerySet(OrgScopedQuerySet):
    def in_window(self, *, start: dt.date | None = None, end: dt.date | None = None) -> RollupQuerySet:
        """The groups whose emissions lie wholly inside a window of whole periods of the model's ``GRAIN``:
        ``period`` on or after ``start`` and ``end_period`` on or before ``end`` (first days of a month or a year).
        Exactly the emissions that the filters ``period_from`` = ``start`` and ``period_to`` = the last day of
        ``end``'s month (or year) select."""
        queryset = self
        if start is not None:
            queryset = queryset.filter(period__gte=start)
        if end is not None:
            queryset = queryset.filter(end_period__lte=end)
        return queryset

    def summary(self, group_by: str) -> models.QuerySet[Any, dict[str, Any]]:
        """``EmissionQuerySet.summary`` of the emissions these groups hold, with the same rows and order.

        Precondition: by supplier, a rollup with a supplier; by month, a monthly one.
        """
        return grouped_totals(
            self,
            group_by,
            ROLLUP_SUMMARY_KEYS,
            total_kg=Sum("co2e_kg"),
            # None when no emission of the group has a biogenic figure, as the raw sum of a NULL column gives.
            biogenic_kg=Sum("biogenic_co2_kg", filter=Q(biogenic_count__gt=0)),
            count=Sum("count"),
        )


class RollupBase(models.Model):
    """Per-group totals of an organization's stored emissions, kept exact by the database.

    Written only by statement-level triggers on ``emissions_emission`` (migration ``0015_rollups``): every
    INSERT, UPDATE, DELETE, COPY and TRUNCATE of emissions adds its net change per group in the same
    transaction, whichever code path ran it. A group whose last emission goes is deleted. ``period`` and
    ``end_period`` are the first days of the month (or year: ``GRAIN``) of ``period_start`` and ``period_end``:
    a window of whole months (years) selects exactly the groups of the emissions it holds. ``quality_code`` is
    the five data-quality scores as digits, technology, time, geography, completeness, reliability (``22212``;
    0 for a result with none); with ``count`` and the sums it gives the record- and emission-weighted scores and
    the uncertainty's inputs. ``co2e_kg_squares`` is the sum of each result's square. ``biogenic_co2_kg`` sums
    the results that have a biogenic figure, ``biogenic_count`` counts them. ``manage.py check_rollups``
    compares the tables with the emissions. ``organization_id`` is a plain integer: the rows go with the
    emissions.
    """

    GRAIN = "month"
    HAS_SUPPLIER = False

    organization_id = models.BigIntegerField()
    period = models.DateField()
    end_period = models.DateField()
    category = models.PositiveSmallIntegerField(choices=Category.choices)
    method = models.CharField(max_length=24, choices=Method.choices)
    quality_code = models.PositiveIntegerField()
    count = models.BigIntegerField()
    co2e_kg = models.DecimalField(**ROLLUP_SUM_DIGITS)
    co2e_kg_squares = models.DecimalField(**ROLLUP_SQUARES_DIGITS)
    biogenic_co2_kg = models.DecimalField(**ROLLUP_SUM_DIGITS)
    biogenic_count = models.BigIntegerField()

    objects = RollupQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.period} category {self.category} {self.method}: {self.count} emissions, {self.co2e_kg} kg"


def rollup_supplier_field() -> models.ForeignKey:
    """A rollup's supplier (None: the emissions without one), without a database constraint: the rows go with the
    emissions, not the supplier."""
    return models.ForeignKey(
        Supplier,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # the rollup's key leads with (organization_id, supplier)
        related_name="+",
    )


def supplier_rollup_key(name: str) -> models.UniqueConstraint:
    """A per-supplier rollup's key: "no supplier" is one group (NULLS NOT DISTINCT), as the triggers' upserts need."""
    return models.UniqueConstraint(
        fields=["organization_id", "supplier", "period", "end_period", "category", "method", "quality_code"],
        name=name,
        nulls_distinct=False,
    )


class EmissionRollup(RollupBase):
    """``RollupBase`` per organization, month, end month, category, method and data quality: the summaries by
    category, method and month, and the inventory, read it (a few hundred rows for a million emissions)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization_id", "period", "end_period", "category", "method", "quality_code"],
                name="emission_rollup_key",
            ),
        ]


class SupplierRollup(RollupBase):
    """``RollupBase`` per supplier and month: a supplier's months, and supplier summaries over windows of whole
    months that are not whole years."""

    HAS_SUPPLIER = True

    supplier = rollup_supplier_field()

    class Meta:
        constraints = [supplier_rollup_key("supplier_rollup_key")]


class SupplierYearRollup(RollupBase):
    """``RollupBase`` per supplier and year: supplier summaries over whole years or all time (a supplier's months
    are ~12 times as many rows)."""

    GRAIN = "year"
    HAS_SUPPLIER = True

    supplier = rollup_supplier_field()

    class Meta:
        constraints = [supplier_rollup_key("supplier_year_rollup_key")]
