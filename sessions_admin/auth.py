"""API keys and the two access levels: client routes and the admin list.

``X-API-KEY`` equal to ``SESSIONS_ADMIN_API_KEY`` acts as an admin; equal to
``SESSIONS_API_KEY`` (alias ``ELIZA_SERVER_AUTH_TOKEN``) as a client. Keys are
compared in constant time. Staff users authenticate with a Django session or
HTTP Basic.
"""

import hmac

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

ROLE_ADMIN = "admin"
ROLE_CLIENT = "client"


class ApiKeyPrincipal:
    """The caller behind a valid API key (it is not a Django user)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    pk = None

    def __init__(self, role: str):
        self.role = role
        self.is_staff = role == ROLE_ADMIN
        self.username = f"api-key:{role}"

    def __str__(self):
        return self.username


def _matches(candidate: str, key: str) -> bool:
    return bool(key) and hmac.compare_digest(candidate.encode(), key.encode())


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticate ``X-API-KEY``; a key that matches nothing is remembered as rejected."""

    def authenticate(self, request):
        candidate = request.META.get("HTTP_X_API_KEY")
        if candidate is None:
            return None
        if _matches(candidate, settings.SESSIONS_ADMIN_API_KEY):
            return ApiKeyPrincipal(ROLE_ADMIN), ROLE_ADMIN
        if _matches(candidate, settings.SESSIONS_API_KEY):
            return ApiKeyPrincipal(ROLE_CLIENT), ROLE_CLIENT
        # Open routes ignore a stray key (as elizaOS does); protected ones report it.
        request._request.sessions_bad_api_key = True
        return None

    def authenticate_header(self, request):
        return 'ApiKey header="X-API-KEY"'


def _reject_bad_key(request) -> None:
    if getattr(request._request, "sessions_bad_api_key", False):
        raise exceptions.AuthenticationFailed("Invalid API key")


def is_sessions_admin(request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class IsSessionsAdmin(BasePermission):
    """Staff users or the admin API key."""

    message = "Admin access required: a staff user or the admin API key"

    def has_permission(self, request, view):
        if is_sessions_admin(request):
            return True
        _reject_bad_key(request)
        return False


class ClientAccess(BasePermission):
    """Open when no client key is configured; otherwise the client key, the admin key or staff."""

    message = "A valid X-API-KEY is required"

    def has_permission(self, request, view):
        if not settings.SESSIONS_API_KEY:
            return True
        if request.auth in (ROLE_CLIENT, ROLE_ADMIN) or is_sessions_admin(request):
            return True
        _reject_bad_key(request)
        return False


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describe ``X-API-KEY`` in the OpenAPI schema."""

    target_class = ApiKeyAuthentication
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-KEY",
            "description": (
                "SESSIONS_API_KEY (client routes, when set) or SESSIONS_ADMIN_API_KEY "
                "(every route, including the admin list)"
            ),
        }
