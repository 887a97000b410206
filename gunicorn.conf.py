"""gunicorn settings, read from the environment and validated like the Django settings."""

import os

from messaging_project.env import env_int, env_str

_port = env_int("PORT", 3000, minimum=1, maximum=65535)
_host = env_str("HOST", "127.0.0.1") or "127.0.0.1"

bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
workers = env_int("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1) + 1, minimum=1, maximum=64)
threads = env_int("GUNICORN_THREADS", 1, minimum=1, maximum=64)
timeout = env_int("GUNICORN_TIMEOUT", 30, minimum=1, maximum=3600)
graceful_timeout = 10
accesslog = "-" if env_str("GUNICORN_ACCESS_LOG", "true").lower() in {"1", "true", "yes", "on"} else None
errorlog = "-"
