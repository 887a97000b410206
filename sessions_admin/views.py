"""HTTP views under ``/api/messaging``. Thin: parse, call a selector or service, render."""

import logging

from django.db import DatabaseError
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_admin import policy, selectors
from sessions_admin.auth import IsSessionsAdmin
from sessions_admin.errors import DATABASE_UNAVAILABLE, error_body
from sessions_admin.serializers import (
    HealthSerializer,
    SessionInfoSerializer,
    SessionListQuerySerializer,
    SessionListSerializer,
)

logger = logging.getLogger(__name__)


class SessionCollectionView(APIView):
    """``/sessions``: list (admin)."""

    def get_permissions(self):
        if self.request.method == "GET":
            return [IsSessionsAdmin()]
        return super().get_permissions()

    @extend_schema(
        operation_id="listSessions",
        summary="List sessions (admin endpoint)",
        parameters=[SessionListQuerySerializer],
        responses={200: SessionListSerializer},
        tags=["sessions"],
    )
    def get(self, request):
        now = policy.clock()
        query = SessionListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        ordering = selectors.Ordering(query.validated_data["ordering"])
        cursor = None
        if "cursor" in query.validated_data:
            cursor = selectors.Cursor.decode(query.validated_data["cursor"], ordering=ordering)
        page = selectors.session_list(
            now=now,
            filters=query.filters(),
            ordering=ordering,
            limit=query.validated_data["limit"],
            cursor=cursor,
        )
        sessions = SessionInfoSerializer(page.sessions, many=True, context={"now": now}).data
        return Response(
            {
                "sessions": sessions,
                "total": page.total,
                "stats": page.stats,
                "limit": query.validated_data["limit"],
                "nextCursor": page.next_cursor,
            }
        )


class HealthView(APIView):
    """``/sessions/health``: counts from one aggregate query; 503 when the database is down."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="checkSessionsHealth",
        summary="Health of the sessions service",
        responses={200: HealthSerializer, 503: HealthSerializer},
        auth=[],
        tags=["sessions"],
    )
    def get(self, request):
        now = policy.clock()
        timestamp = policy.format_datetime(now)
        try:
            counts = selectors.session_stats(now=now)
        except DatabaseError as exc:
            logger.warning("Health check: database unreachable: %s", exc)
            # The envelope lets API clients surface this as an error with a code.
            body = error_body("SERVICE_UNAVAILABLE", DATABASE_UNAVAILABLE)
            body["error"]["timestamp"] = timestamp
            body.update({"status": "unhealthy", "database": "unreachable", "timestamp": timestamp})
            return Response(body, status=503)
        return Response(
            {
                "status": "healthy",
                "activeSessions": counts["active"],
                "expiringSoon": counts["near_expiration"],
                "timestamp": timestamp,
                "database": "ok",
            }
        )
