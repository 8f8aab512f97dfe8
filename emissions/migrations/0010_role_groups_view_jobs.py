"""The role groups of an existing database see jobs in the admin: ``view_job`` for every role.

``emissions.services.organizations.role_group`` gives a group its role's permissions whenever it creates or updates
one; groups made before jobs existed lack ``view_job`` until then. The groups' names are the service's
(``Organization <role>``). A new database has no such group yet: nothing to do.
"""

from django.db import migrations

ROLE_GROUPS = ["Organization viewer", "Organization analyst", "Organization admin"]


def grant_view_job(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    groups = list(Group.objects.filter(name__in=ROLE_GROUPS))
    if not groups:
        return
    # The permission exists once post_migrate has run after 0008; made here when both migrations run in one go.
    content_type, _ = ContentType.objects.get_or_create(app_label="emissions", model="job")
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename="view_job", defaults={"name": "Can view job"}
    )
    for group in groups:
        group.permissions.add(permission)


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("emissions", "0009_audit_trail"),
    ]

    operations = [
        migrations.RunPython(grant_view_job, migrations.RunPython.noop),
    ]
