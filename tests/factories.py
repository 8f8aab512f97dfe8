"""factory-boy factories shared by the whole suite.

Each factory is parametrised with its model so ``Factory.create()`` / ``.build()`` are typed as the model;
calling the class (``Factory(...)``) is typed as the factory by mypy, so typed code uses ``.create()``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from emissions.models import (
    ActivityRecord,
    Emission,
    EmissionFactor,
    ExchangeRate,
    FactorDataset,
    Membership,
    Method,
    Organization,
    PriceIndex,
    Supplier,
)


class OrganizationFactory(factory.django.DjangoModelFactory[Organization]):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class MembershipFactory(factory.django.DjangoModelFactory[Membership]):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.ADMIN


class SupplierFactory(factory.django.DjangoModelFactory[Supplier]):
    class Meta:
        model = Supplier

    organization = factory.SubFactory(OrganizationFactory)
    external_id = factory.Sequence(lambda n: f"SUP-{n:05d}")
    name = factory.Sequence(lambda n: f"Supplier {n}")
    country = "US"
    naics = "331110"


class FactorDatasetFactory(factory.django.DjangoModelFactory[FactorDataset]):
    class Meta:
        model = FactorDataset

    source = FactorDataset.Source.DESNZ
    version = factory.Sequence(lambda n: f"v{n}")
    name = factory.LazyAttribute(lambda o: f"{o.source} {o.version}")
    basis_year = 2025
    gwp_set = "AR5"


class EmissionFactorFactory(factory.django.DjangoModelFactory[EmissionFactor]):
    class Meta:
        model = EmissionFactor

    dataset = factory.SubFactory(FactorDatasetFactory)
    activity = factory.Sequence(lambda n: f"test:{n}")
    name = factory.Sequence(lambda n: f"Test factor {n}")
    region = "GB"
    year = 2025
    unit = "kWh"
    unit_label = "kWh"
    co2e_per_unit = Decimal("0.17700")
    gwp_set = "AR5"


class ExchangeRateFactory(factory.django.DjangoModelFactory[ExchangeRate]):
    class Meta:
        model = ExchangeRate

    currency = "EUR"
    quote_currency = "USD"
    year = 2022
    rate = Decimal("1.05")


class PriceIndexFactory(factory.django.DjangoModelFactory[PriceIndex]):
    class Meta:
        model = PriceIndex

    currency = "USD"
    year = 2022
    value = Decimal("100")


class ActivityRecordFactory(factory.django.DjangoModelFactory[ActivityRecord]):
    class Meta:
        model = ActivityRecord

    organization = factory.SubFactory(OrganizationFactory)
    supplier = factory.SubFactory(SupplierFactory, organization=factory.SelfAttribute("..organization"))
    category = 1
    method = Method.ACTIVITY
    activity = "test:1"
    amount = Decimal("100")
    unit = "kWh"
    period_start = dt.date(2025, 1, 1)
    period_end = dt.date(2025, 1, 31)


class EmissionFactory(factory.django.DjangoModelFactory[Emission]):
    class Meta:
        model = Emission

    organization = factory.SubFactory(OrganizationFactory)
    activity = factory.SubFactory(ActivityRecordFactory, organization=factory.SelfAttribute("..organization"))
    supplier = factory.SelfAttribute("activity.supplier")
    category = factory.SelfAttribute("activity.category")
    method = factory.SelfAttribute("activity.method")
    period_start = factory.SelfAttribute("activity.period_start")
    period_end = factory.SelfAttribute("activity.period_end")
    factor = factory.SubFactory(EmissionFactorFactory)
    co2e_kg = Decimal("17.7")
    data_quality = factory.LazyFunction(
        lambda: {
            "technology": 2,
            "time": 1,
            "geography": 1,
            "completeness": 2,
            "reliability": 2,
            "score": "1.6",
        }
    )
