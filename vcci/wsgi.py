"""
WSGI config for vcci project.

It exposes the WSGI callable as a module-level variable named ``application``.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/wsgi/
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vcci.settings")

django_application = get_wsgi_application()

# Imported once Django is set up (get_wsgi_application): bulk requests go to the bulk pool when gunicorn started
# one (BULK_POOL_SOCKET, see vcci/gunicorn.conf.py and perf/bulkpool.py); otherwise this is Django's handler.
from perf.bulkpool import BulkPoolForwarder  # noqa: E402

application = BulkPoolForwarder(django_application)
