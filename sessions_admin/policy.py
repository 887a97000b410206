"""Pure timing rules for sessions (SPEC §2).

Every function takes the instant ``now`` as an argument and touches no
database, so one clock reading can drive a whole request and the rules can be
tested exhaustively.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.utils import timezone

ONE_MS = timedelta(milliseconds=1)

STATUS_ACTIVE = "active"
STATUS_NEAR_EXPIRATION = "near_expiration"
STATUS_EXPIRED = "expired"


@dataclass(frozen=True)
class Timeout:
    """A session's timeout configuration, as plain values."""

    timeout_minutes: int
    auto_renew: bool
    max_duration_minutes: int
    warning_threshold_minutes: int

    def with_changes(self, **changes) -> "Timeout":
        """Return a copy with the given fields replaced."""
        return replace(self, **changes)


def default_timeout() -> Timeout:
    """Return the configured default timeout (``SESSION_*`` environment variables)."""
    limits = settings.SESSIONS_TIMEOUTS
    return Timeout(
        timeout_minutes=limits["DEFAULT_TIMEOUT_MINUTES"],
        auto_renew=True,
        max_duration_minutes=limits["MAX_DURATION_MINUTES"],
        warning_threshold_minutes=limits["WARNING_THRESHOLD_MINUTES"],
    )


def clock() -> datetime:
    """Read the clock: the one place requests and commands take ``now`` from.

    The reading is cut to whole milliseconds, the precision of every instant
    the API shows. Stored instants are ``now`` plus whole minutes, so they are
    exactly what is shown: a session still active always has a
    ``timeRemaining`` of at least 1 ms, and no active session shows the same
    ``expiresAt`` as an expired one.
    """
    now = timezone.now()
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def cap_for(created_at: datetime, timeout: Timeout) -> datetime:
    """Return the absolute end of a session's life: ``createdAt + maxDuration``."""
    return created_at + timedelta(minutes=timeout.max_duration_minutes)


def expiry_for(created_at: datetime, timeout: Timeout, *, now: datetime) -> datetime:
    """Return ``min(now + timeout, cap)``: the expiry a fresh activity would give."""
    return min(now + timedelta(minutes=timeout.timeout_minutes), cap_for(created_at, timeout))


def renewed_expiry(
    created_at: datetime, expires_at: datetime, timeout: Timeout, *, now: datetime
) -> datetime | None:
    """Return the later expiry a renewal at ``now`` gives, or ``None`` if it cannot extend."""
    candidate = expiry_for(created_at, timeout, now=now)
    return candidate if candidate > expires_at else None


def warning_starts_at(expires_at: datetime, warning_threshold_minutes: int) -> datetime:
    """Return the instant a session enters its warning window: ``expiresAt - threshold``.

    A session is near expiration at ``now`` when ``expiresAt >= now + 1 ms`` and this
    instant is before ``now + 1 ms`` (``is_near_expiration`` in whole milliseconds).
    """
    return expires_at - timedelta(minutes=warning_threshold_minutes)


def is_expired(expires_at: datetime, *, now: datetime) -> bool:
    """Expired once ``expires_at <= now``: the one boundary rule used everywhere."""
    return expires_at <= now


def time_remaining_ms(expires_at: datetime, *, now: datetime) -> int:
    """Return whole milliseconds until expiry, never negative."""
    if expires_at <= now:
        return 0
    return (expires_at - now) // ONE_MS


def is_near_expiration(expires_at: datetime, warning_threshold_minutes: int, *, now: datetime) -> bool:
    """True when ``0 < timeRemaining <= warning threshold`` (in whole milliseconds)."""
    remaining = time_remaining_ms(expires_at, now=now)
    return 0 < remaining <= warning_threshold_minutes * 60_000


def status_of(expires_at: datetime, warning_threshold_minutes: int, *, now: datetime) -> str:
    """Return ``active``, ``near_expiration`` or ``expired``."""
    if is_expired(expires_at, now=now):
        return STATUS_EXPIRED
    if is_near_expiration(expires_at, warning_threshold_minutes, now=now):
        return STATUS_NEAR_EXPIRATION
    return STATUS_ACTIVE


def format_datetime(value: datetime) -> str:
    """Format as ISO 8601 UTC with millisecond precision and a ``Z`` suffix."""
    # "2026-11-27T04:52:39.281+00:00" -> "2026-11-27T04:52:39.281Z"
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def humanize_ms(milliseconds: int) -> str:
    """Return a short human reading of a duration, such as ``4 min 12 s`` or ``2 h 5 min``."""
    if 0 < milliseconds < 1000:
        return "under 1 s"  # "0 s" would read as over
    seconds = max(0, milliseconds) // 1000
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def timeout_violations(timeout: Timeout) -> list[tuple[str, str]]:
    """Return ``(field, message)`` for every rule ``timeout`` breaks (empty when valid).

    Limits come from the ``SESSION_*`` settings; nothing is clamped.
    """
    limits = settings.SESSIONS_TIMEOUTS
    low, high = limits["MIN_TIMEOUT_MINUTES"], limits["MAX_TIMEOUT_MINUTES"]
    ceiling = limits["MAX_DURATION_CEILING_MINUTES"]
    problems = []
    if not low <= timeout.timeout_minutes <= high:
        problems.append(
            ("timeoutMinutes", f"timeoutMinutes must be between {low} and {high}")
        )
    if not timeout.timeout_minutes <= timeout.max_duration_minutes <= ceiling:
        problems.append(
            (
                "maxDurationMinutes",
                f"maxDurationMinutes must be between timeoutMinutes ({timeout.timeout_minutes}) "
                f"and {ceiling}",
            )
        )
    if not 1 <= timeout.warning_threshold_minutes <= timeout.timeout_minutes:
        problems.append(
            (
                "warningThresholdMinutes",
                f"warningThresholdMinutes must be between 1 and timeoutMinutes "
                f"({timeout.timeout_minutes})",
            )
        )
    return problems
