"""Django's database session store, refusing session keys it could never have issued."""

from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_ISSUED_CHARS = frozenset(VALID_KEY_CHARS)


class SessionStore(DatabaseSessionStore):
    """A cookie whose key holds other characters (a NUL, say) starts an empty session.

    Django looks any key up as given; PostgreSQL answers a NUL in a query with
    an error, which became a 500 for whoever sent such a cookie.
    """

    def _validate_session_key(self, key):
        return super()._validate_session_key(key) and _ISSUED_CHARS.issuperset(key)
