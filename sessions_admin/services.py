"""Writes: every change to a session goes through these functions.

Read-modify-write updates hold the session's row lock (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers), and
the clock is read once the lock is held, so concurrent activity on one
session is applied one after another and each extension counts.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.db.models import Case, DateTimeField, F, Value, When
from django.db.models.functions import Greatest

from sessions_admin import policy
from sessions_admin.exceptions import (
    InvalidTimeout,
    SessionError,
    SessionExpired,
    SessionNotFound,
    SessionRenewalFailed,
)
from sessions_admin.models import Session, TimeoutConfig
from sessions_admin.pruning import retry_if_config_pruned
from sessions_admin.pruning import session_prune_expired as session_prune_expired


def _validated(timeout: policy.Timeout, *, now: datetime) -> policy.Timeout:
    problems = policy.timeout_violations(timeout)
    if problems:
        field, message = problems[0]
        raise InvalidTimeout(field, message, at=now)
    return timeout


def _locked_session(session_id: UUID) -> Session:
    # The row is locked on its own, then its configuration read. Joined in the
    # locking query, a request that waited for the lock would lose the session
    # when the writer before it had moved it to another configuration row (a
    # PATCH): PostgreSQL re-checks the join on the updated row, finds the old
    # configuration no longer matches, and returns nothing.
    try:
        session = Session.objects.select_for_update().get(pk=session_id)
    except Session.DoesNotExist:
        raise SessionNotFound(session_id) from None
    # Configuration rows never change, so reading it after the lock is consistent.
    session.timeout_config = TimeoutConfig.objects.get(pk=session.timeout_config_id)
    return session


def _ensure_active(session: Session, *, now: datetime) -> None:
    if policy.is_expired(session.expires_at, now=now):
        raise SessionExpired(session.session_id, session.expires_at, at=now)


@retry_if_config_pruned
def session_create(
    *,
    agent_id: UUID,
    user_id: UUID,
    metadata: dict | None = None,
    timeout: policy.Timeout | None = None,
    now: datetime,
) -> Session:
    """Create a session that starts at ``now``."""
    timeout = _validated(timeout or policy.default_timeout(), now=now)
    config = TimeoutConfig.for_timeout(timeout)
    return Session.objects.create(
        agent_id=agent_id,
        user_id=user_id,
        metadata=metadata if metadata is not None else {},
        created_at=now,
        last_activity=now,
        expires_at=policy.expiry_for(now, timeout, now=now),
        renewal_count=0,
        timeout_config=config,
    )


def _apply_activity(session: Session, *, now: datetime, force_renew: bool) -> list[str]:
    """Apply activity at ``now`` to a locked session in memory; return the fields it changed.

    Raises ``SessionExpired``, or ``SessionRenewalFailed`` when a forced
    renewal cannot extend the expiry because it is at the cap; the session is
    then left as it was. A renewal that finds the expiry already where it
    would put it (another one in the same millisecond) changes only
    ``lastActivity``.
    """
    _ensure_active(session, now=now)
    timeout = session.timeout
    new_expiry = None
    if force_renew or timeout.auto_renew:
        new_expiry = policy.renewed_expiry(session.created_at, session.expires_at, timeout, now=now)
    at_cap = session.expires_at >= policy.cap_for(session.created_at, timeout)
    if force_renew and new_expiry is None and at_cap:
        raise SessionRenewalFailed(
            session.session_id, "the maximum session duration has been reached", at=now
        )
    # The lock orders writers; max() keeps lastActivity monotonic all the same.
    session.last_activity = max(now, session.last_activity)
    fields = ["last_activity"]
    if new_expiry is not None:
        session.expires_at = new_expiry
        session.renewal_count += 1
        fields += ["expires_at", "renewal_count"]
    return fields


def _record_activity(session_id: UUID, *, force_renew: bool) -> tuple[Session, datetime]:
    with transaction.atomic():
        session = _locked_session(session_id)
        now = policy.clock()
        fields = _apply_activity(session, now=now, force_renew=force_renew)
        session.save(update_fields=fields)
    return session, now


def session_heartbeat(*, session_id: UUID) -> tuple[Session, datetime]:
    """Record activity; auto-renew if enabled and it extends the expiry. Returns the session and ``now``."""
    return _record_activity(session_id, force_renew=False)


def session_renew(*, session_id: UUID) -> tuple[Session, datetime]:
    """Renew manually whatever ``autoRenew`` says; fails at the maximum-duration cap."""
    return _record_activity(session_id, force_renew=True)


def _values_of(sessions: list[Session], field_name: str):
    """An expression that gives each of ``sessions`` its own ``field_name`` in one ``UPDATE``.

    Sessions that share a value share one ``WHEN``: a renewal gives most of a
    selection the same ``lastActivity`` and, per timeout, the same expiry.
    """
    field = Session._meta.get_field(field_name)
    ids_by_value = defaultdict(list)
    for session in sessions:
        ids_by_value[getattr(session, field_name)].append(session.pk)
    if len(ids_by_value) == 1:
        (value,) = ids_by_value
        return Value(value, output_field=field)
    return Case(
        *(
            When(pk__in=ids, then=Value(value, output_field=field))
            for value, ids in ids_by_value.items()
        ),
        output_field=field,
    )


def session_renew_many(
    *, session_ids: Iterable[UUID]
) -> tuple[list[Session], Counter[type[SessionError]], datetime]:
    """Renew each of the given sessions as ``session_renew`` would, all in one transaction.

    Returns the sessions whose expiry it extended (one renewed already in
    the same millisecond gets only its ``lastActivity``), how many were
    refused counted by the error ``session_renew`` would have raised for them
    (``SessionNotFound``, ``SessionExpired``, ``SessionRenewalFailed``), and
    the instant. A constant number of queries, however many sessions are
    given; each id is a query parameter (up to three times), so it is meant
    for a selection such as the admin's, not for the whole table.
    """
    session_ids = set(session_ids)
    refused = Counter()
    with transaction.atomic():
        # In id order, so that two bulk renewals cannot deadlock; the
        # configurations are read after the locks, for _locked_session's reason.
        sessions = list(
            Session.objects.select_for_update()
            .filter(pk__in=session_ids)
            .defer("metadata")  # up to 10 KB a row, and not needed to renew it
            .order_by("pk")
        )
        configs = TimeoutConfig.objects.in_bulk({s.timeout_config_id for s in sessions})
        now = policy.clock()
        touched, renewed = [], []
        for session in sessions:
            session.timeout_config = configs[session.timeout_config_id]
            try:
                changed = _apply_activity(session, now=now, force_renew=True)
            except (SessionExpired, SessionRenewalFailed) as refusal:
                refused[type(refusal)] += 1
                continue
            touched.append(session)
            if "expires_at" in changed:  # not when renewed already in this millisecond
                renewed.append(session)
        if touched:
            Session.objects.filter(pk__in=[s.pk for s in touched]).update(
                last_activity=_values_of(touched, "last_activity"),
                expires_at=_values_of(touched, "expires_at"),
                # As counted above (the rows are locked): one more if extended.
                renewal_count=_values_of(touched, "renewal_count"),
            )
    if len(sessions) < len(session_ids):
        refused[SessionNotFound] = len(session_ids) - len(sessions)
    return renewed, refused, now


@retry_if_config_pruned
def session_update_timeout(*, session_id: UUID, changes: dict) -> tuple[Session, datetime]:
    """Replace the given timeout fields, keep the rest, and recompute the expiry from ``now``.

    ``changes`` uses ``policy.Timeout`` field names. ``renewalCount`` and
    ``lastActivity`` are left as they are.
    """
    with transaction.atomic():
        session = _locked_session(session_id)
        now = policy.clock()
        _ensure_active(session, now=now)
        timeout = _validated(session.timeout.with_changes(**changes), now=now)
        if policy.cap_for(session.created_at, timeout) <= now:
            raise SessionRenewalFailed(
                session.session_id,
                "the new maximum duration ends before now; delete the session to end it",
                at=now,
            )
        session.timeout_config = TimeoutConfig.for_timeout(timeout)
        session.expires_at = policy.expiry_for(session.created_at, timeout, now=now)
        session.save(update_fields=["timeout_config", "expires_at"])
    return session, now


def session_delete(*, session_id: UUID) -> None:
    """Delete a session, expired or not; raise ``SessionNotFound`` if there is none."""
    deleted, _ = Session.objects.filter(pk=session_id).delete()
    if not deleted:
        raise SessionNotFound(session_id)


def session_delete_many(*, session_ids: Iterable[UUID]) -> int:
    """Delete the given sessions, expired or not, in one statement; return how many existed."""
    _, per_model = Session.objects.filter(pk__in=list(session_ids)).delete()
    return per_model.get(Session._meta.label, 0)


def session_expire_now(*, session_ids: Iterable[UUID]) -> tuple[list[Session], int, datetime]:
    """End those of the given sessions that are still active.

    Return the sessions ended, how many of the others exist (already expired:
    the rest were deleted), and the instant.

    The rows are locked before the clock is read: a session created, or a
    heartbeat committed, while the caller was choosing them is never given an
    expiry before its creation or its last activity. A session created at a
    later instant than ``now`` all the same (by a server whose clock runs
    ahead of this one's) ends at its creation, as the database requires.
    """
    with transaction.atomic():
        sessions = list(
            Session.objects.select_for_update()
            .filter(pk__in=list(session_ids))
            .defer("metadata")  # up to 10 KB a row, and not needed to end it
            .order_by("pk")
        )
        now = policy.clock()
        ended = [s for s in sessions if not policy.is_expired(s.expires_at, now=now)]
        Session.objects.filter(pk__in=[s.pk for s in ended]).update(
            expires_at=Greatest(Value(now, output_field=DateTimeField()), F("created_at"))
        )
    for session in ended:
        session.expires_at = max(now, session.created_at)
    return ended, len(sessions) - len(ended), now
