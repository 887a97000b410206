"""ASGI entry point for gunicorn: the WSGI application on a pool of threads (see serving.py)."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from messaging_project.env import stop_on_bad_configuration
from messaging_project.serving import ThreadedWSGI, view_threads

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")

# Exit status 4 is gunicorn's "the application failed to load": it stops the
# server instead of starting worker after worker that fail the same way.
with stop_on_bad_configuration(exit_status=4):
    application = ThreadedWSGI(
        get_wsgi_application(),
        threads=view_threads(),
        max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    )
