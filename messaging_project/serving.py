"""How the project is served: an asyncio server in front, the Django views on threads behind it.

gunicorn's ASGI worker (``gunicorn.workers.gasgi``) reads every connection on
its event loop, so a client that is slow to send its request, or idle between
requests, costs a few kilobytes and no thread. Once a request has arrived whole,
``ThreadedWSGI`` runs the project's ordinary WSGI application (sync views,
middleware and ORM, exactly as under a WSGI server) on a small pool of threads
that each keep their database connection. A request that is not whole within
``GUNICORN_READ_TIMEOUT`` seconds of its first byte is answered 408 by ``Protocol``.

Requests that wait for something (a long poll, a stream) belong on the event
loop instead, as coroutines: ``ThreadedWSGI`` hands the paths it is given to an
ASGI application of their own, so waiting never occupies one of the threads.
"""

import asyncio
import io
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from gunicorn.asgi import protocol as _gunicorn_protocol
from gunicorn.workers import gasgi as _gunicorn_asgi

from messaging_project.env import env_int

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A refused body is read and dropped up to this size, for at most this long,
# after its answer went out: closing a socket with unread data makes the kernel
# reset the connection, and a client still sending would never see the answer.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
DRAIN_MAX_SECONDS = 2.0


class _Disconnected(Exception):
    """The client went away (or its request was answered 408) before its body was read."""


class ThreadedWSGI:
    """Serve a WSGI application to an ASGI server, one thread of a fixed pool per request.

    The body is read on the event loop first, up to ``max_body_bytes + 1``
    bytes (the application refuses what is larger and never needs more to
    say so); the application then runs on a thread with the body in memory.
    Its answer is collected on that thread and written by the event loop, so a
    slow reader holds no thread either.
    """

    def __init__(
        self,
        wsgi_application,
        *,
        threads: int,
        max_body_bytes: int,
        async_routes: dict[str, ASGIApp] | None = None,
    ):
        self.wsgi_application = wsgi_application
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self.async_routes = dict(async_routes or {})
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Made on first use, in the worker process: threads do not survive a fork.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="view")
        return self._executor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            # No websocket route: refuse the handshake.
            await send({"type": "websocket.close", "code": 1000})
            return
        route = self.async_routes.get(scope["path"].rstrip("/"))
        if route is not None:
            await route(scope, receive, send)
            return
        await self._serve_wsgi(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._executor is not None:
                    self._executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _serve_wsgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        announced = _content_length(scope)
        try:
            if announced is not None and announced > self.max_body_bytes:
                # Refused for its size without reading it (the application says 413).
                body, complete = b"", False
            else:
                body, complete = await _read_body(receive, self.max_body_bytes + 1)
        except _Disconnected:
            return
        environ = _environ(scope, body)
        loop = asyncio.get_running_loop()
        status, headers, chunks = await loop.run_in_executor(
            self.executor, _call_wsgi, self.wsgi_application, environ
        )
        body = b"".join(chunks)
        if (
            status >= 200
            and status not in (204, 304)
            and scope["method"] != "HEAD"
            and not any(name.lower() == b"content-length" for name, _ in headers)
        ):
            # The whole answer is at hand: sized, it needs no chunked framing.
            headers.append((b"Content-Length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if not complete:
            await _drain(receive)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """Read the body up to ``limit`` bytes; return it and whether it was read to its end."""
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            parts.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), True
        if size >= limit:
            return b"".join(parts), False


async def _drain(receive: Receive) -> None:
    """Read and drop the rest of a refused body, within ``DRAIN_MAX_*``."""

    async def drain() -> None:
        remaining = DRAIN_MAX_BYTES
        while remaining > 0:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            remaining -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(drain(), DRAIN_MAX_SECONDS)
    except TimeoutError:
        pass


def _environ(scope: Scope, body: bytes) -> dict:
    """The WSGI environ of an ASGI HTTP request whose body has been read."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        # WSGI carries the path's bytes as Latin-1 characters; Django decodes them.
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]) if server[1] is not None else "80",
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_LENGTH" or name == "CONTENT_TYPE":
            key = name
        else:
            key = f"HTTP_{name}"
        if key in environ:
            separator = "; " if key == "HTTP_COOKIE" else ","
            environ[key] = f"{environ[key]}{separator}{value}"
        else:
            environ[key] = value
    return environ


def _call_wsgi(application, environ: dict) -> tuple[int, list, list[bytes]]:
    """Run the WSGI application on this thread; return its status, headers and body."""
    started = {}

    def start_response(status, response_headers, exc_info=None):
        if exc_info is not None and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started["status"] = int(status.split(" ", 1)[0])
        # Names keep the application's spelling, as a WSGI server writes them.
        started["headers"] = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response_headers
        ]
        return lambda data: chunks.append(data)

    chunks: list[bytes] = []
    result = application(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], started["headers"], chunks


# The server side: gunicorn's ASGI worker with a deadline on reading each request.

READ_TIMEOUT_VARIABLE = "GUNICORN_READ_TIMEOUT"


def default_workers() -> int:
    """Worker processes when ``WEB_CONCURRENCY`` is unset: one per core (see docs/BENCHMARKS.md)."""
    return os.cpu_count() or 1


def view_threads() -> int:
    """Threads per worker process that run the views (validated)."""
    return env_int("GUNICORN_THREADS", 4, minimum=1, maximum=256)


def read_timeout_seconds() -> int:
    """Seconds a client has to send a whole request, from its first byte (validated)."""
    return env_int(READ_TIMEOUT_VARIABLE, 5, minimum=1, maximum=300)


class Protocol(_gunicorn_protocol.ASGIProtocol):
    """gunicorn's HTTP/1.1 protocol, with a deadline on each request and errors in the envelope.

    A request must arrive whole (headers and body) within the read timeout of
    its first byte, or it is answered 408 and the connection closed. A
    connection that sends nothing is closed quietly after the keep-alive time,
    as an idle kept-alive one is. Nothing here holds a thread: waiting for
    bytes is the event loop's job.
    """

    read_timeout = 5.0

    def connection_made(self, transport):
        self._read_timer = None
        # Bytes of a request not yet whole have arrived (the deadline runs).
        self._receiving = False
        self._body_bytes = 0
        # The client half-closed after a whole request: close after answering it.
        self._peer_done = False
        super().connection_made(transport)
        if self._callback_parser is not None:
            self._arm_read_timer(self._keepalive or self.read_timeout)

    def data_received(self, data):
        if not self._receiving and data and self._callback_parser is not None:
            self._receiving = True
            self._arm_read_timer(self.read_timeout)
        super().data_received(data)

    def _on_headers_complete(self):
        self._body_bytes = 0
        return super()._on_headers_complete()

    def _on_body(self, chunk):
        self._body_bytes += len(chunk)
        super()._on_body(chunk)

    def eof_received(self):
        """The client finished sending (a half-close): answer what it sent, or why not."""
        if not self._receiving:
            if self._current_request is None:
                return None  # Between requests: close.
            # Its request is whole and being served: keep the way back open for the answer.
            self._peer_done = True
            return True
        receiver = self._body_receiver
        if receiver is not None and not receiver._complete:
            request = receiver.request
            if getattr(request, "chunked", False):
                message = "Malformed chunked request body"
            else:
                message = (
                    f"Malformed request body: Request body ended after {self._body_bytes:,} "
                    f"of the {request.content_length:,} bytes its Content-Length announced"
                )
            self._send_error_response(400, message)
        # A head cut short gets no answer, as from gunicorn's other workers.
        self._abandon_request()
        return None

    def _will_close(self, request, response_requires_close):
        return self._peer_done or super()._will_close(request, response_requires_close)

    def _on_message_complete(self):
        self._stop_read_timer()
        super()._on_message_complete()

    def _send_response_start(self, status, headers, request, close=False):
        # Answered before its body came whole (a body refused for its size):
        # what is left of it is drained, within bounds of its own.
        self._stop_read_timer()
        super()._send_response_start(status, headers, request, close=close)

    def _keepalive_timeout(self):
        if self._receiving:
            return  # A request has begun: its own deadline applies.
        super()._keepalive_timeout()

    def connection_lost(self, exc):
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self, seconds: float) -> None:
        self._cancel_read_timer()
        self._read_timer = self.worker.loop.call_later(seconds, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _stop_read_timer(self) -> None:
        self._cancel_read_timer()
        self._receiving = False

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self._closed:
            return
        if self._receiving:
            self._send_error_response(
                408, f"The request did not arrive whole within {self.read_timeout:g} s"
            )
        self._abandon_request()

    def _abandon_request(self) -> None:
        """Close the connection and let the request's task know, whatever it waits for."""
        self._stop_read_timer()
        self._close_transport()
        if self._body_receiver is not None:
            self._body_receiver.signal_disconnect()
        if self._request_ready is not None:
            # Wake the connection's task so that it sees the connection closed.
            self._request_ready.set()

    def _send_error_response(self, status, message, extra_headers=()):
        from sessions_admin.errors import raw_http_error

        receiver = self._body_receiver
        if (
            status == 400
            and receiver is not None
            and not receiver._complete
            and getattr(receiver.request, "chunked", False)
        ):
            # The request's head was taken: what failed to parse is its chunked body.
            message = "Malformed chunked request body"
        reason = _gunicorn_protocol._REASON_PHRASES.get(status) or "Error"
        self._safe_write(raw_http_error(status, reason, message, tuple(extra_headers)))


class Worker(_gunicorn_asgi.ASGIWorker):
    """gunicorn's ASGI worker serving connections with ``Protocol``."""

    def init_process(self):
        Protocol.read_timeout = float(read_timeout_seconds())
        # The worker builds its protocol by this module-level name.
        _gunicorn_asgi.ASGIProtocol = Protocol
        super().init_process()
