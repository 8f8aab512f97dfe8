"""``manage.py create_org_user``: bootstrap an organization user with an API token."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from emissions.models import Membership
from emissions.services.organizations import (
    OrgUserError,
    membership_role_set,
    org_user_create,
    organization_get_or_create,
    user_password_set,
)


class Command(BaseCommand):
    help = (
        "Create a user in an organization (the organization too, if needed) and print its API token. "
        "Running it again for the same user and organization prints the existing token "
        "(and, given --role, gives the member that role)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="Organization slug, e.g. acme")
        parser.add_argument("--username", required=True)
        parser.add_argument("--org-name", default=None, help="Name for a new organization (default: from the slug)")
        parser.add_argument("--password", default=None, help="Admin login password (default: API token only)")
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--role",
            default=None,
            choices=Membership.Role.values,
            help="The member's role (default: admin for a new user; an existing member keeps theirs)",
        )
        parser.add_argument("--superuser", action="store_true", help="Make the user a superuser (all orgs in admin)")
        parser.add_argument(
            "--admin-login",
            action="store_true",
            help="Without --password: generate an admin password for a new user (or one without a password) and "
            "print it; an existing password is kept (make run runs this every time)",
        )
        parser.add_argument(
            "--reset-password",
            action="store_true",
            help="With --admin-login: generate and print a new password for an existing user too (a lost one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # One transaction: a refused user does not leave a freshly created organization behind.
        with transaction.atomic():
            self._handle(options)

    def _handle(self, options: dict[str, Any]) -> None:
        try:
            org, org_created = organization_get_or_create(slug=options["org"], name=options["org_name"])
        except ValidationError as exc:
            options_by_field = {"slug": "--org", "name": "--org-name"}
            problems = "; ".join(
                f"{options_by_field.get(key, key)}: {' '.join(msgs)}" for key, msgs in exc.message_dict.items()
            )
            raise CommandError(problems) from exc
        if org_created:
            self.stdout.write(f"Created organization '{org.slug}' ({org.name}).")

        if options["reset_password"] and (not options["admin_login"] or options["password"] is not None):
            raise CommandError("--reset-password goes with --admin-login (and without --password, which sets one).")
        found = get_user_model().objects.filter(username=options["username"].strip()).first()
        existed = found is not None
        password = options["password"]
        role = options["role"]
        # A password an operator already has is not replaced behind their back (make run passes --admin-login on
        # every run): only a new user, one without a usable password, or --reset-password gets a generated one.
        keeps_password = found is not None and found.has_usable_password() and not options["reset_password"]
        generated = password is None and options["admin_login"] and not keeps_password
        if generated:
            password = secrets.token_urlsafe(12)
        try:
            user, token = org_user_create(
                organization=org,
                username=options["username"],
                password=password,
                email=options["email"],
                role=role or Membership.Role.ADMIN,
                superuser=options["superuser"],
            )
            if existed and generated:
                user_password_set(user=user, password=password)
        except OrgUserError as exc:
            raise CommandError(f"--{exc.field}: {exc.message}") from exc
        role_changed = existed and role is not None and user.membership.role != role
        if role_changed:
            membership_role_set(membership=user.membership, role=role)

        if existed:
            changes = ["new admin password set"] if generated else []
            if role_changed:
                changes.append(f"role set to '{role}'")
            changed = ", ".join(changes) or "nothing changed"
            self.stdout.write(f"User '{user.username}' already exists in '{org.slug}'; {changed}.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Created user '{user.username}' in '{org.slug}'."))
        self.stdout.write(f"API token: {token}")
        if generated:
            self.stdout.write(f"Admin login: /admin/ username '{user.username}' password '{password}'")
        elif options["admin_login"] and password is None:
            self.stdout.write(
                f"Admin login: /admin/ username '{user.username}' with its password (unchanged; "
                "--reset-password prints a new one)."
            )
        elif password is not None and not existed:
            self.stdout.write(f"Admin login: /admin/ as '{user.username}' with the password you gave.")
