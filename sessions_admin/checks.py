"""System checks for the sessions service's configuration."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def client_routes_open(app_configs, **kwargs):
    """Warn when the client routes are open to anyone (``SESSIONS_OPEN_CLIENT_ROUTES``)."""
    if not settings.SESSIONS_OPEN_CLIENT_ROUTES:
        return []
    return [
        Warning(
            "SESSIONS_OPEN_CLIENT_ROUTES is on: the session client routes under /api/messaging "
            "(create, read, heartbeat, renew, timeout, delete) are open to anyone who can reach "
            "the server.",
            hint="Unset it and give clients a key: SESSIONS_API_KEY (or ELIZA_SERVER_AUTH_TOKEN).",
            id="sessions_admin.W001",
        )
    ]
