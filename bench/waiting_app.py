"""A stand-in for the requests that wait, to measure serving models with them (bench only).

``GET /bench/wait?seconds=N`` waits until a PostgreSQL ``NOTIFY bench_wait``
arrives or ``N`` seconds pass, then answers ``{"woken": bool, "waitedMs": int}``:
what ``transport: "http"`` and the agent inbox's long poll will do (wait on
``LISTEN`` for a reply or a message). One listening connection per process
wakes every waiter, as the real feature would. Every other path is the
project, unchanged.

- ``asgi_application``: the project as it is served (``ThreadedWSGI``), the
  wait a coroutine on the event loop;
- ``django_asgi_application``: Django's own ASGI handler, the wait a coroutine;
- ``wsgi_application``: the WSGI application, the wait blocking its thread
  (sync and gthread workers have nothing else).
"""

import asyncio
import json
import os
import threading
import time
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from messaging_project.serving import ThreadedWSGI, view_threads  # noqa: E402

WAIT_PATH = "/bench/wait"
CHANNEL = "bench_wait"


def _database_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


def _seconds(query_string: bytes | str) -> float:
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    values = parse_qs(query_string).get("seconds", ["30"])
    return min(max(float(values[0]), 0.0), 120.0)


def _answer(woken: bool, started: float) -> bytes:
    waited_ms = round((time.monotonic() - started) * 1000)
    return json.dumps({"woken": woken, "waitedMs": waited_ms}).encode()


# -- on the event loop -------------------------------------------------------------------


class _AsyncWaiters:
    """The waiting coroutines of this process, woken together by one LISTEN connection."""

    def __init__(self):
        self.generation: asyncio.Future | None = None
        self.listener: asyncio.Task | None = None

    async def wait(self, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        if self.listener is None and _database_url():
            self.listener = loop.create_task(self._listen())
        if self.generation is None or self.generation.done():
            self.generation = loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self.generation), seconds)
        except TimeoutError:
            return False
        return True

    async def _listen(self) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            _database_url(), autocommit=True
        ) as connection:
            await connection.execute(f"LISTEN {CHANNEL}")
            async for _ in connection.notifies():
                if self.generation is not None and not self.generation.done():
                    self.generation.set_result(None)


_async_waiters = _AsyncWaiters()


async def wait_view(scope, receive, send) -> None:
    started = time.monotonic()
    woken = await _async_waiters.wait(_seconds(scope["query_string"]))
    body = _answer(woken, started)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


asgi_application = ThreadedWSGI(
    get_wsgi_application(),
    threads=view_threads(),
    max_body_bytes=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    async_routes={WAIT_PATH: wait_view},
)

_django_asgi = get_asgi_application()


async def django_asgi_application(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["path"].rstrip("/") == WAIT_PATH:
        await wait_view(scope, receive, send)
        return
    await _django_asgi(scope, receive, send)


# -- on a thread ---------------------------------------------------------------------------


class _ThreadWaiters:
    """The waiting threads of this process, woken together by one listening thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.generation = threading.Event()
        self.listener: threading.Thread | None = None

    def wait(self, seconds: float) -> bool:
        with self.lock:
            if self.listener is None and _database_url():
                self.listener = threading.Thread(target=self._listen, daemon=True)
                self.listener.start()
            generation = self.generation
        return generation.wait(seconds)

    def _listen(self) -> None:
        import psycopg

        with psycopg.connect(_database_url(), autocommit=True) as connection:
            connection.execute(f"LISTEN {CHANNEL}")
            for _ in connection.notifies():
                with self.lock:
                    self.generation.set()
                    self.generation = threading.Event()


_thread_waiters = _ThreadWaiters()
_wsgi = get_wsgi_application()


def wsgi_application(environ, start_response):
    if environ.get("PATH_INFO", "").rstrip("/") != WAIT_PATH:
        return _wsgi(environ, start_response)
    started = time.monotonic()
    woken = _thread_waiters.wait(_seconds(environ.get("QUERY_STRING", "")))
    body = _answer(woken, started)
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
