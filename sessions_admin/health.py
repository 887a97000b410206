"""The health probe: the database's counts, or an error within a deadline.

libpq will not give up on a connection attempt in less than 2 s, and a query on
an open connection to a host that stopped answering waits for TCP to notice.
So, unless ``SESSIONS_HEALTH_TIMEOUT_MS`` is 0, the probe runs on a short-lived
daemon thread with its own connection, and the request stops waiting for it at
the deadline. A probe left behind ends with its connection attempt; it holds
nothing the request needs.

A process runs at most one probe at a time: a health request that arrives while
one is in flight waits for that probe's answer (under its own deadline, and
with the counts as of that probe's start) instead of starting another. Health
checks are not authenticated or rate limited, so without this a flood of them
against a slow database would pile up one thread and one connection attempt
per request, each lingering past its deadline.

The counts come from the counts table (``sessions_admin.counts``): one small
indexed query, whatever the number of sessions, exact at the answer's instant.
A healthy answer may be reused for ``SESSIONS_HEALTH_CACHE_MS`` per process
(0, never, by default), with the timestamp of the instant it counted at.
Failures are never reused, so a database that comes back is seen by the next
request.
"""

import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, OperationalError, connections

from sessions_admin import selectors
from sessions_admin.migration_state import DatabaseNotMigrated, lacks_migrations


class ProbeTimedOut(OperationalError):
    """The database did not answer the health probe in time."""


def _counts(now: datetime) -> dict:
    """``session_stats`` at ``now``; ``DatabaseNotMigrated`` when the tables are missing."""
    try:
        return selectors.session_stats(now=now)
    except DatabaseError as exc:
        if lacks_migrations(exc):
            raise DatabaseNotMigrated() from exc
        raise


class _Probe:
    """One run of the stats query on its own thread; any number of requests may wait for it."""

    def __init__(self, now: datetime):
        self.now = now
        self.finished = threading.Event()
        self.counts: dict | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name="sessions-health-probe", daemon=True).start()

    def _run(self) -> None:
        try:
            self.counts = _counts(self.now)
        except Exception as exc:  # handed to the waiting requests, which decide
            self.error = exc
        finally:
            connections.close_all()
            self.finished.set()


_lock = threading.Lock()
_latest: _Probe | None = None


def _probe_on_thread(now: datetime, deadline_seconds: float) -> tuple[dict, datetime]:
    global _latest
    with _lock:
        if _latest is None or _latest.finished.is_set():
            _latest = _Probe(now)
        probe = _latest
    if not probe.finished.wait(deadline_seconds):
        raise ProbeTimedOut(f"no answer from the database within {deadline_seconds:g} s")
    if probe.error is not None:
        raise probe.error
    return probe.counts, probe.now


# (monotonic time, counts, the instant they describe) of the last success
_healthy: tuple[float, dict, datetime] | None = None
_monotonic = time.monotonic


def database_stats(*, now: datetime) -> tuple[dict, datetime]:
    """Return ``session_stats`` and the instant they count at.

    That is ``now``, or an earlier instant: a healthy answer at most
    ``SESSIONS_HEALTH_CACHE_MS`` old is reused, and a request that joins a
    probe in flight gets the probe's counts. Raise a ``DatabaseError`` if the
    database fails or is late.
    """
    global _healthy
    reuse_seconds = settings.SESSIONS_HEALTH_CACHE_MS / 1000
    last = _healthy
    if reuse_seconds and last is not None and _monotonic() - last[0] < reuse_seconds:
        return last[1], last[2]
    deadline_ms = settings.SESSIONS_HEALTH_TIMEOUT_MS
    if deadline_ms:
        counts, counted_at = _probe_on_thread(now, deadline_ms / 1000)
    else:
        counts, counted_at = _counts(now), now
    _healthy = (_monotonic(), counts, counted_at)
    return counts, counted_at
