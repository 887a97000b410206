"""One error envelope for every error under ``/api/`` (SPEC §3 "Errors").

``{"success": false, "error": {"code", "message", "details", "timestamp"}}``
"""

import json
import logging
import math
from contextlib import suppress
from datetime import datetime
from http import HTTPStatus
from itertools import islice

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from sessions_admin import policy
from sessions_admin.exceptions import (
    InvalidInput,
    SessionError,
    SessionExpired,
    SessionNotFound,
    SessionRenewalFailed,
    SessionWriteConflict,
)
from sessions_admin.migration_state import DATABASE_NOT_MIGRATED, lacks_migrations

logger = logging.getLogger(__name__)

CODE_FOR_STATUS = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    408: "REQUEST_TIMEOUT",
    410: "SESSION_EXPIRED",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    417: "EXPECTATION_FAILED",
    422: "SESSION_RENEWAL_FAILED",
    429: "RATE_LIMITED",
    431: "HEADER_FIELDS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
    503: "SERVICE_UNAVAILABLE",
}

STATUS_FOR_DOMAIN_ERROR = {
    SessionNotFound: 404,
    SessionExpired: 410,
    SessionRenewalFailed: 422,
    InvalidInput: 400,
    SessionWriteConflict: 503,
}

DATABASE_UNAVAILABLE = "The database is busy or unavailable; try again shortly"
# What a 503 for the database says to wait before trying again: a row held
# elsewhere (the lock timeout is 2 s), a database restarting.
DATABASE_RETRY_AFTER_SECONDS = 2

# An error quotes at most this many characters of a name or value it was sent.
QUOTED_MAX_CHARS = 40
# The last guard on an envelope's size, whatever an error was given to say
# (about 5 KB at most): each text, each key, and how many entries and messages.
ENVELOPE_TEXT_MAX_CHARS = 200
ENVELOPE_KEY_MAX_CHARS = 100
ENVELOPE_ENTRIES_MAX = 10
ENVELOPE_MESSAGES_MAX = 2


def quoted(text: str, max_chars: int = QUOTED_MAX_CHARS) -> str:
    """``text`` as an error may quote it: surrogates escaped (``\\udXXX``), cut short with "…"."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:max_chars] + "…" if len(text) > max_chars else text


def _bounded(value):
    """``value`` with every text, and every list or object, cut to the envelope's limits."""
    if isinstance(value, str):
        return quoted(value, ENVELOPE_TEXT_MAX_CHARS)
    if isinstance(value, dict):
        return {
            quoted(str(key), ENVELOPE_KEY_MAX_CHARS): _bounded(item)
            for key, item in islice(value.items(), ENVELOPE_ENTRIES_MAX)
        }
    if isinstance(value, (list, tuple)):
        return [_bounded(item) for item in value[:ENVELOPE_MESSAGES_MAX]]
    return value


def error_body(
    code: str, message: str, details: dict | None = None, *, at: datetime | None = None
) -> dict:
    """Return the error envelope; its timestamp is ``at``, the request's instant if it read one.

    Message and details are cut to a few KB (``_bounded``): an error may
    quote what it refuses, and what it refuses may be a megabyte.
    """
    return {
        "success": False,
        "error": {
            "code": code,
            "message": quoted(message, ENVELOPE_TEXT_MAX_CHARS),
            "details": _bounded(details or {}),
            "timestamp": policy.format_datetime(at or policy.clock()),
        },
    }


def error_json_response(
    status: int, message: str, details: dict | None = None, code: str | None = None
):
    """A plain Django ``JsonResponse`` carrying the envelope (for use outside DRF)."""
    return JsonResponse(
        error_body(code or CODE_FOR_STATUS.get(status, "ERROR"), message, details), status=status
    )


def raw_http_error(
    status: int, reason: str, message: str, extra_headers: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """A whole HTTP/1.1 answer carrying the envelope, for the server to write itself.

    gunicorn refuses some requests before any application code runs (a request
    line or headers too long, a malformed request line, a request that does not
    arrive in time); this is that answer.
    The connection is closed after it: what follows on it cannot be trusted.
    The status line has the status's own phrase: gunicorn gives "Bad Request"
    to its 501 for an unknown transfer coding.
    """
    envelope = error_body(CODE_FOR_STATUS.get(status, "ERROR"), message or reason)
    body = json.dumps(envelope, separators=(",", ":")).encode()
    with suppress(ValueError):
        reason = HTTPStatus(status).phrase
    extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"{extra}"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _flatten(detail, prefix: str = "") -> dict[str, list[str]]:
    """Flatten DRF's nested error detail into ``{"field.sub": [messages]}``."""
    if isinstance(detail, dict):
        flat = {}
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                flat.update(_flatten(value, prefix or "body"))
            else:
                flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
        return flat
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return {prefix or "body": [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            flat.update(_flatten(item, f"{prefix}[{index}]" if prefix else f"[{index}]"))
        return flat
    return {prefix or "body": [str(detail)]}


def _validation_message(fields: dict[str, list[str]]) -> str:
    """The first problem, naming its field (messages that already name it are kept as they are)."""
    field, messages = next(iter(fields.items()))
    message = messages[0] if messages else "Invalid request"
    if field == "body" or f"'{field}'" in message:
        return message
    return f"Invalid value for field '{field}': {message}"


def _database_unavailable(message: str) -> Response:
    return Response(
        error_body("SERVICE_UNAVAILABLE", message),
        status=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def api_exception_handler(exc, context):
    """DRF exception handler producing the envelope for every handled error."""
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()

    if isinstance(exc, SessionError):
        status = next(code for cls, code in STATUS_FOR_DOMAIN_ERROR.items() if isinstance(exc, cls))
        message, details = exc.message, dict(exc.details)
        if isinstance(exc, InvalidInput):
            if f"'{exc.field}'" not in message:
                message = f"Invalid value for field '{exc.field}': {message}"
            details["fields"] = {exc.field: [message]}
        set_rollback()
        return Response(error_body(exc.code, message, details, at=exc.at), status=status)

    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("PAYLOAD_TOO_LARGE", "Request body is larger than 1 MB"), status=413
        )

    if isinstance(exc, SuspiciousOperation):
        # Django answers these 400 itself (and logs them so), but a DRF view's
        # exception would reach the API's catch-all (500) first: e.g. more
        # query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS.
        logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
        message = "Bad request"
        if isinstance(exc, TooManyFieldsSent):
            message = f"Too many parameters: at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,}"
        return Response(error_body("VALIDATION_ERROR", message), status=400)

    if lacks_migrations(exc):
        logger.warning("Database not migrated: %s", exc)
        set_rollback()
        return _database_unavailable(DATABASE_NOT_MIGRATED)

    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DatabaseError)
        and not isinstance(exc, drf.APIException)
        and "connection" in str(exc).lower()
    ):
        logger.warning("Database unavailable: %s", exc)
        set_rollback()
        return _database_unavailable(DATABASE_UNAVAILABLE)

    if not isinstance(exc, drf.APIException):
        return None

    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))

    status = exc.status_code
    code = CODE_FOR_STATUS.get(status, "ERROR")
    details: dict = {}
    if isinstance(exc, drf.ValidationError):
        fields = _flatten(exc.detail)
        message = _validation_message(fields)
        details = {"fields": fields}
    elif isinstance(exc, drf.ParseError):
        message = f"Malformed request body: {exc.detail}"
    else:
        message = str(exc.detail)
        if isinstance(exc, drf.Throttled) and exc.wait is not None:
            details = {"retryAfterSeconds": int(headers["Retry-After"])}

    set_rollback()
    return Response(error_body(code, message, details), status=status, headers=headers)
