"""Run the real server (gunicorn) for tests over HTTP, and scratch databases for it.

Used by the ``server``-marked tests: durability (``kill -9``), database
outage, rate limits across workers and request-size limits over real HTTP.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
# Ports reserved for this suite's servers and proxies; TEST_PORT_BASE moves the
# range, so that suites run side by side (two checkouts) never share a port.
_PORT_BASE = int(os.environ.get("TEST_PORT_BASE") or 3130)
PORT_RANGE = range(_PORT_BASE, _PORT_BASE + 20)
SECRET_KEY = "server-tests-secret-key-not-for-production-0123456789abcdef"


def redis_reachable() -> bool:
    """Whether the Redis of this machine (127.0.0.1:6379) accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    """Return a port from ``PORT_RANGE`` that nothing listens on."""
    for port in PORT_RANGE:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def request(
    method: str,
    url: str,
    *,
    body=None,
    headers: dict | None = None,
    timeout: float = 10,
) -> tuple[int, dict, object]:
    """Send one HTTP request; return ``(status, headers, parsed JSON or raw text)``.

    ``body`` may be a dict (sent as JSON), bytes, or an iterable of bytes
    (sent with ``Transfer-Encoding: chunked`` and no ``Content-Length``).
    """
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = dict(headers or {})
    chunked = False
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    elif body is not None and not isinstance(body, (bytes, bytearray)):
        chunked = True
        headers.setdefault("Content-Type", "application/json")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = connection.getresponse()
        raw = response.read()
        response_headers = {name.lower(): value for name, value in response.getheaders()}
    finally:
        connection.close()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        payload = raw.decode(errors="replace")
    return response.status, response_headers, payload


def postgres_server_url() -> str | None:
    """The PostgreSQL server of ``DATABASE_URL`` (without a database name), if it is one."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def with_port(url: str, port: int) -> str:
    """Return ``url`` pointing at ``127.0.0.1:port`` (same user, password and database)."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def manage(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``manage.py`` in a subprocess with ``env`` added to a clean environment."""
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env={**base_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base_env() -> dict:
    """The environment for a server under test: this one, minus settings it must not inherit."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DJANGO_", "SESSIONS_", "SESSION_", "PYTEST_", "GUNICORN_", "DATABASE_", "REDIS_")
        )
        and key not in {"CACHE_KEY_PREFIX", "WEB_CONCURRENCY", "PORT", "HOST"}
    }
    env.update({"DJANGO_SECRET_KEY": SECRET_KEY, "SESSIONS_THROTTLE_RATE": "off"})
    return env


class ScratchPostgres:
    """A PostgreSQL database created and migrated for one test, dropped afterwards."""

    def __init__(self, server_url: str, purpose: str):
        self.server_url = server_url
        self.name = f"sa_hard_{purpose}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.url = f"{server_url}/{self.name}"

    def _admin(self):
        return psycopg.connect(f"{self.server_url}/postgres", autocommit=True, connect_timeout=5)

    def create(self, *, migrate: bool = True) -> "ScratchPostgres":
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        if migrate:
            result = manage("migrate", "--noinput", env={"DATABASE_URL": self.url})
            assert result.returncode == 0, result.stderr
        return self

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()


def scratch_sqlite(*, migrate: bool = True) -> str:
    """Create (and migrate) an SQLite file in a temporary directory; return its ``DATABASE_URL``."""
    directory = tempfile.mkdtemp(prefix="sa_hard_")
    url = f"sqlite:///{directory}/db.sqlite3"
    if migrate:
        result = manage("migrate", "--noinput", env={"DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
    return url


class GunicornServer:
    """gunicorn serving the project in its own process group, so a test can ``kill -9`` all of it."""

    def __init__(
        self,
        *,
        env: dict,
        workers: int = 2,
        port: int | None = None,
        app: str = "messaging_project.asgi:application",
        extra_args: tuple[str, ...] = (),
        root: Path = ROOT,
    ):
        self.env = env
        self.app = app
        # gunicorn options after the configuration file's (a benchmark's other worker class).
        self.extra_args = tuple(extra_args)
        # The checkout to serve: this one, or an older one a benchmark compares with.
        self.root = root
        self.workers = workers
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(
            prefix="sa_hard_gunicorn_", suffix=".log", delete=False
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self, *, ready_timeout: float = 30) -> "GunicornServer":
        env = {
            **base_env(),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": str(self.workers),
            "GUNICORN_ACCESS_LOG": "false",
            # Client routes open, as the suite's own settings have them; a test that
            # gives the server a client key closes them (SESSIONS_OPEN_CLIENT_ROUTES=false).
            "SESSIONS_OPEN_CLIENT_ROUTES": "true",
            **self.env,
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                self.app,
                "--config",
                str(self.root / "gunicorn.conf.py"),
                *self.extra_args,
            ],
            cwd=self.root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited with {self.process.returncode}:\n{self.output()}"
                )
            # Ready once every worker has booted and one of them answers.
            if len(self.pids()) == self.workers + 1:
                try:
                    request("GET", self.url("/api/messaging/sessions/health"), timeout=5)
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not listen on {self.port}:\n{self.output()}")

    def output(self, tail: int | None = 5000) -> str:
        text = Path(self.log.name).read_text(errors="replace")
        return text[-tail:] if tail else text

    def pids(self) -> list[int]:
        """The master and its workers (everything in the process group)."""
        if self.process is None:
            return []
        group = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[0] is the state, fields[2] the process group; zombies are gone already.
            if fields[2] == str(self.process.pid) and fields[0] != "Z":
                group.append(int(stat.parent.name))
        return group

    def kill_hard(self) -> None:
        """``kill -9`` the master and every worker at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
