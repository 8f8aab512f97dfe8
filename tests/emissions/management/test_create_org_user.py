"""Tests for ``manage.py create_org_user``."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from rest_framework.authtoken.models import Token

from emissions.models import Organization
from tests.helpers import call_command

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("create_org_user", *args, stdout=out)
    return out.getvalue()


def test_creates_org_and_user_and_prints_token():
    output = run("--org", "initech", "--org-name", "Initech Inc.", "--username", "peter", "--password", "Tps-Report-99")
    user = get_user_model().objects.get(username="peter")
    org = Organization.objects.get(slug="initech")
    assert org.name == "Initech Inc."
    assert user.membership.organization == org
    assert user.check_password("Tps-Report-99")
    assert f"API token: {Token.objects.get(user=user).key}" in output
    assert "Admin login" in output
    assert "Created organization 'initech'" in output


def test_without_password_prints_no_admin_login():
    output = run("--org", "initech", "--username", "api-only")
    assert "API token:" in output
    assert "Admin login" not in output
    assert not get_user_model().objects.get(username="api-only").has_usable_password()


def test_rerun_same_org_prints_existing_token():
    run("--org", "initech", "--username", "peter")
    token = Token.objects.get(user__username="peter").key
    output = run("--org", "initech", "--username", "peter")
    assert "already exists" in output
    assert f"API token: {token}" in output
    assert get_user_model().objects.filter(username="peter").count() == 1


def test_user_in_other_org_is_a_command_error():
    run("--org", "initech", "--username", "peter")
    with pytest.raises(CommandError, match=r"--username: .*initech"):
        run("--org", "globex", "--username", "peter")


def test_superuser_flag():
    run("--org", "initech", "--username", "boss", "--password", "Tps-Report-99", "--superuser")
    assert get_user_model().objects.get(username="boss").is_superuser


def test_bad_slug_names_the_option():
    with pytest.raises(CommandError, match="--org:"):
        run("--org", "Not A Slug", "--username", "x")
    assert not Organization.objects.exists()


def test_refused_user_leaves_no_new_org_behind():
    run("--org", "initech", "--username", "peter")
    with pytest.raises(CommandError):
        run("--org", "brand-new", "--username", "peter")
    assert not Organization.objects.filter(slug="brand-new").exists()


def test_admin_login_keeps_a_password_and_reset_password_replaces_it():
    output = run("--org", "initech", "--username", "ops", "--admin-login")
    first = re.search(r"password '([^']+)'", output).group(1)
    user = get_user_model().objects.get(username="ops")
    assert user.check_password(first)
    token = Token.objects.get(user=user).key
    assert f"API token: {token}" in output

    # make run passes --admin-login on every run: the password the operator has stays.
    again = run("--org", "initech", "--username", "ops", "--admin-login")
    assert "password '" not in again and "with its password (unchanged; --reset-password" in again
    assert "nothing changed" in again
    user.refresh_from_db()
    assert user.check_password(first)
    assert f"API token: {token}" in again  # same token, no second user

    reset = run("--org", "initech", "--username", "ops", "--admin-login", "--reset-password")
    second = re.search(r"password '([^']+)'", reset).group(1)
    user.refresh_from_db()
    assert second != first and user.check_password(second)
    assert "new admin password set" in reset
    assert get_user_model().objects.filter(username="ops").count() == 1


def test_admin_login_gives_a_user_without_a_password_one():
    run("--org", "initech", "--username", "api-only")  # a token, no password
    output = run("--org", "initech", "--username", "api-only", "--admin-login")
    password = re.search(r"password '([^']+)'", output).group(1)
    assert get_user_model().objects.get(username="api-only").check_password(password)


def test_rerun_with_a_role_changes_the_members_role_and_admin_permissions():
    run("--org", "initech", "--username", "peter", "--role", "admin")
    output = run("--org", "initech", "--username", "peter", "--role", "viewer")
    assert "role set to 'viewer'" in output
    user = get_user_model().objects.get(username="peter")
    assert user.membership.role == "viewer"
    assert not user.has_perm("emissions.add_supplier")
    assert user.has_perm("emissions.view_supplier")


def test_rerun_without_a_role_keeps_the_members_role():
    run("--org", "initech", "--username", "peter", "--role", "viewer")
    output = run("--org", "initech", "--username", "peter")
    assert "nothing changed" in output
    assert get_user_model().objects.get(username="peter").membership.role == "viewer"


def test_reset_password_needs_admin_login_and_no_password():
    with pytest.raises(CommandError, match="--reset-password goes with --admin-login"):
        run("--org", "initech", "--username", "ops", "--reset-password")
    with pytest.raises(CommandError, match="--reset-password goes with --admin-login"):
        run("--org", "initech", "--username", "ops", "--admin-login", "--reset-password", "--password", "x" * 12)
