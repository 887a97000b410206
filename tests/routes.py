"""Every route of the project, with sample values in its parameters, for tests that sweep them."""

import re

from django.contrib.admindocs.views import simplify_regex
from django.urls import URLResolver, get_resolver

_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
# /admin/<app_label>/<model_name>/...: the model whose ids the route takes.
_ADMIN_MODEL = re.compile(r"^/admin/(\w+)/(\w+)/")


def route_templates() -> list[str]:
    """Every URL pattern as a path template, e.g. ``/admin/auth/user/<path:object_id>/``."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield simplify_regex(prefix + str(pattern.pattern))

    return list(dict.fromkeys(walk(get_resolver().url_patterns)))


def sample_path(template: str, *, ids: dict[str, object], values: dict[str, str]) -> str:
    """``template`` with each parameter filled in.

    An id parameter (``object_id``, ``id``, ``sessionId``) takes the id in
    ``ids`` of the model the route is under (``"auth.user"``; ``"sessions_admin.session"``
    for the API and the admin's shortcut); any other parameter its entry in ``values``.
    """
    model = _ADMIN_MODEL.match(template)
    label = f"{model[1]}.{model[2]}" if model else "sessions_admin.session"

    def fill(match):
        name = match[1]
        if name in ("object_id", "id", "sessionId"):
            return str(ids[label])
        return values[name]

    return _PARAMETER.sub(fill, template)
