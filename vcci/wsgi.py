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
# one (BULK_POOL_SOCKET, see vcci/gunicorn.conf.py and perf/bulkpool.py); otherwise this is Django's handler. In
# the bulk pool itself, the client address is the one the forwarding worker saw.
from perf.bulkpool import serving_application  # noqa: E402
from perf.trace import traced  # noqa: E402

# traced: the load test's request trace when REQUEST_TRACE_DIR is set (perf/trace.py); otherwise the same object.
application = traced(serving_application(django_application))
