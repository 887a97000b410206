"""Per-client rate limiting for the API (429 ``RATE_LIMITED`` with ``Retry-After``).

One fixed-window counter per client in the default cache: Redis when
``REDIS_URL`` is set, so every gunicorn worker shares the count; local memory
otherwise (then each worker counts on its own). ``cache.incr`` is atomic on
Redis, so concurrent requests cannot slip past the limit the way a
read-modify-write history list can.
"""

import functools
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication
from rest_framework.throttling import BaseThrottle

from messaging_project.env import parse_rate
from sessions_admin.cache_guard import CacheUnavailable, cache_in_use

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _parsed(rate: str) -> tuple[int, int]:
    return parse_rate(rate)


class ClientRateThrottle(BaseThrottle):
    """Allow ``SESSIONS_THROTTLE_RATE`` requests per client and period; ``None`` disables it.

    A client is a signed-in Django user, or else the caller's IP address
    (``REMOTE_ADDR``, or the ``X-Forwarded-For`` entry that DRF's
    ``NUM_PROXIES`` designates behind trusted proxies). API-key callers are
    told apart by address: the keys are shared secrets, not identities.
    """

    cache_prefix = "throttle:sessions"
    timer = staticmethod(time.time)

    def __init__(self):
        self.wait_seconds: float | None = None

    def client_ident(self, request) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and getattr(user, "pk", None) is not None:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"

    def allow_request(self, request, view) -> bool:
        rate = getattr(settings, "SESSIONS_THROTTLE_RATE", None)
        if not rate:
            return True
        limit, period = _parsed(rate)
        now = self.timer()
        window = int(now // period)
        key = f"{self.cache_prefix}:{self.client_ident(request)}:{window}"
        try:
            with cache_in_use("Rate limiting suspended", logger):
                count = self._count(key, timeout=period + 1)
        except CacheUnavailable:  # fail open: an outage of the cache is not one of the API
            return True
        if count <= limit:
            return True
        self.wait_seconds = (window + 1) * period - now
        return False

    @staticmethod
    def _count(key: str, *, timeout: int) -> int:
        """Increment the window's counter, creating it on the window's first request."""
        try:
            return cache.incr(key)
        except ValueError:  # no counter yet for this window
            if cache.add(key, 1, timeout=timeout):
                return 1
            return cache.incr(key)  # another request created it first

    def wait(self) -> float | None:
        return self.wait_seconds


class ThrottleBeforePermissions:
    """A view mixin: the rate limit is checked before the permissions, not after.

    DRF checks permissions first, so a caller refused with 401 or 403 (a
    wrong or missing key, say) was never counted: keys could be tried, and
    the refusals served, without limit.
    """

    def perform_authentication(self, request):
        # Credentials refused while they are read (a malformed Authorization
        # header, a missing CSRF token) count too, as the anonymous caller.
        try:
            super().perform_authentication(request)
        except exceptions.APIException:
            super().check_throttles(request)
            raise

    def check_permissions(self, request):
        super().check_throttles(request)
        super().check_permissions(request)

    def check_throttles(self, request):
        """Checked by ``check_permissions``, before them."""


class SignInFailures:
    """Failed sign-ins from one client address in the current ``SESSIONS_AUTH_FAILURE_RATE`` window.

    HTTP Basic on the API and the admin's sign-in page share the count, so an
    address has one budget of password guesses whichever door it tries.
    """

    cache_prefix = "throttle:auth-failures"

    def __init__(self, request):
        rate = getattr(settings, "SESSIONS_AUTH_FAILURE_RATE", None)
        self.limit: int | None = None
        if rate:
            self.limit, period = _parsed(rate)
            self.period = period
            self.now = ClientRateThrottle.timer()
            window = int(self.now // period)
            self.key = f"{self.cache_prefix}:{BaseThrottle().get_ident(request)}:{window}"
            self.window_end = (window + 1) * period

    def wait(self) -> float | None:
        """Seconds until this address may try again, or ``None`` if it may try now."""
        if self.limit is None:
            return None
        try:
            with cache_in_use("Could not check failed sign-ins", logger):
                failures = cache.get(self.key, 0)
        except CacheUnavailable:  # let the sign-in go ahead
            return None
        return self.window_end - self.now if failures >= self.limit else None

    def record(self) -> None:
        if self.limit is None:
            return
        try:
            with cache_in_use("Could not record a failed sign-in", logger):
                ClientRateThrottle._count(self.key, timeout=self.period + 1)
        except CacheUnavailable:
            pass


class ThrottledBasicAuthentication(BasicAuthentication):
    """HTTP Basic whose failed attempts are limited per client address.

    Every attempt costs a password hash (about half a second of CPU here), and
    DRF checks throttles only after authentication: without this limit anyone
    could guess passwords, or keep every worker busy hashing, unthrottled.
    After ``SESSIONS_AUTH_FAILURE_RATE`` failures from one address, its Basic
    attempts answer 429 without hashing until the window ends.
    """

    def authenticate_credentials(self, userid, password, request=None):
        if request is None:
            return self._check(userid, password, request)
        failures = SignInFailures(request)
        wait = failures.wait()
        if wait is not None:
            raise exceptions.Throttled(wait=wait)
        try:
            return self._check(userid, password, request)
        except exceptions.AuthenticationFailed:
            failures.record()
            raise

    def _check(self, userid, password, request):
        if "\x00" in userid:
            # No username holds NUL, and PostgreSQL refuses it in a query (a 500).
            raise exceptions.AuthenticationFailed(_("Invalid username/password."))
        return super().authenticate_credentials(userid, password, request)


class ThrottledBasicScheme(OpenApiAuthenticationExtension):
    """Document ``ThrottledBasicAuthentication`` as plain HTTP Basic in the OpenAPI schema."""

    target_class = ThrottledBasicAuthentication
    name = "basicAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "basic",
            "description": (
                "A staff user, holding the session permission each operation names "
                "(view_session, add_session, change_session or delete_session)"
            ),
        }
