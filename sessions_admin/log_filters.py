"""Logging filters the project's ``LOGGING`` setting installs."""

import logging
import re

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class ClientErrorsOnOneLine(logging.Filter):
    """Log what a client got wrong on one line: no traceback, no line breaks.

    Django's security events (a disallowed Host header, say) and its 4xx
    answers (a permission refused, a body it cannot parse) come with a
    traceback, though they are the client's doing, not a fault of the server:
    scanners send them all day, and the tracebacks would bury the errors that
    matter. Their messages quote what the client sent, so a line break in it
    could forge a log line ("Internal Server Error: ..."); control characters
    are written as escapes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        client_error = record.name.startswith("django.security.") or (
            record.name == "django.request" and getattr(record, "status_code", 500) < 500
        )
        if client_error:
            record.exc_info = None
            record.exc_text = None
            message = record.getMessage()
            if _CONTROL_CHARACTERS.search(message):
                record.msg = _CONTROL_CHARACTERS.sub(
                    lambda match: f"\\x{ord(match.group()):02x}", message
                )
                record.args = ()
        return True
