"""emissions/migrations/0010: role groups made before jobs existed get ``view_job``."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission

from emissions.models import Membership
from emissions.services.organizations import role_group
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db

migration = importlib.import_module("emissions.migrations.0010_role_groups_view_jobs")


def test_existing_role_groups_get_view_job() -> None:
    view_job = Permission.objects.get(content_type__app_label="emissions", codename="view_job")
    groups = []
    for role in Membership.Role:
        with unit_of_work():  # one service call each
            groups.append(role_group(role))
    for group in groups:
        group.permissions.remove(view_job)  # as made before jobs existed
    other = Group.objects.create(name="Auditors")
    migration.grant_view_job(apps, None)
    for group in groups:
        assert group.permissions.filter(pk=view_job.pk).exists(), group.name
    assert not other.permissions.exists()
    assert sorted(migration.ROLE_GROUPS) == sorted(group.name for group in groups)  # the service's names
