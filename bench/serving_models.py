"""The serving models the benchmarks compare, each started with the project's gunicorn.conf.py.

- ``asgi-threads`` (what ``make run`` serves): gunicorn's ASGI worker
  (``messaging_project.serving.Worker``), the WSGI application on
  ``GUNICORN_THREADS`` view threads per process (``ThreadedWSGI``);
- ``asgi-threads-asyncio``, ``asgi-threads-uvloop``: the same with the
  standard library's event loop or uvloop's;
- ``uvicorn``: the same application under uvicorn's worker (``uvicorn-worker``,
  uvloop and httptools);
- ``django-asgi``: gunicorn's stock ASGI worker and Django's own ASGI handler
  (each sync view is run by ``sync_to_async``, on a thread of its request's
  own, with a database connection of its own, closed at its end);
- ``gthread``: gunicorn's threaded WSGI worker, 8 threads per process;
- ``sync``: gunicorn's sync worker, one request per process, 2 × cores + 1
  processes (the model before this one).

Every model serves ``bench/waiting_app.py``: the project plus
``GET /bench/wait``, a request that waits for a PostgreSQL notification, as a
coroutine where the model has an event loop and on a thread where it has not.

A name may end in ``@WxT`` for W worker processes of T threads each
(``asgi-threads@3x4``); otherwise the model's own count or gunicorn.conf.py's.
"""

import os
from pathlib import Path

from bench.server import Gunicorn

CORES = os.cpu_count() or 1

MODELS = {
    "asgi-threads": {"app": "bench.waiting_app:asgi_application", "args": ()},
    "asgi-threads-asyncio": {
        "app": "bench.waiting_app:asgi_application",
        "args": ("--asgi-loop", "asyncio"),
    },
    "asgi-threads-uvloop": {
        "app": "bench.waiting_app:asgi_application",
        "args": ("--asgi-loop", "uvloop"),
    },
    "uvicorn": {
        "app": "bench.waiting_app:asgi_application",
        "args": ("--worker-class", "uvicorn_worker.UvicornWorker"),
    },
    "django-asgi": {
        "app": "bench.waiting_app:django_asgi_application",
        "args": ("--worker-class", "asgi"),
        # Each request runs in a context of its own there, so a kept connection is
        # never reused, only left open: close each one at the end of its request.
        "env": {"DATABASE_CONN_MAX_AGE": "0"},
    },
    "gthread": {
        "app": "bench.waiting_app:wsgi_application",
        "args": ("--worker-class", "gthread", "--threads", "8"),
    },
    "sync": {
        "app": "bench.waiting_app:wsgi_application",
        "args": ("--worker-class", "sync"),
        "workers": 2 * CORES + 1,
    },
}


def default_workers() -> int:
    """The worker count gunicorn.conf.py gives when WEB_CONCURRENCY is unset."""
    from messaging_project.serving import default_workers

    return default_workers()


def start_model(
    name: str,
    *,
    database_url: str,
    port: int,
    env: dict | None = None,
    workers: int | None = None,
    app: str | None = None,
) -> Gunicorn:
    """The project under the serving model ``name``, to start with ``with``."""
    name, _, counts = name.partition("@")
    model = MODELS[name]
    threads = None
    if counts:
        workers, threads = (int(count) for count in counts.split("x"))
    server = Gunicorn(
        database_url=database_url,
        workers=workers or model.get("workers") or default_workers(),
        threads=threads,
        port=port,
        app=app or model["app"],
        extra_args=model["args"],
        env={**model.get("env", {}), **(env or {})},
    )
    return server


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def known(name: str) -> bool:
    """Whether ``name`` (with or without ``@WxT``) is a model here."""
    base, _, counts = name.partition("@")
    if base not in MODELS:
        return False
    return not counts or all(part.isdigit() for part in counts.split("x")) and counts.count("x") == 1
