"""Shared helpers for the benchmarks in bench/: machine report, scratch databases, timing.

Benchmarks run against PostgreSQL (``BENCH_PG`` or postgres://postgres@127.0.0.1:5432),
each in a scratch database it creates and drops.
"""

import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")


def machine_report(argv: list[str] | None = None) -> str:
    """Return lines naming the machine, versions and the command that ran."""
    import django
    import rest_framework

    mem_kb = 0
    try:
        with open("/proc/meminfo") as meminfo:
            mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        pass
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {mem_kb / 1024 / 1024:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"versions: Python {platform.python_version()}, Django {django.get_version()}, "
        f"DRF {rest_framework.VERSION}, psycopg {psycopg.__version__}, PostgreSQL {pg_version}",
        f"command: {shlex.join(argv if argv is not None else [sys.executable, *sys.argv])}",
    ]
    return "\n".join(lines)


def database_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


def create_database(name: str, *, template: str | None = None) -> str:
    """(Re)create a scratch database, optionally as a copy of ``template``; return its URL."""
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return database_url(name)


def drop_database(name: str) -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(
    *args: str, database_url: str, env: dict | None = None, check=True, root: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run ``manage.py`` of the checkout at ``root`` (this one by default) against ``database_url``."""
    full_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "benchmark-secret-key"),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, str(root / "manage.py"), *args],
        cwd=root, env=full_env, check=check, capture_output=True, text=True,
    )


@contextmanager
def stopwatch():
    """Yield a dict whose ``seconds`` is filled in when the block ends."""
    result = {}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``samples`` (``pct`` in 0..100)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(samples: list[float]) -> dict:
    """p50/p95/mean in milliseconds from samples in seconds."""
    return {
        "p50": percentile(samples, 50) * 1000,
        "p95": percentile(samples, 95) * 1000,
        "mean": statistics.fmean(samples) * 1000 if samples else float("nan"),
    }


def table(headers: list[str], rows: list[list]) -> str:
    """Render a Markdown table."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
