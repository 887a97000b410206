"""Keep every response under ``/api/`` in the error envelope, even outside DRF views."""

import logging

from django.conf import settings
from django.db import InterfaceError, OperationalError

from sessions_admin.errors import DATABASE_UNAVAILABLE, error_json_response

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ApiErrorMiddleware:
    """Refuse oversized bodies early and turn Django's HTML errors into the envelope."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        too_large = self._check_body_size(request)
        if too_large is not None:
            return too_large
        response = self.get_response(request)
        return self._envelope(request, response)

    def _check_body_size(self, request):
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return error_json_response(400, "Content-Length header is not an integer")
        if length < 0:
            return error_json_response(400, "Content-Length header is negative")
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return error_json_response(
                413,
                "Request body is larger than 1 MB",
                {"maxBytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "contentLength": length},
            )
        return None

    def _envelope(self, request, response):
        if response.status_code < 400 or response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return response
        if response.status_code == 404:
            return error_json_response(404, f"No route matches {request.method} {request.path}")
        if response.status_code == 405:
            replaced = error_json_response(405, f"Method {request.method} is not allowed here")
            if response.has_header("Allow"):
                replaced["Allow"] = response["Allow"]
            return replaced
        message = getattr(response, "reason_phrase", "") or "Request failed"
        return error_json_response(response.status_code, message)

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        if isinstance(exception, (OperationalError, InterfaceError)):
            logger.warning("Database unavailable: %s", exception)
            return error_json_response(503, DATABASE_UNAVAILABLE)
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return error_json_response(500, "Internal server error")
