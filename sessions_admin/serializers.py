"""API representations. Field names follow the elizaOS Sessions API (camelCase)."""

from datetime import datetime

from rest_framework import serializers

from sessions_admin import policy
from sessions_admin.models import Session
from sessions_admin.selectors import (
    DEFAULT_ORDERING,
    ORDERING_CHOICES,
    STATUS_CHOICES,
    SessionFilters,
)


def session_info(session: Session, *, now: datetime) -> dict:
    """Return the SessionInfo dict for ``session`` as seen at ``now`` (no queries)."""
    config = session.timeout_config
    remaining = policy.time_remaining_ms(session.expires_at, now=now)
    return {
        "sessionId": str(session.session_id),
        "agentId": str(session.agent_id),
        "userId": str(session.user_id),
        "createdAt": policy.format_datetime(session.created_at),
        "lastActivity": policy.format_datetime(session.last_activity),
        "metadata": session.metadata,
        "expiresAt": policy.format_datetime(session.expires_at),
        "timeoutConfig": {
            "timeoutMinutes": config.timeout_minutes,
            "autoRenew": config.auto_renew,
            "maxDurationMinutes": config.max_duration_minutes,
            "warningThresholdMinutes": config.warning_threshold_minutes,
        },
        "renewalCount": session.renewal_count,
        "timeRemaining": remaining,
        "isNearExpiration": 0 < remaining <= config.warning_threshold_minutes * 60_000,
    }


class TimeoutConfigSerializer(serializers.Serializer):
    """Current timeout configuration (schema of ``SessionInfo.timeoutConfig``)."""

    timeoutMinutes = serializers.IntegerField(help_text="Inactivity timeout in minutes")
    autoRenew = serializers.BooleanField(help_text="Whether auto-renewal is enabled")
    maxDurationMinutes = serializers.IntegerField(help_text="Maximum total session duration")
    warningThresholdMinutes = serializers.IntegerField(
        help_text="Minutes before expiration to trigger warning"
    )


class SessionInfoSerializer(serializers.Serializer):
    """Complete session information with status and timeout details.

    Needs ``now`` in its context: every derived field uses that one instant.
    """

    sessionId = serializers.CharField(help_text="Unique session identifier")
    agentId = serializers.UUIDField(help_text="UUID of the agent")
    userId = serializers.UUIDField(help_text="UUID of the user")
    createdAt = serializers.DateTimeField(help_text="Session creation timestamp")
    lastActivity = serializers.DateTimeField(help_text="Last activity timestamp")
    metadata = serializers.DictField(help_text="Session metadata")
    expiresAt = serializers.DateTimeField(help_text="When the session will expire")
    timeoutConfig = TimeoutConfigSerializer(help_text="Current timeout configuration")
    renewalCount = serializers.IntegerField(
        help_text="Number of times the session has been renewed"
    )
    timeRemaining = serializers.IntegerField(help_text="Milliseconds until session expiration")
    isNearExpiration = serializers.BooleanField(
        help_text="Whether the session is within the warning threshold"
    )

    def to_representation(self, instance):
        return session_info(instance, now=self.context["now"])


class SessionStatsSerializer(serializers.Serializer):
    totalSessions = serializers.IntegerField()
    activeSessions = serializers.IntegerField()
    expiredSessions = serializers.IntegerField()


class SessionListSerializer(serializers.Serializer):
    """The list response: the seed's shape plus ``limit`` and ``nextCursor``."""

    sessions = SessionInfoSerializer(many=True)
    total = serializers.IntegerField(help_text="Total number of active sessions")
    stats = SessionStatsSerializer()
    limit = serializers.IntegerField(help_text="Page size used for this response")
    nextCursor = serializers.CharField(
        allow_null=True, help_text="Cursor of the next page, or null on the last page"
    )


class StrictBooleanField(serializers.ChoiceField):
    """A query-string boolean: exactly ``true`` or ``false``."""

    def __init__(self, **kwargs):
        super().__init__(choices=["true", "false"], **kwargs)

    def to_internal_value(self, data):
        return super().to_internal_value(data) == "true"


class QueryIntegerField(serializers.IntegerField):
    """A query-string integer written with digits only (no sign, blanks, fraction or exponent)."""

    def to_internal_value(self, data):
        if not (isinstance(data, str) and data.isascii() and data.isdigit()):
            self.fail("invalid")
        return super().to_internal_value(data)


class SessionListQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /sessions``; anything unknown, blank or repeated is rejected."""

    limit = QueryIntegerField(min_value=1, max_value=1000, default=100)
    cursor = serializers.CharField(required=False, max_length=2000, trim_whitespace=False)
    agentId = serializers.UUIDField(required=False)
    userId = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=STATUS_CHOICES, default="active")
    nearExpiration = StrictBooleanField(required=False)
    autoRenew = StrictBooleanField(required=False)
    ordering = serializers.ChoiceField(choices=ORDERING_CHOICES, default=DEFAULT_ORDERING)

    def to_internal_value(self, data):
        problems = {name: ["Unknown query parameter"] for name in data if name not in self.fields}
        if hasattr(data, "lists"):
            problems |= {
                name: ["Give this query parameter once"]
                for name, values in data.lists()
                if len(values) > 1 and name in self.fields
            }
            # A plain dict, so that DRF validates blank values instead of
            # treating them as absent (its rule for HTML form input).
            data = data.dict()
        try:
            attrs = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({**exc.detail, **problems}) from None
        if problems:
            raise serializers.ValidationError(problems)
        return attrs

    def filters(self) -> SessionFilters:
        data = self.validated_data
        return SessionFilters(
            agent_id=data.get("agentId"),
            user_id=data.get("userId"),
            status=data["status"],
            near_expiration=data.get("nearExpiration"),
            auto_renew=data.get("autoRenew"),
        )


class HealthSerializer(serializers.Serializer):
    """``GET /sessions/health``. When unhealthy (503) the error envelope fields are added."""

    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    activeSessions = serializers.IntegerField(
        required=False, help_text="Active sessions (absent when unhealthy)"
    )
    expiringSoon = serializers.IntegerField(
        required=False, help_text="Active sessions within their warning threshold"
    )
    timestamp = serializers.CharField(help_text="When the check ran (ISO 8601, UTC)")
    database = serializers.ChoiceField(choices=["ok", "unreachable"])
