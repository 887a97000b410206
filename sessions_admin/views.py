"""HTTP views under ``/api/messaging``. Thin: parse, call a selector or service, render."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from sessions_admin import policy, selectors
from sessions_admin.auth import IsSessionsAdmin
from sessions_admin.serializers import (
    SessionInfoSerializer,
    SessionListQuerySerializer,
    SessionListSerializer,
)


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
