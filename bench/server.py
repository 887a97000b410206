"""Run gunicorn for a benchmark, talk to it over HTTP, and measure its memory."""

import http.client
import json
import os

from tests.server import GunicornServer

ADMIN_KEY = "benchmark-admin-key-0123456789"


class Client:
    """One HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port = port
        self.headers = {"X-API-KEY": ADMIN_KEY, **(headers or {})}
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        status, raw = self.request_raw(method, path, body)
        return status, json.loads(raw) if raw else {}

    def request_raw(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """Send one request; return the status and the body as received (not parsed)."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = dict(self.headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
        except (ConnectionError, http.client.HTTPException):
            self.close()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return response.status, raw

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Gunicorn(GunicornServer):
    """The tests' gunicorn launcher, configured for benchmarks and able to read its memory."""

    def __init__(
        self,
        *,
        database_url: str,
        workers: int,
        threads: int | None = None,
        port: int | None = None,
        env: dict | None = None,
        app: str = "messaging_project.asgi:application",
        extra_args: tuple[str, ...] = (),
        root=None,
    ):
        super().__init__(
            env={
                "DATABASE_URL": database_url,
                # The benchmark signs list cursors itself: the server must share its key.
                "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "benchmark-secret-key"),
                "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
                **({"GUNICORN_THREADS": str(threads)} if threads else {}),
                **(env or {}),
            },
            workers=workers,
            port=port,
            app=app,
            extra_args=extra_args,
            **({"root": root} if root is not None else {}),
        )

    def __enter__(self) -> "Gunicorn":
        return self.start(ready_timeout=60)

    def rss_mib(self) -> float:
        """Resident memory of the master and workers together (shared pages counted in each)."""
        return self._sum_mib("status", "VmRSS:")

    def pss_mib(self) -> float:
        """Proportional set size: shared pages split between the processes (the honest total)."""
        return self._sum_mib("smaps_rollup", "Pss:")

    def _sum_mib(self, proc_file: str, field: str) -> float:
        """Sum one ``/proc/<pid>/<proc_file>`` field (in kB) over the server's processes."""
        total_kb = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/{proc_file}") as lines:
                    total_kb += next(int(line.split()[1]) for line in lines if line.startswith(field))
            except (OSError, StopIteration):
                continue
        return total_kb / 1024
