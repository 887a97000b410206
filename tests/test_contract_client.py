"""Contract test: the official elizaOS client, @elizaos/api-client, against the real server.

Starts gunicorn on a migrated scratch SQLite database, installs the client
with npm (pinned by tests/contract/package-lock.json) when node_modules is
missing, and runs tests/contract/contract.mjs, which drives checkHealth,
createSession, getSession, listSessions (admin key), deleteSession and the
errors the client must surface as its ApiError. Skipped only when node or npm
are not installed.
"""

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests import server

pytestmark = pytest.mark.server

CONTRACT = Path(__file__).resolve().parent / "contract"
CLIENT_KEY = "contract-client-key-0123456789"
ADMIN_KEY = "contract-admin-key-0123456789"
# This suite's own ports, apart from the other server tests' (below them).
PORTS = range(server.PORT_RANGE.start - 20, server.PORT_RANGE.start - 10)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return server.free_port()


@pytest.fixture(scope="module")
def node_client():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are needed for the client contract test")
    if not (CONTRACT / "node_modules" / "@elizaos" / "api-client").is_dir():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CONTRACT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
    return node


@pytest.fixture(scope="module")
def gunicorn_server():
    database_url = server.scratch_sqlite()
    database_dir = Path(database_url.removeprefix("sqlite:///")).parent
    running = server.GunicornServer(
        env={
            "DATABASE_URL": database_url,
            "SESSIONS_ADMIN_API_KEY": ADMIN_KEY,
            "SESSIONS_API_KEY": CLIENT_KEY,
            "SESSIONS_OPEN_CLIENT_ROUTES": "false",
        },
        workers=2,
        port=_free_port(),
    ).start()
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(database_dir, ignore_errors=True)


def test_official_client_drives_a_session_life(node_client, gunicorn_server):
    result = subprocess.run(
        [node_client, "contract.mjs"],
        cwd=CONTRACT,
        env={
            **os.environ,
            "BASE_URL": gunicorn_server.base_url,
            "CLIENT_KEY": CLIENT_KEY,
            "ADMIN_KEY": ADMIN_KEY,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout)  # shown with -s or -rA: the contract's report
    assert result.returncode == 0, (
        f"{result.stdout}\n{result.stderr}\n--- server log ---\n{gunicorn_server.output()}"
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["client"] == "@elizaos/api-client@1.7.2"
    assert summary["failed"] == 0
    names = [r["name"] for r in summary["results"]]
    for operation in (
        "checkHealth",
        "createSession",
        "getSession",
        "listSessions (admin key)",
        "deleteSession",
    ):
        assert operation in names
    assert sum("ApiError" in name for name in names) >= 4
