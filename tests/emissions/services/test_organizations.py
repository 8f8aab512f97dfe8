"""Tests for emissions.services.organizations: organizations, org users and their tokens."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from rest_framework.authtoken.models import Token

from emissions.models import Membership, Organization
from emissions.services.organizations import (
    ROLE_PERMISSIONS,
    OrgUserError,
    membership_role_set,
    org_user_create,
    organization_get_or_create,
)
from tests.helpers import unit_of_work

pytestmark = pytest.mark.django_db
User = get_user_model()


def test_organization_get_or_create_creates_then_returns_existing():
    org, created = organization_get_or_create(slug="northwind", name="Northwind Traders")
    assert created is True
    assert (org.slug, org.name) == ("northwind", "Northwind Traders")

    again, created_again = organization_get_or_create(slug="northwind", name="Other name")
    assert created_again is False
    assert again.pk == org.pk
    assert again.name == "Northwind Traders"  # an existing org keeps its name


def test_organization_get_or_create_names_from_slug_when_no_name():
    org, _ = organization_get_or_create(slug="blue-sky")
    assert org.name == "Blue Sky"


@pytest.mark.parametrize("slug", ["", "Has Spaces", "UPPER"])
def test_organization_get_or_create_rejects_bad_slug(slug):
    with pytest.raises(ValidationError) as exc:
        organization_get_or_create(slug=slug)
    assert "slug" in exc.value.message_dict
    assert not Organization.objects.exists()


def test_org_user_create_makes_user_membership_token_and_admin_permissions(org):
    user, token = org_user_create(
        organization=org, username="alice", password="a-long-Passphrase-42", email="alice@example.com", role="admin"
    )
    user.refresh_from_db()
    assert user.is_staff and not user.is_superuser
    assert user.check_password("a-long-Passphrase-42")
    assert user.membership.organization == org
    assert user.membership.role == Membership.Role.ADMIN
    assert Token.objects.get(user=user).key == token
    assert user.has_perm("emissions.change_supplier")
    assert user.has_perm("emissions.view_emission")
    assert not user.has_perm("emissions.change_emission")


def test_org_user_create_analyst_is_view_only(org):
    user, _ = org_user_create(organization=org, username="ann", role="analyst")
    user = User.objects.get(pk=user.pk)  # fresh instance: permission caches are per instance
    assert user.has_perm("emissions.view_supplier")
    assert not user.has_perm("emissions.add_supplier")
    assert not user.has_usable_password()  # no password given: API token only


@pytest.mark.parametrize("role", ["viewer", "analyst", "admin"])
def test_each_role_group_carries_the_role_table(org, role):
    """The admin's groups and the API read one table (ROLE_PERMISSIONS): a viewer reads, an analyst also records
    activities, an admin also manages suppliers and factors."""
    user, _ = org_user_create(organization=org, username=f"{role}-user", role=role)
    user = User.objects.get(pk=user.pk)
    assert {perm.split(".")[1] for perm in user.get_all_permissions()} == ROLE_PERMISSIONS[role]
    assert user.has_perm("emissions.view_emission")
    assert user.has_perm("emissions.add_activityrecord") == (role != "viewer")
    assert user.has_perm("emissions.add_supplier") == (role == "admin")


def test_org_user_create_superuser(org):
    user, _ = org_user_create(organization=org, username="root", password="a-long-Passphrase-42", superuser=True)
    assert user.is_superuser and user.is_staff


def test_org_user_create_same_org_is_idempotent(org):
    user, token = org_user_create(organization=org, username="bob")
    again, token_again = org_user_create(organization=org, username="bob", password="a-long-Passphrase-42")
    assert again.pk == user.pk
    assert token_again == token
    again.refresh_from_db()
    assert not again.has_usable_password()  # nothing changed on the re-run
    assert User.objects.filter(username="bob").count() == 1


def test_org_user_create_user_in_other_org_is_refused(org, other_org):
    org_user_create(organization=org, username="carol")
    with pytest.raises(OrgUserError) as exc:
        org_user_create(organization=other_org, username="carol")
    assert exc.value.field == "username"
    assert "acme" in str(exc.value)
    assert Membership.objects.get(user__username="carol").organization == org


def test_org_user_create_existing_user_without_membership_is_refused(org):
    User.objects.create_user(username="loner")
    with pytest.raises(OrgUserError) as exc:
        org_user_create(organization=org, username="loner")
    assert exc.value.field == "username"
    assert not Membership.objects.exists()


def test_org_user_create_weak_password_writes_nothing(org):
    with pytest.raises(OrgUserError) as exc:
        org_user_create(organization=org, username="dave", password="123")
    assert exc.value.field == "password"
    assert not User.objects.filter(username="dave").exists()
    assert not Token.objects.exists()


def test_org_user_create_invalid_username(org):
    with pytest.raises(OrgUserError) as exc:
        org_user_create(organization=org, username="no spaces allowed")
    assert exc.value.field == "username"
    assert not User.objects.exists()


def test_org_user_create_unknown_role_writes_nothing(org):
    with pytest.raises(ValidationError) as exc:
        org_user_create(organization=org, username="erin", role="owner")
    assert "role" in exc.value.message_dict
    assert not User.objects.exists()


def test_membership_role_set_demotes_in_the_admin_too(org):
    user, _ = org_user_create(organization=org, username="frank", role="admin")
    assert user.has_perm("emissions.add_supplier")  # fills this object's permission caches

    with unit_of_work():  # a second service call, after org_user_create's
        membership_role_set(membership=user.membership, role="viewer")

    assert not user.has_perm("emissions.add_supplier")  # the same object: its caches were dropped
    fresh = User.objects.get(pk=user.pk)
    assert fresh.membership.role == Membership.Role.VIEWER
    assert {perm.split(".")[1] for perm in fresh.get_all_permissions()} == ROLE_PERMISSIONS["viewer"]


def test_membership_role_set_promotes_and_keeps_other_groups(org):
    user, _ = org_user_create(organization=org, username="grace", role="viewer")
    auditors = Group.objects.create(name="Auditors")
    user.groups.add(auditors)

    with unit_of_work():  # a second service call, after org_user_create's
        membership_role_set(membership=user.membership, role="admin")

    fresh = User.objects.get(pk=user.pk)
    assert fresh.has_perm("emissions.add_supplier")
    assert set(fresh.groups.values_list("name", flat=True)) == {"Auditors", "Organization admin"}


def test_membership_role_set_unknown_role_changes_nothing(org):
    user, _ = org_user_create(organization=org, username="heidi", role="analyst")
    with pytest.raises(ValidationError) as exc:
        membership_role_set(membership=user.membership, role="owner")
    assert "role" in exc.value.message_dict
    assert Membership.objects.get(user=user).role == Membership.Role.ANALYST
    assert list(User.objects.get(pk=user.pk).groups.values_list("name", flat=True)) == ["Organization analyst"]
