"""API keys, and who may do what on the API.

``X-API-KEY`` equal to ``SESSIONS_ADMIN_API_KEY`` acts as an admin; equal to
``SESSIONS_API_KEY`` (alias ``ELIZA_SERVER_AUTH_TOKEN``) as a client. Keys are
compared in constant time. Staff users authenticate with a Django session or
HTTP Basic, and need the model permission an operation needs, as in the admin.
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


class StaffModelPermissions(BasePermission):
    """The admin key, or a staff user holding the model permission the method needs.

    As in the admin, and as DRF's ``DjangoModelPermissions`` but with reading
    needing ``view_<model>``: ``GET`` view, ``POST`` add, ``PUT``/``PATCH``
    change, ``DELETE`` delete. A view names its model in ``permission_model``
    and maps a method to another action in ``permission_actions`` (a ``POST``
    that renews a session changes it). Superusers hold every permission.
    """

    actions = {
        "GET": "view",
        "HEAD": "view",
        "OPTIONS": "view",
        "POST": "add",
        "PUT": "change",
        "PATCH": "change",
        "DELETE": "delete",
    }

    def required_permission(self, request, view) -> str:
        """``app_label.action_model`` for the request's method on ``view``."""
        actions = {**self.actions, **getattr(view, "permission_actions", {})}
        if request.method not in actions:
            raise exceptions.MethodNotAllowed(request.method)
        opts = view.permission_model._meta
        return f"{opts.app_label}.{actions[request.method]}_{opts.model_name}"

    def has_permission(self, request, view):
        if request.auth == ROLE_ADMIN:
            return True
        permission = self.required_permission(request, view)
        user = request.user
        if user and user.is_active and user.is_staff and user.has_perm(permission):
            return True
        _reject_bad_key(request)
        self.message = (
            f"Permission {permission!r} required: a staff user holding it, or the admin API key"
        )
        return False


class ClientAccess(StaffModelPermissions):
    """Client routes: the client key, or as above; anyone with ``SESSIONS_OPEN_CLIENT_ROUTES``."""

    def has_permission(self, request, view):
        if settings.SESSIONS_OPEN_CLIENT_ROUTES or request.auth == ROLE_CLIENT:
            return True
        return super().has_permission(request, view)


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
                "SESSIONS_API_KEY (client routes, unless SESSIONS_OPEN_CLIENT_ROUTES opens "
                "them) or SESSIONS_ADMIN_API_KEY (every route, including the admin list)"
            ),
        }
