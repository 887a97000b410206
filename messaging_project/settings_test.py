"""Settings for the test suite: the production settings with a fixed test secret."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-for-production")
# The client routes are open, as elizaOS leaves them without a key; tests of the
# keys set one (tests/conftest.py's client_key), which closes them.
os.environ.setdefault("SESSIONS_OPEN_CLIENT_ROUTES", "true")
# Tests that exercise rate limiting turn it on themselves (tests/test_limits.py).
os.environ.setdefault("SESSIONS_THROTTLE_RATE", "off")
os.environ.setdefault("SESSIONS_AUTH_FAILURE_RATE", "off")
# In-process tests read health on the test's own connection (its uncommitted rows,
# its query count); the real-server outage tests check the deadline.
os.environ.setdefault("SESSIONS_HEALTH_TIMEOUT_MS", "0")

from messaging_project.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests run without collectstatic: serve static files from the app directories as
# they are (the production manifest storage would need collectstatic's manifest).
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
