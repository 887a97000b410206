"""The benchmarks in bench/ still run: each in its ``--smoke`` mode, against PostgreSQL.

They are measurements, not tests: only that they finish and print their
report is checked here, never a figure.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests import server

pytestmark = [pytest.mark.postgres, pytest.mark.server]

# What each benchmark's table must show: its header and one row per contender.
EXPECTED_ROWS = {
    "admin.py": [
        "| reusing / counting", "| list, first page", "| search: one agent", "| session page",
        "| renew selected", "| expire selected now",
    ],
    "health.py": ["| off (0)", "| 1,000 ms"],
    "hardening.py": [
        "| POST 1,000,097 B of unknown keys", "| GET during 3 such POSTs/s",
        "| 5 heartbeats on a row locked elsewhere", "| health sent 0.5 s after them",
    ],
    "list.py": [
        "| p50 / p50 at", "| first page", "| page at 90%", "| agentId", "| admin: default",
        "| health",
    ],
    "load.py": ["| create", "| get", "| heartbeat", "| list (100/page)", "| mixed"],
    "peer.py": ["| create    | project ", "| get       | floor (same SQL)", "| heartbeat | project "],
    "prune.py": ["| raw DELETE", "| prune_sessions ", "| prune_sessions x2", "| naive delete"],
    "slow_clients.py": ["| asgi-threads | ", "headers never end: 408 after"],
}


@pytest.mark.parametrize("script", sorted(EXPECTED_ROWS))
def test_benchmark_smoke_run(script):
    if script == "peer.py" and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install wrk)")
    env = {**server.base_env(), "BENCH_PG": server.postgres_server_url()}
    env.pop("DJANGO_SECRET_KEY", None)  # each benchmark sets its own
    result = subprocess.run(
        [sys.executable, os.path.join("bench", script), "--smoke"],
        cwd=server.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    assert output.startswith("machine: ") or "\nmachine: " in output
    for row in EXPECTED_ROWS[script]:
        assert row in output, f"{row!r} missing from:\n{output[-3000:]}"
