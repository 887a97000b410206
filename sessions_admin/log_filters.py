"""Logging filters the project's ``LOGGING`` setting installs."""

import logging


class SecurityEventsOnOneLine(logging.Filter):
    """Log Django's security events (a disallowed Host header, say) without a traceback.

    They are the client's doing, not a fault of the server: scanners send
    them all day, and a traceback for each would bury the errors that matter.
    The event itself, with its message, is still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security."):
            record.exc_info = None
            record.exc_text = None
        return True
