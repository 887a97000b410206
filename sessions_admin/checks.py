"""System checks for the sessions service's configuration."""

from django.conf import settings
from django.core.checks import Warning, register


@register()
def client_routes_open(app_configs, **kwargs):
    """Warn when client routes are open to anyone (no ``SESSIONS_API_KEY``)."""
    if settings.SESSIONS_API_KEY:
        return []
    return [
        Warning(
            "SESSIONS_API_KEY is not set: the session client routes under /api/messaging "
            "are open to anyone who can reach the server.",
            hint="Set SESSIONS_API_KEY (or ELIZA_SERVER_AUTH_TOKEN) to require X-API-KEY.",
            id="sessions_admin.W001",
        )
    ]
