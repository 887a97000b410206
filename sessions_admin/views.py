"""HTTP views under ``/api/messaging``. Thin: parse, call a selector or service, render.

Path ids that are not UUIDs answer 404 ``SESSION_NOT_FOUND``: no session has
such an id, and the answer does not depend on how the id is malformed.
"""

import logging
from uuid import UUID

from django.db import DatabaseError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_admin import health, policy, selectors, services
from sessions_admin.auth import StaffModelPermissions
from sessions_admin.errors import DATABASE_UNAVAILABLE, error_body
from sessions_admin.exceptions import SessionNotFound
from sessions_admin.migration_state import DATABASE_NOT_MIGRATED, DatabaseNotMigrated
from sessions_admin.models import Session
from sessions_admin.parsers import JSONContentNegotiation, StrictJSONParser
from sessions_admin.serializers import (
    UUID_PATTERN,
    ErrorResponseSerializer,
    HealthSerializer,
    SessionCreateSerializer,
    SessionDeletedSerializer,
    SessionInfoSerializer,
    SessionListQuerySerializer,
    SessionListSerializer,
    TimeoutPatchSerializer,
    UnhealthySerializer,
    session_info,
    session_list_info,
    timeout_changes,
)
from sessions_admin.throttling import ThrottleBeforePermissions

logger = logging.getLogger(__name__)

TAGS = ["sessions"]


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


def _client_route(permission: str) -> str:
    return (
        f" Client route: the client key (open to anyone when SESSIONS_OPEN_CLIENT_ROUTES is on),"
        f" the admin key, or a staff user holding sessions_admin.{permission}."
    )


BAD_REQUEST = _error("VALIDATION_ERROR: invalid field, unknown field or malformed JSON")
UNAUTHORIZED = _error("UNAUTHORIZED: X-API-KEY missing or wrong (when SESSIONS_API_KEY is set)")
FORBIDDEN = _error(
    "FORBIDDEN: authenticated, but not allowed (a staff user without the permission the "
    "operation needs, a user who is not staff, the client key on the admin list)"
)
NOT_FOUND = _error("SESSION_NOT_FOUND: no session has this id")
EXPIRED = _error("SESSION_EXPIRED: the session has expired (details.expiresAt)")
TOO_LARGE = _error("PAYLOAD_TOO_LARGE: request body over 1 MB")
UNSUPPORTED = _error("UNSUPPORTED_MEDIA_TYPE: the body is not application/json (UTF-8)")
NOT_IMPLEMENTED = _error(
    "NOT_IMPLEMENTED: a Transfer-Encoding other than chunked (gzip, deflate, compress)"
)
RATE_LIMITED = _error("RATE_LIMITED: too many requests; see Retry-After")
UNAVAILABLE = _error("SERVICE_UNAVAILABLE: the database cannot be reached")

COMMON_ERRORS = {401: UNAUTHORIZED, 403: FORBIDDEN, 429: RATE_LIMITED, 503: UNAVAILABLE}
BODY_ERRORS = {400: BAD_REQUEST, 413: TOO_LARGE, 415: UNSUPPORTED, 501: NOT_IMPLEMENTED}

SESSION_ID = OpenApiParameter(
    "sessionId",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="Session id. An id that is not a UUID answers 404 SESSION_NOT_FOUND.",
)


SESSION_INFO = OpenApiResponse(SessionInfoSerializer, description="The session as seen now")
# What every operation on one session may answer, besides its own errors.
ON_ONE_SESSION = {200: SESSION_INFO, 404: NOT_FOUND, 410: EXPIRED}


def _session_id(raw: str) -> UUID:
    if not UUID_PATTERN.fullmatch(raw):
        raise SessionNotFound(raw[:100])
    return UUID(raw)


class ApiView(ThrottleBeforePermissions, APIView):
    """Base of the API's views: strict UTF-8 JSON in, JSON out whatever ``Accept`` says.

    Callers refused for their credentials count against the rate limit too.
    """

    parser_classes = [StrictJSONParser]
    content_negotiation_class = JSONContentNegotiation


class SessionView(ApiView):
    """A view on sessions: staff users need the ``Session`` permission of its operation."""

    permission_model = Session


class SessionCollectionView(SessionView):
    """``/sessions``: list (admin) and create."""

    def get_permissions(self):
        # HEAD runs the list too (DRF answers it with the GET handler).
        if self.request.method in ("GET", "HEAD"):
            return [StaffModelPermissions()]
        return super().get_permissions()

    @extend_schema(
        operation_id="listSessions",
        summary="List sessions (admin endpoint)",
        description=(
            "One page of sessions with the counts. Needs the admin API key or a staff user "
            "holding sessions_admin.view_session (never open to anonymous callers, unlike the "
            "original seed)."
        ),
        parameters=[SessionListQuerySerializer],
        responses={
            200: OpenApiResponse(
                SessionListSerializer, description="Sessions list retrieved successfully"
            ),
            400: BAD_REQUEST,
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def get(self, request):
        query = SessionListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        ordering = selectors.Ordering(query.validated_data["ordering"])
        cursor = None
        if "cursor" in query.validated_data:
            cursor = selectors.Cursor.decode(query.validated_data["cursor"], ordering=ordering)
        # Read once the request is known to be valid: a refusal's envelope reads it instead.
        now = policy.clock()
        page = selectors.session_list(
            now=now,
            filters=query.filters(),
            ordering=ordering,
            limit=query.validated_data["limit"],
            cursor=cursor,
        )
        return Response(session_list_info(page, limit=query.validated_data["limit"], now=now))

    @extend_schema(
        operation_id="createSession",
        summary="Create a session",
        description=(
            "Starts a session now: expiresAt = min(now + timeoutMinutes, now + maxDurationMinutes). "
            "Invalid values are rejected, never clamped; unknown fields are rejected."
            + _client_route("add_session")
        ),
        request=SessionCreateSerializer,
        responses={
            201: OpenApiResponse(SessionInfoSerializer, description="Session created"),
            **BODY_ERRORS,
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def post(self, request):
        body = SessionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        now = policy.clock()
        session = services.session_create(
            agent_id=body.validated_data["agentId"],
            user_id=body.validated_data["userId"],
            metadata=body.validated_data.get("metadata", {}),
            timeout=body.validated_data["timeout"],
            now=now,
        )
        return Response(
            session_info(session, now=now),
            status=201,
            headers={"Location": f"{request.path}/{session.session_id}"},
        )


class SessionDetailView(SessionView):
    """``/sessions/{sessionId}``: read and delete."""

    @extend_schema(
        operation_id="getSession",
        summary="Get a session",
        description=(
            "No side effects. An expired session answers 410 until it is pruned."
            + _client_route("view_session")
        ),
        parameters=[SESSION_ID],
        responses={**ON_ONE_SESSION, **COMMON_ERRORS},
        tags=TAGS,
    )
    def get(self, request, sessionId):
        session_id = _session_id(sessionId)
        now = policy.clock()
        session = selectors.session_get(session_id=session_id, now=now)
        return Response(session_info(session, now=now))

    @extend_schema(
        operation_id="deleteSession",
        summary="Delete a session",
        description=(
            "Works on expired (not yet pruned) sessions too." + _client_route("delete_session")
        ),
        parameters=[SESSION_ID],
        responses={
            200: OpenApiResponse(SessionDeletedSerializer, description="Session deleted"),
            404: NOT_FOUND,
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def delete(self, request, sessionId):
        session_uuid = _session_id(sessionId)
        services.session_delete(session_id=session_uuid)
        return Response(
            {
                "success": True,
                "message": f"Session {session_uuid} deleted successfully",
                "data": {"sessionId": str(session_uuid)},
            }
        )


class SessionHeartbeatView(SessionView):
    """``/sessions/{sessionId}/heartbeat``."""

    permission_actions = {"POST": "change"}

    @extend_schema(
        operation_id="sendSessionHeartbeat",
        summary="Record activity on a session",
        description=(
            "lastActivity = now. With autoRenew, expiresAt moves to min(now + timeout, cap) when "
            "that is later, and renewalCount grows by one. Any request body is ignored."
            + _client_route("change_session")
        ),
        parameters=[SESSION_ID],
        request=None,
        responses={
            **ON_ONE_SESSION,
            413: TOO_LARGE,
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def post(self, request, sessionId):
        session, now = services.session_heartbeat(session_id=_session_id(sessionId))
        return Response(session_info(session, now=now))


class SessionRenewView(SessionView):
    """``/sessions/{sessionId}/renew``."""

    permission_actions = {"POST": "change"}

    @extend_schema(
        operation_id="renewSession",
        summary="Renew a session manually",
        description=(
            "As a heartbeat with auto-renew, whatever autoRenew says. 422 when the session "
            "cannot be extended because it reached its maximum duration. Any request body is "
            "ignored." + _client_route("change_session")
        ),
        parameters=[SESSION_ID],
        request=None,
        responses={
            **ON_ONE_SESSION,
            413: TOO_LARGE,
            422: _error("SESSION_RENEWAL_FAILED: the maximum session duration has been reached"),
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def post(self, request, sessionId):
        session, now = services.session_renew(session_id=_session_id(sessionId))
        return Response(session_info(session, now=now))


class SessionTimeoutView(SessionView):
    """``/sessions/{sessionId}/timeout``."""

    @extend_schema(
        operation_id="updateSessionTimeout",
        summary="Change a session's timeout configuration",
        description=(
            "Fields left out keep their current values. expiresAt = min(now + timeout, "
            "createdAt + maxDuration); renewalCount and lastActivity are unchanged."
            + _client_route("change_session")
        ),
        parameters=[SESSION_ID],
        request=TimeoutPatchSerializer,
        responses={
            **ON_ONE_SESSION,
            422: _error("SESSION_RENEWAL_FAILED: the new maximum duration already ended"),
            **BODY_ERRORS,
            **COMMON_ERRORS,
        },
        tags=TAGS,
    )
    def patch(self, request, sessionId):
        session_uuid = _session_id(sessionId)
        body = TimeoutPatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        session, now = services.session_update_timeout(
            session_id=session_uuid, changes=timeout_changes(body.validated_data)
        )
        return Response(session_info(session, now=now))


class HealthView(ApiView):
    """``/sessions/health``: counts from one aggregate query; 503 when the database is down."""

    authentication_classes = []
    permission_classes = [AllowAny]
    # Load balancers probe this; a probe must never be rate limited into "unhealthy".
    throttle_classes = []

    @extend_schema(
        operation_id="checkSessionsHealth",
        summary="Health of the sessions service",
        description="No authentication. 503 (with the error envelope) when the database is down.",
        responses={
            200: OpenApiResponse(HealthSerializer, description="Healthy: the database answered"),
            503: OpenApiResponse(
                UnhealthySerializer,
                description="Unhealthy: database unreachable, or not migrated",
            ),
        },
        auth=[],
        tags=TAGS,
    )
    def get(self, request):
        now = policy.clock()
        try:
            counts, counted_at = health.database_stats(now=now)
        except DatabaseNotMigrated:
            logger.warning("Health check: %s", DATABASE_NOT_MIGRATED)
            return self._unhealthy("not migrated", DATABASE_NOT_MIGRATED, now=now)
        except DatabaseError as exc:
            logger.warning("Health check: database unreachable: %s", exc)
            return self._unhealthy("unreachable", DATABASE_UNAVAILABLE, now=now)
        return Response(
            {
                "status": "healthy",
                "activeSessions": counts["active"],
                "expiringSoon": counts["near_expiration"],
                # The counts may be a reused answer: the instant they were taken at.
                "timestamp": policy.format_datetime(counted_at),
                "database": "ok",
            }
        )

    @staticmethod
    def _unhealthy(database: str, message: str, *, now) -> Response:
        # The envelope lets API clients surface this as an error with a code.
        body = error_body("SERVICE_UNAVAILABLE", message, at=now)
        body.update(
            {"status": "unhealthy", "database": database, "timestamp": body["error"]["timestamp"]}
        )
        return Response(body, status=503)
