"""Run gunicorn for a benchmark, talk to it over HTTP, and measure its memory."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "benchmark-admin-key-0123456789"
# Ports this project's benchmarks may use.
PORTS = range(3140, 3150)


def free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


class Client:
    """One HTTP/1.1 connection, reopened when the server closes it (gunicorn's sync workers do)."""

    def __init__(self, port: int, headers: dict | None = None):
        self.port = port
        self.headers = {"X-API-KEY": ADMIN_KEY, **(headers or {})}
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
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
        return response.status, json.loads(raw) if raw else {}

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Gunicorn:
    """gunicorn with the project's config, in its own process group."""

    def __init__(
        self, *, database_url: str, workers: int, threads: int = 1, env: dict | None = None
    ):
        self.port = free_port()
        self.workers = workers
        self.threads = threads
        self.log = tempfile.NamedTemporaryFile(prefix="sa_hard_bench_", suffix=".log", delete=False)
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "benchmark-secret-key"),
            "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
            "SESSIONS_THROTTLE_RATE": "off",
            "GUNICORN_ACCESS_LOG": "false",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "messaging_project.wsgi:application",
                "--config",
                str(ROOT / "gunicorn.conf.py"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(Path(self.log.name).read_text()[-3000:])
            if len(self.pids()) == self.workers + 1:
                try:
                    Client(self.port).request("GET", "/api/messaging/sessions/health")
                    return self
                except OSError:
                    pass
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("gunicorn did not start:\n" + Path(self.log.name).read_text()[-3000:])

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def pids(self) -> list[int]:
        """The master and its workers: every process in its group."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if self.process and fields[2] == str(self.process.pid) and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    def rss_mib(self) -> float:
        """Resident memory of the master and workers together (shared pages counted in each)."""
        total_kb = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as status:
                    total_kb += next(
                        int(line.split()[1]) for line in status if line.startswith("VmRSS")
                    )
            except (OSError, StopIteration):
                continue
        return total_kb / 1024

    def pss_mib(self) -> float:
        """Proportional set size: shared pages split between the processes (the honest total)."""
        total_kb = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as rollup:
                    total_kb += next(
                        int(line.split()[1]) for line in rollup if line.startswith("Pss:")
                    )
            except (OSError, StopIteration):
                continue
        return total_kb / 1024
