"""Reads: listing, counting and fetching sessions. No side effects."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from django.core import signing
from django.db.models import Q

from sessions_admin import counts, policy
from sessions_admin.exceptions import InvalidCursor, SessionExpired, SessionNotFound
from sessions_admin.models import Session, SessionQuerySet

ORDERING_FIELDS = {
    "createdAt": "created_at",
    "lastActivity": "last_activity",
    "expiresAt": "expires_at",
}
ORDERING_CHOICES = [prefix + name for name in ORDERING_FIELDS for prefix in ("", "-")]
DEFAULT_ORDERING = "-lastActivity"
STATUS_CHOICES = ("active", "expired", "all")

_CURSOR_SALT = "sessions_admin.list-cursor"


@dataclass(frozen=True)
class SessionFilters:
    """Filters of the session list; ``None`` means "not filtered"."""

    agent_id: UUID | None = None
    user_id: UUID | None = None
    status: str = "active"
    near_expiration: bool | None = None
    auto_renew: bool | None = None

    def as_q(self, *, now: datetime) -> Q:
        q = Q()
        if self.agent_id is not None:
            q &= Q(agent_id=self.agent_id)
        if self.user_id is not None:
            q &= Q(user_id=self.user_id)
        if self.status == "active":
            q &= SessionQuerySet.active_q(now)
        elif self.status == "expired":
            q &= SessionQuerySet.expired_q(now)
        if self.near_expiration is True:
            q &= SessionQuerySet.near_expiration_q(now)
        elif self.near_expiration is False:
            q &= ~SessionQuerySet.near_expiration_q(now)
        if self.auto_renew is not None:
            q &= Q(auto_renew=self.auto_renew)
        return q


@dataclass(frozen=True)
class Ordering:
    """A list ordering such as ``-lastActivity``; ties are broken by session id."""

    param: str

    def __post_init__(self):
        if self.param not in ORDERING_CHOICES:
            raise ValueError(f"unknown ordering {self.param!r}")

    @property
    def field(self) -> str:
        return ORDERING_FIELDS[self.param.lstrip("-")]

    @property
    def descending(self) -> bool:
        return self.param.startswith("-")

    def order_by(self) -> list[str]:
        sign = "-" if self.descending else ""
        return [sign + self.field, sign + "session_id"]

    def after(self, value: datetime, session_id: UUID) -> Q:
        """Rows strictly after ``(value, session_id)`` in this ordering.

        The redundant ``field <= value`` (or ``>=``) bound lets the database
        start its index scan at the cursor, so a deep page costs what the
        first one does.
        """
        f = self.field
        if self.descending:
            return Q(**{f"{f}__lte": value}) & (
                Q(**{f"{f}__lt": value}) | Q(**{f: value, "session_id__lt": session_id})
            )
        return Q(**{f"{f}__gte": value}) & (
            Q(**{f"{f}__gt": value}) | Q(**{f: value, "session_id__gt": session_id})
        )


@dataclass(frozen=True)
class Cursor:
    """The position after the last row of a page."""

    ordering: str
    value: datetime
    session_id: UUID

    def encode(self) -> str:
        return signing.dumps(
            [self.ordering, self.value.isoformat(), str(self.session_id)], salt=_CURSOR_SALT
        )

    @classmethod
    def decode(cls, token: str, *, ordering: Ordering) -> "Cursor":
        """Decode a ``nextCursor``; tampered, foreign or mismatched cursors raise ``InvalidCursor``."""
        try:
            ordering_param, value, session_id = signing.loads(token, salt=_CURSOR_SALT)
            cursor = cls(ordering_param, datetime.fromisoformat(value), UUID(session_id))
        except (signing.BadSignature, ValueError, TypeError, AttributeError):
            raise InvalidCursor() from None
        if cursor.ordering != ordering.param or cursor.value.tzinfo is None:
            raise InvalidCursor(
                "This cursor belongs to another ordering; restart from the first page"
            )
        return cursor


class TimeoutValues(NamedTuple):
    timeout_minutes: int
    auto_renew: bool
    max_duration_minutes: int
    warning_threshold_minutes: int


class SessionRow(NamedTuple):
    """A listed session: the model's field names, without the cost of a model instance."""

    session_id: UUID
    agent_id: UUID
    user_id: UUID
    metadata: Any
    created_at: datetime
    last_activity: datetime
    expires_at: datetime
    renewal_count: int
    timeout_config: TimeoutValues


_ROW_FIELDS = SessionRow._fields[:-1] + tuple(
    f"timeout_config__{name}" for name in TimeoutValues._fields
)
_CONFIG_START = len(SessionRow._fields) - 1


@dataclass(frozen=True)
class SessionPage:
    sessions: list[SessionRow]
    total: int
    stats: dict
    next_cursor: str | None


def session_stats(*, now: datetime) -> dict:
    """Return the whole store's total, active, expired and near-expiration counts (one query)."""
    tally = counts.session_tally(now=now, near_expiration=True)
    return {
        "total": tally.total,
        "active": tally.active,
        "expired": tally.expired,
        "near_expiration": tally.near_expiration,
    }


def list_count_query(*, now: datetime, filters: SessionFilters) -> counts.TallyQuery:
    """The statement that counts a list request: the whole store and the rows matching ``filters``.

    A user's sessions are few, so with ``userId`` the matching rows are
    counted through the user index; every other mix of filters is read from
    the counts (``sessions_admin.counts``).
    """
    scopes = [counts.Scope()]
    near = set()
    extra = {}
    if filters.user_id is not None:
        extra["matching"] = Session.objects.filter(filters.as_q(now=now))
    else:
        agents = (filters.agent_id,) if filters.agent_id is not None else None
        scopes.append(counts.Scope(agent_ids=agents, auto_renew=filters.auto_renew))
        if filters.near_expiration is not None:
            near.add(scopes[-1])
    return counts.TallyQuery(now=now, scopes=scopes, near_expiration=near, extra=extra)


def list_counts(
    filters: SessionFilters, tallies: list[dict[UUID, counts.Tally]], extra: dict[str, int]
) -> dict:
    """``total``, ``active`` and ``expired`` of the whole store, and ``matching`` ``filters``."""
    store = tallies[0][counts.EVERY_AGENT]
    if "matching" in extra:
        matching = extra["matching"]
    else:
        key = filters.agent_id if filters.agent_id is not None else counts.EVERY_AGENT
        tally = tallies[1].get(key, counts.Tally(0, 0, 0))
        matching = tally.matching(status=filters.status, near_expiration=filters.near_expiration)
    return {
        "total": store.total,
        "active": store.active,
        "expired": store.expired,
        "matching": matching,
    }


def session_list(
    *,
    now: datetime,
    filters: SessionFilters,
    ordering: Ordering,
    limit: int,
    cursor: Cursor | None = None,
) -> SessionPage:
    """Return one page of sessions and the counts, in two queries whatever the page size.

    ``total`` counts every row matching ``filters`` (all pages); ``stats``
    describe the whole store. Both come from one query that reads the counts,
    not the rows (``sessions_admin.counts``).
    """
    tallies, extra = list_count_query(now=now, filters=filters).run()
    queryset = Session.objects.filter(filters.as_q(now=now))
    if cursor is not None:
        queryset = queryset.filter(ordering.after(cursor.value, cursor.session_id))
    values = queryset.order_by(*ordering.order_by()).values_list(*_ROW_FIELDS)[: limit + 1]
    return page_from(list(values), list_counts(filters, tallies, extra), ordering=ordering, limit=limit)


def page_from(values: list[tuple], counts: dict, *, ordering: Ordering, limit: int) -> SessionPage:
    """Assemble a page from the page query's value rows (up to ``limit + 1``) and the counts.

    ``values`` hold ``SessionRow``'s fields in order, the timeout values last;
    ``counts`` are ``list_counts``.
    """
    rows = [SessionRow(*row[:_CONFIG_START], TimeoutValues(*row[_CONFIG_START:])) for row in values]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = Cursor(ordering.param, getattr(last, ordering.field), last.session_id).encode()
    return SessionPage(
        sessions=rows,
        total=counts["matching"],
        stats={
            "totalSessions": counts["total"],
            "activeSessions": counts["active"],
            "expiredSessions": counts["expired"],
        },
        next_cursor=next_cursor,
    )


def session_get(*, session_id: UUID, now: datetime) -> Session:
    """Return an active session; raise ``SessionNotFound`` or ``SessionExpired``."""
    try:
        session = Session.objects.select_related("timeout_config").get(pk=session_id)
    except Session.DoesNotExist:
        raise SessionNotFound(session_id, at=now) from None
    if policy.is_expired(session.expires_at, now=now):
        raise SessionExpired(session.session_id, session.expires_at, at=now)
    return session
