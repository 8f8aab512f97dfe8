"""factory-boy factories shared by the whole suite.

Each factory is parametrised with its model so ``Factory.create()`` / ``.build()`` are typed as the model;
calling the class (``Factory(...)``) is typed as the factory by mypy, so typed code uses ``.create()``.

Every factory derives from ``ModelFactory``, whose saves are not checked for N+1 queries: test data
is not code under test.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, TypeVar

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import models
from zeal import zeal_ignore

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

T = TypeVar("T", bound=models.Model)


class ModelFactory(factory.django.DjangoModelFactory[T]):
    """The suite's base factory: creating test data is not checked for N+1 queries.

    A factory called in a loop would otherwise read as an N+1 at the test's line, e.g.
    ``OrganizationFactory`` (``django_get_or_create``) runs one ``get()`` per row. Code under test
    called by a test is still checked; only the factories' own saves and look-ups are exempt.
    """

    class Meta:
        abstract = True

    @classmethod
    def _create(cls, model_class: type[T], *args: Any, **kwargs: Any) -> T:
        with zeal_ignore():
            return super()._create(model_class, *args, **kwargs)


class OrganizationFactory(ModelFactory[Organization]):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Org {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(ModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw-for-tests")


class MembershipFactory(ModelFactory[Membership]):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.ADMIN


class SupplierFactory(ModelFactory[Supplier]):
    class Meta:
        model = Supplier

    organization = factory.SubFactory(OrganizationFactory)
    external_id = factory.Sequence(lambda n: f"SUP-{n:05d}")
    name = factory.Sequence(lambda n: f"Supplier {n}")
    country = "US"
    naics = "331110"


class FactorDatasetFactory(ModelFactory[FactorDataset]):
    class Meta:
        model = FactorDataset

    source = FactorDataset.Source.DESNZ
    version = factory.Sequence(lambda n: f"v{n}")
    name = factory.LazyAttribute(lambda o: f"{o.source} {o.version}")
    basis_year = 2025
    gwp_set = "AR5"


class EmissionFactorFactory(ModelFactory[EmissionFactor]):
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


class ExchangeRateFactory(ModelFactory[ExchangeRate]):
    class Meta:
        model = ExchangeRate

    currency = "EUR"
    quote_currency = "USD"
    year = 2022
    rate = Decimal("1.05")


class PriceIndexFactory(ModelFactory[PriceIndex]):
    class Meta:
        model = PriceIndex

    currency = "USD"
    year = 2022
    value = Decimal("100")


class ActivityRecordFactory(ModelFactory[ActivityRecord]):
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


class EmissionFactory(ModelFactory[Emission]):
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
