"""gunicorn settings, read from the environment and validated like the Django settings."""

import os

import gunicorn.util

from messaging_project.env import (
    env_bool,
    env_host,
    env_int,
    env_str,
    stop_on_bad_configuration,
)
from messaging_project.serving import default_workers, read_timeout_seconds, view_threads

# Every variable is read and checked first: a bad value stops start-up with
# one line naming it.
with stop_on_bad_configuration():
    _port = env_int("PORT", 3000, minimum=1, maximum=65535)
    _host = env_host("HOST", "127.0.0.1")
    _workers = env_int("WEB_CONCURRENCY", default_workers(), minimum=1, maximum=64)
    # Read again by the application (asgi.py) and the worker: checked here first.
    view_threads()
    read_timeout_seconds()
    _timeout = env_int("GUNICORN_TIMEOUT", 30, minimum=1, maximum=3600)
    _keepalive = env_int("GUNICORN_KEEPALIVE", 5, minimum=0, maximum=300)
    _preload = env_bool("GUNICORN_PRELOAD", True)
    _max_requests = env_int("GUNICORN_MAX_REQUESTS", 10_000, minimum=0, maximum=10_000_000)
    _control_socket = env_str("GUNICORN_CONTROL_SOCKET")
    _access_log = env_bool("GUNICORN_ACCESS_LOG", True)

bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
workers = _workers
# gunicorn's ASGI worker with a deadline on reading each request; the views run
# on GUNICORN_THREADS threads per worker (messaging_project/serving.py).
worker_class = "messaging_project.serving.Worker"
# uvloop's event loop was faster than the standard library's here (docs/BENCHMARKS.md).
asgi_loop = "uvloop"
timeout = _timeout
graceful_timeout = 10
keepalive = _keepalive

# Web requests never wait on PostgreSQL longer than this (a runaway query):
# the statement is cancelled and the request answers 503 well before the
# worker timeout. A write waits for a row locked elsewhere (SQLite: for the
# database's write lock) at most the lock timeout, then answers 503 with
# Retry-After. Read by the Django settings; set but empty counts as unset.
if not env_str("DATABASE_STATEMENT_TIMEOUT_MS"):
    os.environ["DATABASE_STATEMENT_TIMEOUT_MS"] = "10000"
if not env_str("DATABASE_LOCK_TIMEOUT_MS"):
    os.environ["DATABASE_LOCK_TIMEOUT_MS"] = "2000"

# Load Django once in the master: a configuration error stops start-up at once
# (instead of workers failing to boot in a loop), and workers share the
# imported code copy-on-write. No database connection is opened at import.
preload_app = _preload

# Recycle each worker after this many requests (jittered so they do not all
# restart together): memory stays bounded whatever a dependency leaks. 0 = never.
max_requests = _max_requests
max_requests_jitter = max_requests // 10

# Request-line and header limits stay at gunicorn's defaults (4094 bytes,
# 100 fields of 8190 bytes); bodies are capped at 1 MB by the application.
# What gunicorn refuses itself (those limits, a malformed request line or
# header, a request not whole in time) is answered in the API's JSON envelope:
# by messaging_project.serving.Protocol under the ASGI worker, and by this
# under gunicorn's WSGI workers (the benchmarks' other serving models).


def _write_error_envelope(sock, status_int, reason, mesg):
    from sessions_admin.errors import raw_http_error

    gunicorn.util.write_nonblock(sock, raw_http_error(status_int, reason, mesg))


gunicorn.util.write_error = _write_error_envelope

# Heartbeat files in memory, not on a possibly slow disk.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"

# gunicorn ≥ 25 opens a control socket at one fixed path per user by default,
# which two servers on one machine would fight over. Opt in with a path.
control_socket_disable = not _control_socket
if not control_socket_disable:
    control_socket = _control_socket

accesslog = "-" if _access_log else None
errorlog = "-"
