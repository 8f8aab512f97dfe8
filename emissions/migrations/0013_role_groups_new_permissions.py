"""The role groups of an existing database get the permissions that jobs, the audit trail, restatements and activity
edits brought.

``emissions.services.organizations.role_group`` gives a group its role's permissions whenever it creates or updates
one; groups made before these models and rules existed lack the new permissions until then, so the admin would hide
jobs, the audit log and restatements from them. The lists are frozen here as the role table had them when this
migration was written (a migration must not follow later edits of the table). The groups' names are the service's
(``Organization <role>``). A new database has no such group yet: nothing to do.
"""

from django.db import migrations

# Group name -> (model, codename, name) of the permissions it gains.
_READ = [
    ("job", "view_job", "Can view job"),
    ("auditevent", "view_auditevent", "Can view audit event"),
    ("restatement", "view_restatement", "Can view restatement"),
]
_RECORD = [
    ("activityrecord", "change_activityrecord", "Can change activity record"),
    ("activityrecord", "delete_activityrecord", "Can delete activity record"),
    ("restatement", "add_restatement", "Can add restatement"),
]
GRANTS = {
    "Organization viewer": _READ,
    "Organization analyst": _READ + _RECORD,
    "Organization admin": _READ + _RECORD,
}
ROLE_GROUPS = list(GRANTS)


def grant_new_permissions(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    groups = list(Group.objects.filter(name__in=ROLE_GROUPS))
    if not groups:
        return
    wanted = {codename: (model, name) for grants in GRANTS.values() for model, codename, name in grants}
    # The permissions exist once post_migrate has run after their models' migrations; made here when the migrations
    # run in one go.
    models = {model for model, _ in wanted.values()}
    types = {ct.model: ct for ct in ContentType.objects.filter(app_label="emissions", model__in=models)}
    for model in models - types.keys():
        types[model] = ContentType.objects.create(app_label="emissions", model=model)
    found = Permission.objects.filter(content_type__app_label="emissions", codename__in=wanted)
    permissions = {permission.codename: permission for permission in found}
    for codename in wanted.keys() - permissions.keys():
        model, name = wanted[codename]
        permissions[codename] = Permission.objects.create(content_type=types[model], codename=codename, name=name)
    for group in groups:
        group.permissions.add(*(permissions[codename] for _, codename, _ in GRANTS[group.name]))


class Migration(migrations.Migration):

    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("emissions", "0012_restatements"),
    ]

    operations = [
        migrations.RunPython(grant_new_permissions, migrations.RunPython.noop),
    ]
