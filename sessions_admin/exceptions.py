"""Domain errors raised by services and selectors.

They carry no HTTP knowledge; ``sessions_admin.errors`` maps them to the API's
error envelope and the admin reports them as messages.
"""

from datetime import datetime


class SessionError(Exception):
    """Base class for session domain errors.

    ``at`` is the request's reading of the clock when the error was found
    after it (an expiry is decided at an instant), so that the error's answer
    uses that instant too; ``None`` when no clock was read.
    """

    code = "SESSION_ERROR"

    def __init__(self, message: str, *, details: dict | None = None, at: datetime | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.at = at


class SessionNotFound(SessionError):
    code = "SESSION_NOT_FOUND"

    def __init__(self, session_id, *, at: datetime | None = None):
        super().__init__(
            f"Session {session_id} not found", details={"sessionId": str(session_id)}, at=at
        )


class SessionExpired(SessionError):
    code = "SESSION_EXPIRED"

    def __init__(self, session_id, expires_at: datetime, *, at: datetime | None = None):
        from sessions_admin.policy import format_datetime

        super().__init__(
            f"Session {session_id} has expired",
            details={"sessionId": str(session_id), "expiresAt": format_datetime(expires_at)},
            at=at,
        )


class SessionRenewalFailed(SessionError):
    code = "SESSION_RENEWAL_FAILED"

    def __init__(self, session_id, reason: str, *, at: datetime | None = None):
        super().__init__(
            f"Session {session_id} cannot be renewed: {reason}",
            details={"sessionId": str(session_id), "reason": reason},
            at=at,
        )


class SessionWriteConflict(SessionError):
    """A write that kept losing a race with the pruner; nothing was saved and a retry will do."""

    code = "SERVICE_UNAVAILABLE"

    def __init__(self, attempts: int):
        super().__init__(
            f"The session could not be saved: a concurrent prune removed its timeout "
            f"configuration {attempts} times in a row. Nothing was changed; try again",
            details={"attempts": attempts},
        )


class InvalidInput(SessionError):
    """A value that breaks the rules, reported as a validation error naming its field."""

    code = "VALIDATION_ERROR"

    def __init__(self, field: str, message: str, *, at: datetime | None = None):
        super().__init__(message, details={"field": field}, at=at)
        self.field = field


class InvalidTimeout(InvalidInput):
    """A timeout configuration outside the allowed ranges."""


class InvalidCursor(InvalidInput):
    """A pagination cursor that was not issued by this service for this ordering."""

    def __init__(self, message: str = "Invalid cursor; use the nextCursor of a previous page"):
        super().__init__("cursor", message)
