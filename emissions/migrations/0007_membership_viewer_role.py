"""A third membership role, ``viewer``: reads only (its permissions: ``emissions.services.organizations``)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('emissions', '0006_idempotency_record'),
    ]

    operations = [
        migrations.AlterField(
            model_name='membership',
            name='role',
            field=models.CharField(choices=[('admin', 'Admin'), ('analyst', 'Analyst'), ('viewer', 'Viewer')], default='analyst', max_length=16),
        ),
    ]
