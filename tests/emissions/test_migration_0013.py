"""emissions/migrations/0013: role groups made before jobs, the audit trail, restatements and activity edits get
the permissions those brought, as the role table gives them now."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission

from emissions.models import Membership
from emissions.services.organizations import ROLE_PERMISSIONS, role_group
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db

migration = importlib.import_module("emissions.migrations.0013_role_groups_new_permissions")
NEW = {codename for grants in migration.GRANTS.values() for _, codename, _ in grants}


def test_existing_role_groups_get_the_new_permissions_their_role_has() -> None:
    groups = {}
    for role in Membership.Role:
        with unit_of_work():  # one service call each
            groups[role] = role_group(role)
    new = Permission.objects.filter(content_type__app_label="emissions", codename__in=NEW)
    assert new.count() == len(NEW)  # every codename the migration grants is a real permission
    through = Group.permissions.through
    through.objects.filter(group__in=groups.values(), permission__in=new).delete()  # as made before they existed
    other = Group.objects.create(name="Auditors")
    migration.grant_new_permissions(apps, None)
    granted: dict[int, set[str]] = {group.pk: set() for group in groups.values()}
    rows = through.objects.filter(group__in=groups.values(), permission__in=new)
    for group_id, codename in rows.values_list("group_id", "permission__codename"):
        granted[group_id].add(codename)
    for role, group in groups.items():
        # Exactly what the role table gives the role today, of the new permissions.
        assert granted[group.pk] == NEW & ROLE_PERMISSIONS[role], role
    assert not other.permissions.exists()
    assert sorted(migration.ROLE_GROUPS) == sorted(group.name for group in groups.values())  # the service's names
