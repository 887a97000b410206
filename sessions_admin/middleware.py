"""Keep every response under ``/api/`` in the error envelope, even outside DRF views.

Elsewhere (the admin), a database that is locked or unreachable is a 503 page.
"""

import io
import logging
import time

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse

from sessions_admin.errors import (
    DATABASE_RETRY_AFTER_SECONDS,
    DATABASE_UNAVAILABLE,
    error_json_response,
    quoted,
)
from sessions_admin.migration_state import DATABASE_NOT_MIGRATED, lacks_migrations

logger = logging.getLogger(__name__)

ADMIN_DATABASE_UNAVAILABLE = (
    "<!doctype html><title>Database unavailable</title>"
    "<h1>Database unavailable</h1>"
    "<p>The database is busy or cannot be reached, so nothing was changed. "
    "Try again in a moment.</p>"
)
ADMIN_DATABASE_NOT_MIGRATED = (
    "<!doctype html><title>Database not migrated</title>"
    "<h1>Database not migrated</h1>"
    "<p>The database has not been set up for this version of the service, so nothing was "
    "changed. Run <code>manage.py migrate</code>, then try again.</p>"
)

API_PREFIX = "/api/"


def _is_api(request) -> bool:
    """Whether the request is for the API, ``//api/...`` included.

    A client that joins a base URL ending in ``/`` with a path starting with
    one asks for ``//api/...``: a 404 still, but in the envelope it can read.
    """
    return ("/" + request.path.lstrip("/")).startswith(API_PREFIX)


# A refused body is read and dropped up to this size, for at most this long,
# before the 413 goes out: closing a socket with unread data makes the kernel
# reset the connection, and the client, still sending, never sees the 413.
# Larger or slower bodies are cut off; one that never comes (a Content-Length
# that lies) must not hold the worker until gunicorn's timeout kills it.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_MAX_SECONDS = 2.0


def _drain(request, max_bytes: int) -> None:
    stream = request.environ.get("wsgi.input")
    # gunicorn hands over its socket: its timeout bounds each read.
    sock = request.environ.get("gunicorn.socket")
    previous_timeout = sock.gettimeout() if sock is not None else None
    deadline = time.monotonic() + DRAIN_MAX_SECONDS
    remaining = max_bytes
    try:
        while stream is not None and remaining > 0:
            seconds_left = deadline - time.monotonic()
            if seconds_left <= 0:
                break
            if sock is not None:
                sock.settimeout(seconds_left)
            chunk = stream.read(min(65536, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
    except Exception:  # a client that hangs up, stalls or lies about its length
        logger.debug("Stopped draining a refused request body", exc_info=True)
    finally:
        if sock is not None:
            try:
                sock.settimeout(previous_timeout)
            except OSError:  # the client is gone already
                pass


# Transfer codings a request body may carry. gunicorn undoes chunked itself
# and hands any other it knows (gzip, deflate, compress) on still applied.
TRANSFER_CODINGS = frozenset({"chunked", "identity"})


# Headers of a response that describe its body, not the answer.
_BODY_HEADERS = frozenset(
    {
        "content-type", "content-length", "content-encoding", "content-disposition",
        "content-language", "content-range", "etag", "last-modified",
    }
)


def _database_unavailable(api: bool, message: str, admin_page: str) -> HttpResponse:
    """A 503 with ``Retry-After``: the envelope under ``/api/``, an HTML page elsewhere."""
    if api:
        response = error_json_response(503, message)
    else:
        response = HttpResponse(admin_page, status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


class ApiErrorMiddleware:
    """Refuse oversized bodies early and turn Django's HTML errors into the envelope."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not _is_api(request):
            return self.get_response(request)
        refused = self._check_transfer_coding(request) or self._check_body_size(request)
        if refused is not None:
            return refused
        response = self.get_response(request)
        return self._envelope(request, response)

    @staticmethod
    def _check_transfer_coding(request):
        """Refuse a body with a transfer coding other than chunked (501, as gunicorn answers).

        Read as it is, a ``gzip, chunked`` body is garbage; read as if plain,
        a lie: either way not what the client sent.
        """
        header = request.META.get("HTTP_TRANSFER_ENCODING", "")
        codings = {coding.strip().lower() for coding in header.split(",") if coding.strip()}
        if codings <= TRANSFER_CODINGS:
            return None
        _drain(request, DRAIN_MAX_BYTES)
        return error_json_response(
            501,
            f"Unsupported Transfer-Encoding {quoted(header)!r}: send the body chunked or with "
            "a Content-Length, uncompressed",
        )

    def _check_body_size(self, request):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = request.META.get("CONTENT_LENGTH") or ""
        if not raw and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self._buffer_chunked_body(request, limit)
        try:
            length = int(raw or "0")
        except ValueError:
            return error_json_response(400, "Content-Length header is not an integer")
        if length < 0:
            return error_json_response(400, "Content-Length header is negative")
        if length > limit:
            _drain(request, min(length, DRAIN_MAX_BYTES))
            return self._too_large(limit, length)
        return None

    def _buffer_chunked_body(self, request, limit):
        """Read a chunked body (no Content-Length) up to the limit and hand it on as a sized one.

        Django reads only ``Content-Length`` bytes, so without this a chunked
        body would be silently ignored, however large.
        """
        try:
            body = request.environ["wsgi.input"].read(limit + 1)
        except Exception as exc:  # the server's chunk parser refused what the client sent
            logger.info("Malformed chunked request body: %r", exc)
            return error_json_response(400, "Malformed chunked request body")
        if len(body) > limit:
            _drain(request, DRAIN_MAX_BYTES - len(body))
            return self._too_large(limit, None)
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(body), len(body))
        return None

    @staticmethod
    def _too_large(limit, length):
        details = {"maxBytes": limit}
        if length is not None:
            details["contentLength"] = length
        return error_json_response(413, "Request body is larger than 1 MB", details)

    def _envelope(self, request, response):
        if response.status_code < 400 or response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return response
        if response.status_code == 404:
            replaced = error_json_response(404, f"No route matches {request.method} {request.path}")
        elif response.status_code == 405:
            replaced = error_json_response(405, f"Method {request.method} is not allowed here")
        else:
            message = getattr(response, "reason_phrase", "") or "Request failed"
            details = {}
            if response.status_code == 429 and response.get("Retry-After", "").isdigit():
                details["retryAfterSeconds"] = int(response["Retry-After"])
            replaced = error_json_response(response.status_code, message, details)
        # The answer's other headers stand: Allow, Retry-After, WWW-Authenticate,
        # Vary, the security headers. Those that describe the replaced body go.
        for name, value in response.items():
            if name.lower() not in _BODY_HEADERS:
                replaced[name] = value
        for cookie in response.cookies.values():
            replaced.cookies[cookie.key] = cookie
        return replaced

    def process_exception(self, request, exception):
        api = _is_api(request)
        if lacks_migrations(exception):
            logger.warning("Database not migrated: %s", exception)
            return _database_unavailable(api, DATABASE_NOT_MIGRATED, ADMIN_DATABASE_NOT_MIGRATED)
        if isinstance(exception, (OperationalError, InterfaceError)):
            # Everywhere, the admin too: a database that is locked (past the
            # lock timeout) or unreachable is a 503 to retry, not a 500.
            logger.warning("Database unavailable: %s", exception)
            return _database_unavailable(api, DATABASE_UNAVAILABLE, ADMIN_DATABASE_UNAVAILABLE)
        if not api:
            return None
        logger.exception("Unhandled error on %s %s", request.method, request.path)
        return error_json_response(500, "Internal server error")
