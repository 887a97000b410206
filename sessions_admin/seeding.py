"""Demo data: bulk-insert realistic sessions (``manage.py seed_sessions``).

Every generated row obeys the timing rules of SPEC §2 as if the service had
created it and received its heartbeats: ``createdAt <= lastActivity <
expiresAt <= createdAt + maxDuration``; with auto-renew, ``expiresAt =
min(lastActivity + timeout, cap)``; a session never renewed expires at
``createdAt + timeout``. Offsets are computed in whole milliseconds from one
``now`` and only turned into datetimes when a row is written.
"""

import json
import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction

from sessions_admin import counts, policy
from sessions_admin.models import Session, TimeoutConfig

DEFAULT_EXPIRED_FRACTION = 0.2
DEFAULT_BATCH_SIZE = 5000
# Ten times the benchmarks' million rows: minutes of loading and a few GB on
# disk, while the load holds its lock on the table. Beyond that is a typo.
MAX_COUNT = 10_000_000
# A batch is held in memory (as model instances on SQLite); larger ones save nothing.
MAX_BATCH_SIZE = 100_000
MAX_DEFAULT_AGENTS = 20
MAX_DEFAULT_USERS = 10_000

# (timeout, weight): the default configuration dominates, as it would in use.
# A configuration the current SESSION_* limits reject is skipped.
SEED_TIMEOUTS = (
    (policy.Timeout(30, True, 720, 5), 40),
    (policy.Timeout(30, False, 720, 5), 10),
    (policy.Timeout(15, True, 240, 3), 10),
    (policy.Timeout(60, True, 1440, 10), 10),
    (policy.Timeout(60, False, 180, 10), 5),
    (policy.Timeout(120, True, 480, 15), 8),
    (policy.Timeout(5, True, 60, 1), 5),
    (policy.Timeout(1440, True, 20160, 60), 7),
    # maxDuration == timeout: such a session can never be extended.
    (policy.Timeout(45, False, 45, 5), 5),
)

METADATA_SAMPLES = (
    {},
    {"channel": "web", "locale": "en-US"},
    {"channel": "web", "locale": "fr-FR", "plan": "pro"},
    {"channel": "discord", "guild": "community"},
    {"channel": "telegram", "locale": "de-DE"},
    {"channel": "slack", "workspace": "acme", "tags": ["support", "billing"]},
    {"channel": "api", "client": "mobile", "appVersion": "2.4.1"},
)

MINUTE_MS = 60_000
# Expired sessions ended up to a week before ``now``.
EXPIRED_HORIZON_MS = 7 * 24 * 60 * MINUTE_MS
# Share of renewable sessions whose expiry has reached the maximum-duration cap.
CAPPED_SHARE = 0.05
# Share of sessions without auto-renew that were renewed by hand.
MANUALLY_RENEWED_SHARE = 0.15
HEARTBEAT_INTERVALS_MS = (1 * MINUTE_MS, 2 * MINUTE_MS, 5 * MINUTE_MS, 10 * MINUTE_MS)
# From this many rows (and at least as many as the table holds), PostgreSQL
# rebuilds the secondary indexes after the load instead of updating them row
# by row: random keys in six indexes otherwise make the load several times slower.
INDEX_REBUILD_MIN_ROWS = 100_000


@dataclass(frozen=True)
class SeedResult:
    created: int
    expired: int


def seed_timeouts() -> list[tuple[policy.Timeout, int]]:
    """Return the weighted timeout configurations valid under the current limits."""
    valid = [
        (timeout, weight)
        for timeout, weight in SEED_TIMEOUTS
        if not policy.timeout_violations(timeout)
    ]
    default = policy.default_timeout()
    if all(timeout != default for timeout, _ in valid):
        valid.append((default, 40))
    return valid


def default_agents(count: int) -> int:
    return min(count, MAX_DEFAULT_AGENTS)


def default_users(count: int) -> int:
    return max(1, min(MAX_DEFAULT_USERS, count // 10))


def expired_count_for(count: int, expired_fraction: float) -> int:
    """Return how many of ``count`` sessions a fraction makes expired (rounded half up)."""
    return int(count * expired_fraction + 0.5)


def _uuid4_hex(bits: int) -> str:
    """Return random ``bits`` as a version-4 UUID in 32 hex digits."""
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)
    return f"{bits:032x}"


UUID4_RANDOM_BITS = 122
_RANDOM_MASK = (1 << UUID4_RANDOM_BITS) - 1


class DerivedIds(Sequence[str]):
    """``length`` distinct, random-looking version-4 UUIDs (32 hex digits), made from their index.

    Nothing is stored: ten million users cost no more memory than one. Each id
    is a bijection of its index over the 122 random bits of a UUID4 (add, then
    rounds of xor-shift and odd multiplication, all invertible), keyed by ``rng``.
    """

    def __init__(self, length: int, rng: random.Random):
        self._length = length
        self._offset = rng.getrandbits(UUID4_RANDOM_BITS)
        self._multipliers = tuple(rng.getrandbits(UUID4_RANDOM_BITS) | 1 for _ in range(2))

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("id index out of range")
        bits = (index + self._offset) & _RANDOM_MASK
        for multiplier in self._multipliers:
            bits ^= bits >> 61
            bits = (bits * multiplier) & _RANDOM_MASK
        bits ^= bits >> 61
        # Around the version (4) and variant (0b10) bits, which stay fixed.
        low, middle, high = bits & ((1 << 62) - 1), (bits >> 62) & 0xFFF, bits >> 74
        return f"{high << 80 | 0x4 << 76 | middle << 64 | 0b10 << 62 | low:032x}"


def _session_offsets(
    *,
    count: int,
    expired: int,
    agent_ids: Sequence[str],
    user_ids: Sequence[str],
    configs: list[tuple[int, policy.Timeout]],
    rng: random.Random,
) -> Iterator[tuple]:
    """Yield ``(session_id, agent_id, user_id, metadata_index, created_ms, last_activity_ms,
    expires_ms, renewal_count, config_pk)``, times in milliseconds relative to ``now``.

    Exactly ``expired`` rows have ``expires_ms <= 0``, spread evenly over the run.
    The first rows use each agent and user once, so all of them appear.
    """
    r = rng.random
    getrandbits = rng.getrandbits
    n_agents, n_users = len(agent_ids), len(user_ids)
    n_configs, n_metadata = len(configs), len(METADATA_SAMPLES)
    n_intervals = len(HEARTBEAT_INTERVALS_MS)
    config_ms = [
        (pk, t.timeout_minutes * MINUTE_MS, t.max_duration_minutes * MINUTE_MS, t.auto_renew)
        for pk, t in configs
    ]
    for i in range(count):
        agent = agent_ids[i] if i < n_agents else agent_ids[int(r() * n_agents)]
        user = user_ids[i] if i < n_users else user_ids[int(r() * n_users)]
        pk, timeout, max_duration, auto_renew = config_ms[int(r() * n_configs)]
        interval = HEARTBEAT_INTERVALS_MS[int(r() * n_intervals)]
        # Bresenham-style spreading: exactly ``expired`` of ``count`` rows.
        if (i * expired) // count != ((i + 1) * expired) // count:
            expires = -int(r() * EXPIRED_HORIZON_MS)
        else:
            # Uniform over the timeout: a warning/timeout share lands near expiration.
            expires = 1 + int(r() * timeout)
        latest_activity = min(expires - 1, 0)

        if max_duration == timeout or r() < CAPPED_SHARE:
            # The expiry is the cap; reaching it (when maxDuration > timeout)
            # took a renewal at ``renewed`` >= cap - timeout.
            created = expires - max_duration
            renewed = created if max_duration == timeout else expires - timeout
            last = renewed + int(r() * (latest_activity - renewed + 1))
            renewals = 0 if max_duration == timeout else 1 + (renewed - created) // interval
        elif auto_renew or r() < MANUALLY_RENEWED_SHARE:
            # The last activity renewed the session to lastActivity + timeout.
            last = expires - timeout
            span = int(r() * r() * (max_duration - timeout))
            created = last - span
            renewals = 0 if span == 0 else 1 + span // interval
        else:
            # Never renewed: expires timeout after creation, activity before that.
            created = expires - timeout
            last = created + int(r() * (latest_activity - created + 1))
            renewals = 0
        yield (
            _uuid4_hex(getrandbits(128)),
            agent,
            user,
            int(r() * n_metadata),
            created,
            last,
            expires,
            renewals,
            pk,
        )


def _batches(rows: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def _secondary_indexes_rebuilt(cursor):
    """Drop the table's plain indexes, and recreate them (same definitions) on exit.

    Must run inside a transaction: a failure rolls the drop back. The primary
    key and the indexes behind constraints stay, so duplicates are still caught.
    """
    cursor.execute(
        """
        SELECT x.indexrelid::regclass::text, pg_get_indexdef(x.indexrelid)
        FROM pg_index x
        WHERE x.indrelid = %s::regclass AND NOT x.indisprimary AND NOT x.indisunique
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        """,
        [Session._meta.db_table],
    )
    indexes = cursor.fetchall()
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    yield
    # Django's foreign keys are deferred; their pending checks must run before CREATE INDEX.
    connection.check_constraints()
    for _, definition in indexes:
        cursor.execute(definition)


def _copy_postgresql(
    batches: Iterator[list[tuple]], *, count: int, now: datetime, on_progress
) -> None:
    """Stream the rows through one ``COPY ... FROM STDIN`` (psycopg 3).

    A large load into a smaller table rebuilds the secondary indexes once at
    the end; the table is locked against other writers and readers meanwhile.
    """
    metadata = [json.dumps(sample, separators=(",", ":")) for sample in METADATA_SAMPLES]
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(Session._meta.get_field(name).column)
        for name in (
            "session_id",
            "agent_id",
            "user_id",
            "metadata",
            "created_at",
            "last_activity",
            "expires_at",
            "renewal_count",
            "timeout_config",
        )
    )
    statement = f"COPY {quote(Session._meta.db_table)} ({columns}) FROM STDIN"
    ms = timedelta(milliseconds=1)
    done = 0
    with connection.cursor() as cursor:
        stored = counts.session_tally(now=now).total
        rebuild = count >= INDEX_REBUILD_MIN_ROWS and count >= stored
        with _secondary_indexes_rebuilt(cursor) if rebuild else nullcontext():
            with cursor.copy(statement) as copy:
                write_row = copy.write_row
                for batch in batches:
                    for sid, agent, user, meta, created, last, expires, renewals, pk in batch:
                        write_row(
                            (
                                sid,
                                agent,
                                user,
                                metadata[meta],
                                now + created * ms,
                                now + last * ms,
                                now + expires * ms,
                                renewals,
                                pk,
                            )
                        )
                    done += len(batch)
                    if on_progress:
                        on_progress(done)


def _bulk_create(batches: Iterator[list[tuple]], *, count: int, now: datetime, on_progress) -> None:
    """Insert the rows with ``bulk_create``, one batch at a time (SQLite).

    ``warns_at`` and ``auto_renew`` are written with each row, as ``Session.save`` would.
    """
    ms = timedelta(milliseconds=1)
    configs = TimeoutConfig.objects.in_bulk()
    done = 0
    for batch in batches:
        Session.objects.bulk_create(
            [
                Session(
                    session_id=uuid.UUID(sid),
                    agent_id=uuid.UUID(agent),
                    user_id=uuid.UUID(user),
                    metadata=METADATA_SAMPLES[meta],
                    created_at=now + created * ms,
                    last_activity=now + last * ms,
                    expires_at=now + expires * ms,
                    warns_at=policy.warning_starts_at(
                        now + expires * ms, configs[pk].warning_threshold_minutes
                    ),
                    auto_renew=configs[pk].auto_renew,
                    renewal_count=renewals,
                    timeout_config_id=pk,
                )
                for sid, agent, user, meta, created, last, expires, renewals, pk in batch
            ]
        )
        done += len(batch)
        if on_progress:
            on_progress(done)


def session_seed(
    *,
    count: int,
    now: datetime,
    expired_fraction: float = DEFAULT_EXPIRED_FRACTION,
    agents: int | None = None,
    users: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rng: random.Random | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Insert exactly ``count`` demo sessions as seen at ``now``, in one transaction.

    All or nothing: a database error at any step rolls the whole load back.

    ``expired_fraction`` of them (rounded) are expired; the rest are active,
    some within their warning threshold. ``agents`` and ``users`` distinct ids
    are spread over the sessions. ``on_progress(done)`` is called after each
    batch. PostgreSQL streams the rows with ``COPY``; other databases use
    ``bulk_create``. The database's triggers count the new rows
    (``sessions_admin.counts``): one aggregate for the whole ``COPY``.
    """
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 1 and {MAX_COUNT}")
    if not 0 <= expired_fraction <= 1:
        raise ValueError("expired_fraction must be between 0 and 1")
    agents = default_agents(count) if agents is None else agents
    users = default_users(count) if users is None else users
    if not (1 <= agents <= count and 1 <= users <= count):
        raise ValueError("agents and users must be between 1 and count")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    rng = rng or random.Random()
    expired = expired_count_for(count, expired_fraction)
    with transaction.atomic():
        # Rows that expired over an hour before now change only the totals.
        counts.session_counts_advance_horizon(now=now)
        configs = [
            (TimeoutConfig.for_timeout(timeout).pk, timeout)
            for timeout, weight in seed_timeouts()
            for _ in range(weight)
        ]
        rows = _session_offsets(
            count=count,
            expired=expired,
            agent_ids=DerivedIds(agents, rng),
            user_ids=DerivedIds(users, rng),
            configs=configs,
            rng=rng,
        )
        insert = _copy_postgresql if connection.vendor == "postgresql" else _bulk_create
        insert(_batches(rows, batch_size), count=count, now=now, on_progress=on_progress)
        if connection.vendor == "postgresql":
            # Fresh planner statistics, so the list's index choices fit the new data.
            # Inside the transaction (ANALYZE counts its own uncommitted rows), so
            # that an error at any step leaves nothing behind.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {connection.ops.quote_name(Session._meta.db_table)}")
    return SeedResult(created=count, expired=expired)
