"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

from messaging_project.env import stop_on_bad_configuration

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")

# Exit status 4 is gunicorn's "the application failed to load": it stops the
# server instead of starting worker after worker that fail the same way.
with stop_on_bad_configuration(exit_status=4):
    application = get_wsgi_application()
