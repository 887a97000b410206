"""What a client got wrong is logged on one line: no traceback, no line breaks it chose."""

import io
import logging
import sys

import pytest

from sessions_admin.log_filters import ClientErrorsOnOneLine


def logged(name: str, message: str, *args, status_code: int | None = None) -> str:
    """Log through a handler carrying the filter, with a traceback attached; return the output."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ClientErrorsOnOneLine())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise PermissionError("the cause")
        except PermissionError:
            extra = {} if status_code is None else {"status_code": status_code}
            logger.warning(message, *args, exc_info=sys.exc_info(), extra=extra)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue()


@pytest.mark.parametrize(
    ("name", "status_code"),
    [
        ("django.security.DisallowedHost", None),
        ("django.security.DisallowedModelAdminToField", None),
        ("django.request", 403),  # PermissionDenied
        ("django.request", 400),  # a multipart body Django cannot parse
    ],
)
def test_client_errors_lose_their_traceback(name, status_code):
    output = logged(name, "Refused: %s", "/admin/x", status_code=status_code)
    assert output == "Refused: /admin/x\n"


@pytest.mark.parametrize(
    ("name", "status_code"),
    [("django.request", 500), ("sessions_admin.errors", None), ("django.request", None)],
)
def test_server_errors_keep_their_traceback(name, status_code):
    output = logged(name, "Internal Server Error: %s", "/api/x", status_code=status_code)
    assert output.startswith("Internal Server Error: /api/x\nTraceback (most recent call last):")
    assert "PermissionError: the cause" in output


def test_a_line_break_sent_by_the_client_cannot_forge_a_log_line():
    forged = "x\nInternal Server Error: /admin/forged\r\nTraceback\x00"
    output = logged("django.security.DisallowedModelAdminToField", "Refused %s", forged)
    assert output == "Refused x\\x0aInternal Server Error: /admin/forged\\x0d\\x0aTraceback\\x00\n"
    assert output.count("\n") == 1


def test_the_settings_put_the_filter_on_the_console_handler():
    filters = [
        type(each)
        for handler in logging.getLogger().handlers
        if type(handler) is logging.StreamHandler
        for each in handler.filters
    ]
    assert ClientErrorsOnOneLine in filters
