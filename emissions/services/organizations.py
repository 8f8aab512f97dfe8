"""Write services for tenants and their users: organizations, members, API tokens."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.text import slugify
from rest_framework.authtoken.models import Token

from emissions.models import Membership, Organization

# Permissions per role: the one table both ways in read. The admin gives them through each role's group
# (``role_group``); the API checks them on every request (``emissions.api.permissions.RoleAllows``, from the
# membership its token authentication caches). Superusers bypass both. Which rows a member sees is decided by the
# organization scoping (emissions.admin, the API's querysets), not here. Activities and emissions are written in the
# admin's forms by superusers only (its SuperuserWritesMixin): the activity permissions matter to the API and to the
# admin's CSV upload (emissions.admin_views.import_view), which imports through the same job as the API.
_VIEWED = [
    "organization",
    "membership",
    "emission",
    "activityrecord",
    "exchangerate",
    "priceindex",
    "supplier",
    "factordataset",
    "emissionfactor",
    "auditevent",  # the organization's audit log (read-only for everyone)
    "job",
    "restatement",
    "categoryexclusion",  # the categories assessed as not relevant (the inventory shows them)
]
_READ = [f"view_{model}" for model in _VIEWED]
# Store activities, edit and delete them (and so their emissions); recalculate them (writing a restatement).
_RECORD = [*(f"{action}_activityrecord" for action in ("add", "change", "delete")), "add_restatement"]
_MANAGE = [
    f"{action}_{model}"
    for model in ("supplier", "factordataset", "emissionfactor", "categoryexclusion")
    for action in ("add", "change", "delete")
]
_ROLE_PERMISSIONS: dict[str, list[str]] = {
    Membership.Role.VIEWER: _READ,
    Membership.Role.ANALYST: [*_READ, *_RECORD],
    Membership.Role.ADMIN: [*_READ, *_RECORD, *_MANAGE],
}
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {str(role): frozenset(codenames) for role, codenames in _ROLE_PERMISSIONS.items()}
)
"""The permission codenames (app ``emissions``, e.g. ``add_supplier``) of each membership role."""

# Seeing jobs is a read (``view_job``, above); controlling one (cancelling it) needs the write its kind makes: an
# import or a recalculation writes activities and their emissions. A kind missing here is a superuser's to control.
JOB_KIND_PERMISSIONS: Mapping[str, str] = MappingProxyType(
    {"import": "add_activityrecord", "recalculation": "add_activityrecord"}
)
JOB_CONTROL_FALLBACK = "change_job"  # in no role: superusers only


def job_control_permission(kind: str) -> str:
    """The permission codename that cancelling a job of ``kind`` needs (``JOB_KIND_PERMISSIONS``)."""
    return JOB_KIND_PERMISSIONS.get(kind, JOB_CONTROL_FALLBACK)


def job_control_permissions() -> frozenset[str]:
    """Every permission codename that lets its holder cancel jobs of some kind."""
    return frozenset([*JOB_KIND_PERMISSIONS.values(), JOB_CONTROL_FALLBACK])


class OrgUserError(ValueError):
    """The user cannot be put into the organization; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def organization_get_or_create(*, slug: str, name: str | None = None) -> tuple[Organization, bool]:
    """The organization with ``slug``, created (named ``name`` or after the slug) when missing.

    An existing organization keeps its name; ``ValidationError`` names ``slug``/``name`` when invalid.
    """
    clean_slug = slug.strip()
    if not clean_slug or slugify(clean_slug) != clean_slug:
        raise ValidationError({"slug": [f"'{slug}' is not a valid slug (lower-case letters, digits, hyphens)."]})
    existing = Organization.objects.filter(slug=clean_slug).first()
    if existing is not None:
        return existing, False
    org = Organization(slug=clean_slug, name=(name or "").strip() or clean_slug.replace("-", " ").title())
    org.full_clean()
    with transaction.atomic():
        org, created = Organization.objects.get_or_create(slug=clean_slug, defaults={"name": org.name})
    return org, created


def _role_group_name(role: str) -> str:
    return f"Organization {role}"


def role_group(role: str) -> Group:
    """The auth group carrying the admin permissions of a membership ``role`` (created on first use)."""
    if role not in _ROLE_PERMISSIONS:
        raise ValidationError({"role": [f"Unknown role '{role}'; choose one of {', '.join(Membership.Role.values)}."]})
    group, _ = Group.objects.get_or_create(name=_role_group_name(role))
    codenames = _ROLE_PERMISSIONS[role]
    perms = Permission.objects.filter(Q(content_type__app_label="emissions") & Q(codename__in=codenames))
    group.permissions.set(perms)
    return group


# Where ModelBackend caches a user object's permissions (``_perm_cache``, ``_user_perm_cache``, ``_group_perm_cache``).
_PERMISSION_CACHES = ("_perm_cache", "_user_perm_cache", "_group_perm_cache")


@transaction.atomic
def membership_role_set(*, membership: Membership, role: str) -> Membership:
    """Give ``membership`` the ``role``, in the API and in the admin alike.

    The API reads the membership's role on each request; the admin reads the user's groups. So the role is saved
    and the user's group of another role is replaced by this role's; groups that are not a role's are kept. The
    permission caches of ``membership.user`` are dropped, so that object answers ``has_perm`` by the new role.
    ``ValidationError`` on ``role`` when it is no role. Precondition: ``membership`` is saved.
    """
    group = role_group(role)
    membership.role = role
    membership.save(update_fields=["role"])
    user = membership.user
    other_roles = [_role_group_name(other) for other in _ROLE_PERMISSIONS if other != role]
    user.groups.remove(*Group.objects.filter(name__in=other_roles))
    user.groups.add(group)
    for cache in _PERMISSION_CACHES:
        user.__dict__.pop(cache, None)
    return membership


@transaction.atomic
def user_password_set(*, user: User, password: str) -> None:
    """Validate and set ``user``'s admin password; ``OrgUserError`` on ``password`` when it is too weak."""
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise OrgUserError("password", " ".join(exc.messages)) from exc
    user.set_password(password)
    user.save(update_fields=["password"])


@transaction.atomic
def org_user_create(
    *,
    organization: Organization,
    username: str,
    password: str | None = None,
    email: str = "",
    role: str = Membership.Role.ANALYST,
    staff: bool = True,
    superuser: bool = False,
) -> tuple[User, str]:
    """Create a user in ``organization`` with a membership and an API token; return (user, token key).

    Idempotent for a user that is already a member of ``organization``: nothing is changed
    and the existing token is returned. A user who belongs to another organization, or an
    existing user without a membership, raises ``OrgUserError``. ``password=None`` leaves the
    user without an admin password (API token only). ``staff`` lets the user into the admin,
    where the role's group decides what they may do.
    """
    user_model = get_user_model()
    username = username.strip()
    if not username:
        raise OrgUserError("username", "A username is required.")
    existing = user_model.objects.select_related("membership__organization").filter(username=username).first()
    if existing is not None:
        membership = getattr(existing, "membership", None)
        if membership is None:
            raise OrgUserError("username", f"User '{username}' exists but belongs to no organization.")
        if membership.organization_id != organization.pk:
            raise OrgUserError(
                "username", f"User '{username}' already belongs to organization '{membership.organization.slug}'."
            )
        token, _ = Token.objects.get_or_create(user=existing)
        return existing, token.key

    group = role_group(role)
    user = user_model(username=username, email=email, is_staff=staff or superuser, is_superuser=superuser)
    try:
        user_model.username_validator(username)
    except ValidationError as exc:
        raise OrgUserError("username", " ".join(exc.messages)) from exc
    if password is None:
        user.set_unusable_password()
    else:
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise OrgUserError("password", " ".join(exc.messages)) from exc
        user.set_password(password)
    try:
        user.full_clean(exclude=["password"])
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise OrgUserError(field, " ".join(messages)) from exc
    user.save()
    user.groups.add(group)
    Membership.objects.create(user=user, organization=organization, role=role)
    token = Token.objects.create(user=user)
    return user, token.key
