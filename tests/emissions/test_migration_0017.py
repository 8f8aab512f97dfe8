"""emissions/migrations/0017: role groups made before category exclusions existed get their permissions, as the role
table gives them now (every role reads them, admins declare them)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission

from emissions.models import Membership
from emissions.services.organizations import ROLE_PERMISSIONS, role_group
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db

migration = importlib.import_module("emissions.migrations.0017_category_exclusion")
NEW = {codename for grants in migration.GRANTS.values() for codename, _ in grants}


def test_existing_role_groups_get_the_permissions_their_role_has() -> None:
    groups = {}
    for role in Membership.Role:
        with unit_of_work():  # one service call each
            groups[role] = role_group(role)
    new = Permission.objects.filter(content_type__app_label="emissions", codename__in=NEW)
    assert new.count() == len(NEW) == 4
    through = Group.permissions.through
    through.objects.filter(group__in=groups.values(), permission__in=new).delete()  # as made before they existed
    migration.grant_new_permissions(apps, None)
    granted: dict[int, set[str]] = {group.pk: set() for group in groups.values()}
    rows = through.objects.filter(group__in=groups.values(), permission__in=new)
    for group_id, codename in rows.values_list("group_id", "permission__codename"):
        granted[group_id].add(codename)
    for role, group in groups.items():
        assert granted[group.pk] == NEW & ROLE_PERMISSIONS[role], role
    assert ROLE_PERMISSIONS[Membership.Role.VIEWER] & NEW == {"view_categoryexclusion"}
