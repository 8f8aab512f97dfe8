"""The VCCI project: settings, URLs, the WSGI entry point, gunicorn's configuration and the Celery application."""

# Loaded with Django, so that tasks submitted by the web (``delay_on_commit``) use the project's Celery configuration.
from vcci.celery import app as celery_app

__all__ = ("celery_app",)
