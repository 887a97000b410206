"""Request bodies that are framed wrongly, sent to the real server over raw sockets.

A chunked body the server cannot parse is a 400 envelope, not Django's HTML
500; a Content-Length announcing a large body that never comes is a 413
after a short, bounded wait, not a worker held until gunicorn kills it; a
body that ends before its Content-Length is refused, not acted on. What
gunicorn refuses before the application runs is in the envelope too.
"""

import contextlib
import gzip
import http.client
import json
import socket
import sqlite3
import time
import zlib

import pytest

from tests import server

pytestmark = pytest.mark.server

BASE = "/api/messaging/sessions"


@pytest.fixture(scope="module")
def running():
    """One worker, as ``make run`` serves (gunicorn's ASGI worker, the views on threads)."""
    env = {"DATABASE_URL": server.scratch_sqlite()}
    with server.GunicornServer(env=env, workers=1) as running:
        yield running


def stored_sessions(running) -> int:
    path = running.env["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT count(*) FROM sessions_admin_session").fetchone()[0]


def exchange(running, path: str, headers: dict, body: bytes, *, half_close: bool = False):
    """Send ``body`` as given after the headers; return the status, the JSON answer and seconds."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=40)
    try:
        connection.putrequest("POST", path)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(body)
        if half_close:
            connection.sock.shutdown(socket.SHUT_WR)
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.getheader("Content-Type", "").startswith("application/json")
    return response.status, answer, time.monotonic() - started


CHUNKED = {"Transfer-Encoding": "chunked"}


@pytest.mark.parametrize(
    ("body", "half_close"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", False),  # a chunk size that is not hexadecimal
        (b"2\r\n{}XX0\r\n\r\n", False),  # a chunk without its CRLF terminator
        (b"10\r\n{}", True),  # the body ends before its announced chunk does
    ],
)
def test_a_malformed_chunked_body_is_a_400_envelope(running, body, half_close):
    status, answer, _ = exchange(running, BASE, CHUNKED, body, half_close=half_close)
    assert status == 400, answer
    assert answer["error"]["code"] == "VALIDATION_ERROR"
    assert answer["error"]["message"] == "Malformed chunked request body"
    assert "Traceback" not in running.output(tail=None)


@pytest.mark.parametrize("path", [f"{BASE}/health", BASE])
def test_a_large_body_that_never_comes_is_413_after_a_bounded_wait(running, path):
    # The socket stays open: the client might still send, it just does not.
    status, answer, elapsed = exchange(running, path, {"Content-Length": "2000000"}, b'{"agentId": ')
    assert status == 413, answer
    assert answer["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert answer["error"]["details"] == {"maxBytes": 1024 * 1024, "contentLength": 2_000_000}
    # The drain gives up after DRAIN_MAX_SECONDS (2 s); gunicorn's timeout is 30 s.
    assert elapsed < 10, f"took {elapsed:.1f} s"
    # The worker is free again at once.
    status, _, health = server.request("GET", running.url(f"{BASE}/health"), timeout=5)
    assert status == 200, health


def test_a_host_not_allowed_is_a_400_logged_on_one_line(running):
    status, _, answer = server.request(
        "GET", running.url(f"{BASE}/health"), headers={"Host": "scanner.example"}
    )
    assert status == 400, answer
    assert answer["error"]["code"] == "VALIDATION_ERROR"
    log = running.output(tail=None)
    assert "Invalid HTTP_HOST header: 'scanner.example'" in log
    assert "Traceback" not in log, log[-2000:]


@pytest.mark.parametrize(
    "path", [f"/{BASE}", f"/{BASE}/health", f"//{BASE}/00000000-0000-0000-0000-000000000000"]
)
def test_a_doubled_leading_slash_is_a_404_envelope(running, path):
    """What a client gets that joins a base URL ending in / with a path starting with one."""
    connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        answer = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 404, answer
    assert answer["error"]["code"] == "NOT_FOUND"
    assert answer["error"]["message"] == f"No route matches GET {path}"


def test_a_body_shorter_than_its_content_length_is_a_400_and_saves_nothing(running):
    """The client hung up mid-body; what did arrive happens to be a whole JSON object."""
    body = json.dumps(
        {"agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11", "userId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a12"}
    ).encode()
    before = stored_sessions(running)
    headers = {"Content-Length": str(len(body) + 20)}
    status, answer, _ = exchange(running, BASE, headers, body, half_close=True)
    assert status == 400, answer
    assert answer["error"]["message"] == (
        f"Malformed request body: Request body ended after {len(body)} of the "
        f"{len(body) + 20} bytes its Content-Length announced"
    )
    assert stored_sessions(running) == before
    # The same body with its true length is taken.
    status, answer, _ = exchange(running, BASE, {"Content-Length": str(len(body))}, body)
    assert status == 201, answer
    assert stored_sessions(running) == before + 1


def raw_exchange(running, data: bytes) -> tuple[int, dict, dict]:
    """Write ``data`` on a new connection; return the status, the headers and the JSON body."""
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "message"),
    [
        (
            b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            414,
            "URI_TOO_LONG",
            "Request line is too large",
        ),
        (
            b"GET /api/messaging/sessions/health HTTP/1.1\r\n"
            + b"".join(b"X-Filler-%d: y\r\n" % i for i in range(120))
            + b"\r\n",
            431,
            "HEADER_FIELDS_TOO_LARGE",
            "Too many headers",
        ),
        (
            b"NONSENSE\r\n\r\n",
            400,
            "VALIDATION_ERROR",
            "Invalid request line",
        ),
    ],
    ids=["request line too long", "too many headers", "no request line"],
)
def test_what_gunicorn_refuses_itself_is_an_envelope(running, request_bytes, status, code, message):
    got_status, headers, answer = raw_exchange(running, request_bytes)
    assert got_status == status, answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert answer["success"] is False
    assert answer["error"]["code"] == code
    assert answer["error"]["message"] == message
    assert answer["error"]["timestamp"].endswith("Z")


def test_a_refusal_does_not_quote_what_was_sent(running):
    status, _, answer = raw_exchange(running, b"X" * 3000 + b"\r\n\r\n")
    assert status == 400, answer
    assert answer["error"]["message"] == "Invalid request line"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


NEW_SESSION = json.dumps(
    {
        "agentId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a11",
        "userId": "6f1c2a8e-2b1c-4c55-9a0e-2f7c7d1c0a12",
    }
).encode()


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip, chunked", gzip.compress(NEW_SESSION)),
        ("gzip, chunked", NEW_SESSION),  # what the server read as plain JSON, and stored
        ("deflate, chunked", zlib.compress(NEW_SESSION)),
        ("deflate, chunked", NEW_SESSION),
        ("compress, chunked", NEW_SESSION),
        ("GZIP , chunked", NEW_SESSION),
    ],
    ids=["gzip", "gzip, plain body", "deflate", "deflate, plain body", "compress", "spelled"],
)
def test_a_transfer_coding_other_than_chunked_is_refused(running, coding, body):
    # gunicorn takes gzip, deflate and compress before chunked: it undoes the chunking
    # and hands the body on with the other coding still applied, naming it in the header.
    before = stored_sessions(running)
    status, answer, _ = exchange(running, BASE, {"Transfer-Encoding": coding}, chunked(body))
    assert status == 501, answer
    assert answer["error"]["code"] == "NOT_IMPLEMENTED"
    assert answer["error"]["message"].startswith("Unsupported Transfer-Encoding")
    assert stored_sessions(running) == before


def test_a_transfer_coding_gunicorn_does_not_know_is_refused_by_gunicorn(running):
    before = stored_sessions(running)
    request = (
        b"POST /api/messaging/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: br, chunked\r\n\r\n"
        + chunked(NEW_SESSION)
    )
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(request)
        status_line = sock.makefile("rb").readline()
    # 501 from gunicorn's Python parser, with its own phrase; 400 from its C parser.
    assert status_line in (b"HTTP/1.1 501 Not Implemented\r\n", b"HTTP/1.1 400 Bad Request\r\n")
    assert stored_sessions(running) == before


@pytest.mark.parametrize("coding", ["chunked", "identity, chunked"])
def test_a_chunked_body_is_still_taken(running, coding):
    before = stored_sessions(running)
    status, answer, _ = exchange(running, BASE, {"Transfer-Encoding": coding}, chunked(NEW_SESSION))
    assert status == 201, answer
    assert stored_sessions(running) == before + 1
