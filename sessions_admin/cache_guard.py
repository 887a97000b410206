"""Use of the default cache (Redis when ``REDIS_URL`` is set) that never turns its outage into ours.

The rate limit, the sign-in limit and the admin's summary all keep state in
the cache, and all can do without it. A Redis that refuses connections fails
fast, but one that accepts them and never answers costs a socket timeout
(``REDIS_TIMEOUT_MS``) on every use: a sign-in, which reads and counts
failures, and an admin page would each pay it. So after any failure the
cache is left alone, by every user, for ``CACHE_RETRY_SECONDS`` in this
process, and the failure is logged once.
"""

import contextlib
import logging
import threading
import time

# How long the cache is left alone after it failed.
CACHE_RETRY_SECONDS = 5.0


class CacheUnavailable(Exception):
    """The cache failed just now, or did a moment ago: do without it."""


class _Outage:
    clock = staticmethod(time.monotonic)
    until = 0.0
    lock = threading.Lock()


def reset() -> None:
    """Forget a past failure: the next use tries the cache again."""
    _Outage.until = 0.0


@contextlib.contextmanager
def cache_in_use(what: str, log: logging.Logger):
    """Run a block that uses the cache; raise ``CacheUnavailable`` instead of any cache error.

    On a failure, ``log`` gets one warning naming ``what`` could not be done,
    and until ``CACHE_RETRY_SECONDS`` have passed every block raises at once,
    without touching the cache.
    """
    if _Outage.clock() < _Outage.until:
        raise CacheUnavailable
    try:
        yield
    except Exception as exc:  # any cache backend error
        with _Outage.lock:
            already_down = _Outage.clock() < _Outage.until
            _Outage.until = _Outage.clock() + CACHE_RETRY_SECONDS
        if not already_down:
            log.warning(
                "%s: cache unavailable, not used for %.0f s: %s", what, CACHE_RETRY_SECONDS, exc
            )
        raise CacheUnavailable from exc
