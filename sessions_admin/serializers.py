"""API representations. Field names follow the elizaOS Sessions API (camelCase).

Input serializers reject, never clamp: every field has one JSON type (numeric
strings such as ``"60"`` are also accepted for integers), unknown fields are
errors, and each error message names the field by its path
(``timeoutConfig.timeoutMinutes``).
"""

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from rest_framework import serializers
from rest_framework.settings import api_settings

from sessions_admin import policy
from sessions_admin.errors import quoted
from sessions_admin.models import Session
from sessions_admin.selectors import (
    DEFAULT_ORDERING,
    ORDERING_CHOICES,
    STATUS_CHOICES,
    SessionFilters,
    SessionPage,
    SessionRow,
)


def session_info(session: Session | SessionRow, *, now: datetime) -> dict:
    """Return the SessionInfo dict for ``session`` as seen at ``now`` (no queries).

    ``session`` is a model instance or a listed ``SessionRow``: both have the
    same attribute names, ``timeout_config`` included.
    """
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


def session_list_info(page: SessionPage, *, limit: int, now: datetime) -> dict:
    """Return the list endpoint's answer for ``page`` as seen at ``now``."""
    return {
        "sessions": [session_info(session, now=now) for session in page.sessions],
        "total": page.total,
        "stats": page.stats,
        "limit": limit,
        "nextCursor": page.next_cursor,
    }


class TimeoutConfigSerializer(serializers.Serializer):
    """Current timeout configuration"""

    timeoutMinutes = serializers.IntegerField(help_text="Inactivity timeout in minutes")
    autoRenew = serializers.BooleanField(help_text="Whether auto-renewal is enabled")
    maxDurationMinutes = serializers.IntegerField(help_text="Maximum total session duration")
    warningThresholdMinutes = serializers.IntegerField(
        help_text="Minutes before expiration to trigger warning"
    )


class SessionInfoSerializer(serializers.Serializer):
    """Complete session information with status and timeout details"""

    # Needs ``now`` in its context: every derived field uses that one instant.

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
    """One page of sessions: the seed's shape plus limit and nextCursor"""

    sessions = SessionInfoSerializer(many=True)
    total = serializers.IntegerField(help_text="Total number of active sessions")
    stats = SessionStatsSerializer()
    limit = serializers.IntegerField(help_text="Page size used for this response")
    nextCursor = serializers.CharField(
        allow_null=True, help_text="Cursor of the next page, or null on the last page"
    )


class HealthSerializer(serializers.Serializer):
    """Health of the sessions service and its database"""

    status = serializers.ChoiceField(choices=["healthy", "unhealthy"])
    activeSessions = serializers.IntegerField(
        required=False, help_text="Active sessions (absent when unhealthy)"
    )
    expiringSoon = serializers.IntegerField(
        required=False, help_text="Active sessions within their warning threshold"
    )
    timestamp = serializers.DateTimeField(help_text="When the check ran (UTC)")
    database = serializers.ChoiceField(choices=["ok", "unreachable", "not migrated"])


# -- input --------------------------------------------------------------------

UUID_PATTERN = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_INTEGER_STRING = re.compile(r"-?[0-9]{1,15}")
# An escaped NUL inside a JSON string: an odd run of backslashes, then u0000.
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
METADATA_MAX_DEPTH = 32


def field_path(field: serializers.Field) -> str:
    """Return the dotted path of ``field`` from the root serializer, e.g. ``timeoutConfig.autoRenew``."""
    names = []
    node = field
    while node is not None and node.field_name:
        names.append(node.field_name)
        node = node.parent
    return ".".join(reversed(names)) or "body"


# Unknown names an error lists; the others are counted. Listing them all made
# a 1 MB body of 107,000 unknown keys cost 2 s and answer 3.5 MB.
UNKNOWN_NAMES_SHOWN = 5


def unknown_name_errors(
    names: list[str], *, noun: str, where: str, prefix: str = ""
) -> dict[str, list[str]]:
    """Errors naming the first few unknown ``names``, cut short; under ``where``, the count."""
    errors = {}
    for name in names[:UNKNOWN_NAMES_SHOWN]:
        shown = quoted(name)
        errors[shown] = [f"Unknown {noun} '{prefix}{shown}'"]
    if len(names) > UNKNOWN_NAMES_SHOWN:
        errors[where] = [f"{len(names) - UNKNOWN_NAMES_SHOWN:,} more unknown {noun}s"]
    return errors


class NamedErrorsMixin:
    """Let error messages say ``{field}``: the field's dotted path."""

    def fail(self, key, **kwargs):
        return super().fail(key, field=field_path(self), **kwargs)


class SessionUUIDField(NamedErrorsMixin, serializers.UUIDField):
    """A UUID in its canonical 36-character text form, given as a JSON string."""

    default_error_messages = {
        "required": "Field '{field}' is required",
        "null": "Field '{field}' must be a string",
        "not_a_string": "Field '{field}' must be a string",
        "invalid": "Invalid UUID format for field '{field}'",
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        if not UUID_PATTERN.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


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


CURSOR_MAX_LENGTH = 512


class SessionListQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /sessions``; anything unknown, blank or repeated is rejected."""

    limit = QueryIntegerField(min_value=1, max_value=1000, default=100)
    # What signing.dumps writes (URL-safe base64 and ':'), about 150 characters;
    # anything else could never decode, and a longer one could overflow the
    # server's 4,094-byte request line before the API could answer it.
    cursor = serializers.CharField(
        required=False,
        max_length=CURSOR_MAX_LENGTH,
        trim_whitespace=False,
        validators=[
            RegexValidator(
                r"\A[A-Za-z0-9_:-]+\Z",
                message="Invalid cursor; use the nextCursor of a previous page",
            )
        ],
    )
    # The same canonical form create takes: an id the API would refuse at creation never filters.
    agentId = SessionUUIDField(required=False)
    userId = SessionUUIDField(required=False)
    status = serializers.ChoiceField(choices=STATUS_CHOICES, default="active")
    nearExpiration = StrictBooleanField(required=False)
    autoRenew = StrictBooleanField(required=False)
    ordering = serializers.ChoiceField(choices=ORDERING_CHOICES, default=DEFAULT_ORDERING)

    def to_internal_value(self, data):
        unknown = [name for name in data if name not in self.fields]
        problems = unknown_name_errors(unknown, noun="query parameter", where="query")
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


class WholeMinutesField(NamedErrorsMixin, serializers.IntegerField):
    """Whole minutes: a JSON integer or a numeric string such as ``"60"``; never a fraction.

    Only the type is checked here. ``min_value``/``max_value`` document the
    bounds in the schema; the ranges, including the rules between fields, are
    ``policy.timeout_violations`` on the whole configuration.
    """

    default_error_messages = {
        "null": "Field '{field}' must be a whole number of minutes",
        "invalid": "Field '{field}' must be a whole number of minutes",
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, (MinValueValidator, MaxValueValidator))
        ]

    def to_internal_value(self, data):
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int):
            return data
        if isinstance(data, float) and math.isfinite(data) and data.is_integer():
            return int(data)  # 60.0 is the same JSON number as 60
        if isinstance(data, str) and _INTEGER_STRING.fullmatch(data):
            return int(data)
        self.fail("invalid")


class JSONBooleanField(NamedErrorsMixin, serializers.BooleanField):
    """``true`` or ``false`` as JSON booleans; not ``"true"``, ``1`` or ``null``."""

    default_error_messages = {
        "null": "Field '{field}' must be a JSON boolean (true or false)",
        "invalid": "Field '{field}' must be a JSON boolean (true or false)",
    }

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class MetadataField(NamedErrorsMixin, serializers.DictField):
    """A JSON object of at most ``SESSIONS_METADATA_MAX_BYTES`` UTF-8 bytes, serialized.

    Numbers count as written out in full, because that is how PostgreSQL's
    ``jsonb`` stores and returns them: ``1e308`` comes back as 309 digits.
    Counting them as sent would let a 10 KB body become 450 KB on every read.
    """

    default_error_messages = {
        "null": "Field '{field}' must be a JSON object",
        "not_a_dict": "Field '{field}' must be a JSON object",
        "too_deep": "Field '{field}' is nested more than {depth} levels deep",
        "nul": "Field '{field}' must not contain NUL characters (\\u0000)",
        "unicode": "Field '{field}' contains text that is not valid Unicode (a lone surrogate)",
        "not_finite": "Field '{field}' must not contain numbers outside the finite range",
        "too_large": "Field '{field}' is {size} bytes serialized; the limit is {limit} bytes",
    }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_a_dict")
        if _depth(data) > METADATA_MAX_DEPTH:
            self.fail("too_deep", depth=METADATA_MAX_DEPTH)
        try:
            serialized = json.dumps(
                data, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
            size = len(serialized.encode("utf-8")) + _exponent_expansion(data)
        except UnicodeEncodeError:
            self.fail("unicode")
        except ValueError:  # 1e999 parses as infinity
            self.fail("not_finite")
        # PostgreSQL's jsonb refuses \u0000; refuse it on every backend alike.
        if _ESCAPED_NUL.search(serialized):
            self.fail("nul")
        limit = settings.SESSIONS_METADATA_MAX_BYTES
        if size > limit:
            self.fail("too_large", size=size, limit=limit)
        return data


def _exponent_expansion(value) -> int:
    """Characters that the floats in ``value`` gain when written without an exponent."""
    gained = 0
    for node, _ in _json_nodes(value):
        if isinstance(node, float):
            text = repr(node)  # as json.dumps writes it: 1e+308, 1.5e-07, 0.25
            if "e" in text:
                gained += len(format(Decimal(text), "f")) - len(text)
    return gained


def _depth(value) -> int:
    """Nesting depth of a JSON value, without recursion (``{}`` is 1, a scalar 0)."""
    deepest = 0
    for node, depth in _json_nodes(value):
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > METADATA_MAX_DEPTH:
                break
    return deepest


def _json_nodes(value):
    """Yield every value inside a JSON value with its depth (the value itself at 1), iteratively."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)


class StrictObjectSerializer(serializers.Serializer):
    """A JSON object whose keys must all be fields of the serializer."""

    default_error_messages = {
        "invalid": "{where} must be a JSON object",
        "required": "Field '{field}' is required",
    }

    def _where(self) -> str:
        return f"Field '{field_path(self)}'" if self.field_name else "Request body"

    def fail(self, key, **kwargs):
        return super().fail(key, where=self._where(), field=field_path(self), **kwargs)

    def _not_an_object(self):
        message = self.error_messages["invalid"].format(where=self._where())
        return serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [message]})

    def validate_empty_values(self, data):
        if data is None:  # JSON null, as a body or as a field
            raise self._not_an_object()
        return super().validate_empty_values(data)

    def to_internal_value(self, data):
        if not isinstance(data, Mapping):
            raise self._not_an_object()
        errors = unknown_name_errors(
            [name for name in data if name not in self.fields],
            noun="field",
            where=api_settings.NON_FIELD_ERRORS_KEY,  # reported as the object's own path
            prefix=f"{field_path(self)}." if self.field_name else "",
        )
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            errors = {**exc.detail, **errors}
        if errors:
            raise serializers.ValidationError(errors)
        return value



def _minutes_field(help_text: str, *, low: int, high: int) -> WholeMinutesField:
    return WholeMinutesField(required=False, min_value=low, max_value=high, help_text=help_text)


_LIMITS = settings.SESSIONS_TIMEOUTS

TIMEOUT_FIELDS = {
    "timeoutMinutes": "timeout_minutes",
    "autoRenew": "auto_renew",
    "maxDurationMinutes": "max_duration_minutes",
    "warningThresholdMinutes": "warning_threshold_minutes",
}


class TimeoutConfigInputSerializer(StrictObjectSerializer):
    """Any subset of a timeout configuration"""

    timeoutMinutes = _minutes_field(
        "Inactivity timeout in minutes",
        low=_LIMITS["MIN_TIMEOUT_MINUTES"],
        high=_LIMITS["MAX_TIMEOUT_MINUTES"],
    )
    autoRenew = JSONBooleanField(required=False, help_text="Whether activity extends the session")
    maxDurationMinutes = _minutes_field(
        "Maximum total session duration in minutes (at least timeoutMinutes)",
        low=_LIMITS["MIN_TIMEOUT_MINUTES"],
        high=_LIMITS["MAX_DURATION_CEILING_MINUTES"],
    )
    warningThresholdMinutes = _minutes_field(
        "Minutes before expiration when isNearExpiration turns true (at most timeoutMinutes)",
        low=1,
        high=_LIMITS["MAX_TIMEOUT_MINUTES"],
    )


def timeout_changes(data: dict) -> dict:
    """The given TimeoutConfig fields under ``policy.Timeout`` names."""
    return {TIMEOUT_FIELDS[name]: value for name, value in data.items()}


def _timeout_errors(timeout: policy.Timeout, given: dict, *, prefix: str = "") -> dict:
    """Map ``policy.timeout_violations`` to serializer errors, saying when a default was involved."""
    errors = {}
    for api_name, message in policy.timeout_violations(timeout):
        if api_name not in given:
            value = getattr(timeout, TIMEOUT_FIELDS[api_name])
            message += f" (not given, so the default {value} applies)"
        errors[api_name] = [f"Invalid value for field '{prefix}{api_name}': {message}"]
    return errors


class SessionCreateSerializer(StrictObjectSerializer):
    """A new session: the agent and user it joins, optional metadata and timeout configuration"""

    agentId = SessionUUIDField(help_text="UUID of the agent")
    userId = SessionUUIDField(help_text="UUID of the user")
    metadata = MetadataField(
        required=False,
        help_text=f"Session metadata: a JSON object of at most {settings.SESSIONS_METADATA_MAX_BYTES} "
        "bytes serialized (UTF-8), numbers counted as written out in full (1e3 as 1000)",
    )
    timeoutConfig = TimeoutConfigInputSerializer(
        required=False, help_text="Timeout configuration; fields left out take the server defaults"
    )

    def validate(self, attrs):
        given = attrs.get("timeoutConfig", {})
        timeout = policy.default_timeout().with_changes(**timeout_changes(given))
        errors = _timeout_errors(timeout, given, prefix="timeoutConfig.")
        if errors:
            raise serializers.ValidationError({"timeoutConfig": errors})
        attrs["timeout"] = timeout
        return attrs


class TimeoutPatchSerializer(TimeoutConfigInputSerializer):
    """At least one timeout field; the fields left out keep their current values"""

    # The ranges depend on the session's current configuration, so the service
    # checks them (policy.timeout_violations) once it holds the row lock.

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError(
                "Request body must set at least one of: " + ", ".join(TIMEOUT_FIELDS)
            )
        return attrs


# -- output -------------------------------------------------------------------


class DeletedSessionDataSerializer(serializers.Serializer):
    sessionId = serializers.UUIDField(help_text="The deleted session's id")


class SessionDeletedSerializer(serializers.Serializer):
    """Confirmation of a deleted session"""

    success = serializers.BooleanField(help_text="Always true")
    message = serializers.CharField(help_text='"Session <id> deleted successfully"')
    data = DeletedSessionDataSerializer()


ERROR_CODES = [
    "VALIDATION_ERROR",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "SESSION_NOT_FOUND",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "NOT_ACCEPTABLE",
    "REQUEST_TIMEOUT",
    "SESSION_EXPIRED",
    "PAYLOAD_TOO_LARGE",
    "URI_TOO_LONG",
    "UNSUPPORTED_MEDIA_TYPE",
    "EXPECTATION_FAILED",
    "SESSION_RENEWAL_FAILED",
    "RATE_LIMITED",
    "HEADER_FIELDS_TOO_LARGE",
    "INTERNAL_ERROR",
    "NOT_IMPLEMENTED",
    "SERVICE_UNAVAILABLE",
]


class ErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ERROR_CODES, help_text="Machine-readable error code")
    message = serializers.CharField(help_text="Human-readable message; names the field at fault")
    details = serializers.DictField(
        help_text="Context: per-field messages under 'fields', 'expiresAt' for an expired session, ..."
    )
    timestamp = serializers.DateTimeField(help_text="When the error occurred (UTC)")


class ErrorResponseSerializer(serializers.Serializer):
    """The error envelope that every error under /api/ uses"""

    success = serializers.BooleanField(help_text="Always false")
    error = ErrorSerializer()


class UnhealthySerializer(HealthSerializer):
    """Health when the database is down: the health fields and the error envelope"""

    success = serializers.BooleanField(help_text="Always false")
    error = ErrorSerializer()
