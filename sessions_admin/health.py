"""The health probe: the database's counts, or an error within a deadline.

libpq will not give up on a connection attempt in less than 2 s, and a query on
an open connection to a host that stopped answering waits for TCP to notice.
So, unless ``SESSIONS_HEALTH_TIMEOUT_MS`` is 0, the probe runs on a short-lived
daemon thread with its own connection, and the request stops waiting for it at
the deadline. A probe left behind ends with its connection attempt; it holds
nothing the request needs.
"""

import threading
from datetime import datetime

from django.conf import settings
from django.db import OperationalError, connections

from sessions_admin import selectors


class ProbeTimedOut(OperationalError):
    """The database did not answer the health probe in time."""


def _probe_on_thread(now: datetime, deadline_seconds: float) -> dict:
    outcome: dict = {}
    finished = threading.Event()

    def probe():
        try:
            outcome["counts"] = selectors.session_stats(now=now)
        except Exception as exc:  # handed to the request thread, which decides
            outcome["error"] = exc
        finally:
            connections.close_all()
            finished.set()

    threading.Thread(target=probe, name="sessions-health-probe", daemon=True).start()
    if not finished.wait(deadline_seconds):
        raise ProbeTimedOut(f"no answer from the database within {deadline_seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["counts"]


def database_stats(*, now: datetime) -> dict:
    """Return ``session_stats`` at ``now``; raise a ``DatabaseError`` if the database fails or is late."""
    deadline_ms = settings.SESSIONS_HEALTH_TIMEOUT_MS
    if not deadline_ms:
        return selectors.session_stats(now=now)
    return _probe_on_thread(now, deadline_ms / 1000)
