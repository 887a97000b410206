"""Persistent sessions and their timeout configurations (SPEC §1)."""

import uuid
from datetime import datetime

from django.db import models
from django.db.models import Count, F, Func, Q, Value

from sessions_admin import policy


class TimeoutConfig(models.Model):
    """An immutable timeout configuration, shared by every session that uses it.

    Rows are unique on their four values and never edited: changing a
    session's timeout points it at another row (``get_or_create``). The table
    therefore stays as small as the set of distinct configurations in use.
    """

    timeout_minutes = models.PositiveIntegerField("timeout (minutes)")
    auto_renew = models.BooleanField("auto-renew", default=True)
    max_duration_minutes = models.PositiveIntegerField("maximum duration (minutes)")
    warning_threshold_minutes = models.PositiveIntegerField("warning threshold (minutes)")

    class Meta:
        verbose_name = "timeout configuration"
        verbose_name_plural = "timeout configurations"
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "timeout_minutes",
                    "auto_renew",
                    "max_duration_minutes",
                    "warning_threshold_minutes",
                ],
                name="timeoutconfig_unique_values",
            ),
            models.CheckConstraint(
                condition=Q(timeout_minutes__gt=0), name="timeoutconfig_timeout_positive"
            ),
            models.CheckConstraint(
                condition=Q(max_duration_minutes__gte=F("timeout_minutes")),
                name="timeoutconfig_max_duration_covers_timeout",
            ),
            models.CheckConstraint(
                condition=Q(warning_threshold_minutes__gte=1)
                & Q(warning_threshold_minutes__lte=F("timeout_minutes")),
                name="timeoutconfig_warning_within_timeout",
            ),
        ]

    def __str__(self):
        renew = "auto-renew" if self.auto_renew else "no auto-renew"
        return (
            f"{self.timeout_minutes} min timeout, {renew}, "
            f"max {self.max_duration_minutes} min, warn at {self.warning_threshold_minutes} min"
        )

    def as_timeout(self) -> policy.Timeout:
        """Return the configuration as a plain ``policy.Timeout`` value."""
        return policy.Timeout(
            timeout_minutes=self.timeout_minutes,
            auto_renew=self.auto_renew,
            max_duration_minutes=self.max_duration_minutes,
            warning_threshold_minutes=self.warning_threshold_minutes,
        )

    @classmethod
    def for_timeout(cls, timeout: policy.Timeout) -> "TimeoutConfig":
        """Return the stored row for ``timeout``, creating it if needed."""
        config, _ = cls.objects.get_or_create(
            timeout_minutes=timeout.timeout_minutes,
            auto_renew=timeout.auto_renew,
            max_duration_minutes=timeout.max_duration_minutes,
            warning_threshold_minutes=timeout.warning_threshold_minutes,
        )
        return config


class PlusMinutes(Func):
    """``instant + minutes`` where ``minutes`` is an integer column, on PostgreSQL and SQLite.

    Django cannot multiply an integer column by a duration on SQLite, and its
    own date arithmetic there is a Python function called once a row (about
    2 s for the near-expiration count at a million sessions). Adding whole
    minutes leaves the fraction of a second as it is, so the SQLite form adds
    them to the instant's whole seconds with SQLite's own ``datetime()`` and
    appends the fraction: the result is text in the format SQLite stores
    datetimes in (``YYYY-MM-DD HH:MM:SS[.ffffff]``), so comparisons with stored
    values stay exact.
    """

    output_field = models.DateTimeField()

    def __init__(self, instant: datetime, minutes_column: str):
        super().__init__(Value(instant, output_field=models.DateTimeField()), F(minutes_column))

    def as_sql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler, connection, template="(%(expressions)s)", arg_joiner=" + INTERVAL '1 minute' * ",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        instant, minutes = self.get_source_expressions()
        text = connection.ops.adapt_datetimefield_value(instant.value)
        seconds, dot, fraction = text.partition(".")
        minutes_sql, minutes_params = compiler.compile(minutes)
        sql = f"(datetime(%s, ({minutes_sql} * 60) || ' seconds') || %s)"
        return sql, (seconds, *minutes_params, dot + fraction)


def _warning_starts_at(now: datetime):
    """SQL expression for ``now + warning_threshold_minutes`` of each row's config."""
    return PlusMinutes(now, "timeout_config__warning_threshold_minutes")


class SessionQuerySet(models.QuerySet):
    """The query vocabulary for sessions; the boundary rule is written only here."""

    @staticmethod
    def active_q(now: datetime) -> Q:
        return Q(expires_at__gt=now)

    @staticmethod
    def expired_q(now: datetime) -> Q:
        return Q(expires_at__lte=now)

    @staticmethod
    def near_expiration_q(now: datetime) -> Q:
        # In whole milliseconds, as policy.is_near_expiration counts them: at
        # least 1 ms left, and at most the threshold (below threshold + 1 ms).
        soon = now + policy.ONE_MS
        return Q(expires_at__gte=soon) & Q(expires_at__lt=_warning_starts_at(soon))

    def active(self, now: datetime):
        return self.filter(self.active_q(now))

    def expired(self, now: datetime):
        return self.filter(self.expired_q(now))

    def near_expiration(self, now: datetime):
        return self.filter(self.near_expiration_q(now))

    def stats(self, now: datetime, *, matching: Q | None = None, near_expiration: bool = False) -> dict:
        """Count the sessions in one aggregate query (``COUNT(*) FILTER (...)``).

        Returns ``total``, ``active`` and ``expired`` (``total = active +
        expired``); with ``matching`` also the count of rows matching it, and
        with ``near_expiration`` the count of active sessions within their
        warning threshold.
        """
        aggregates = {
            "total": Count("pk"),
            "active": Count("pk", filter=self.active_q(now)),
        }
        if matching is not None:
            aggregates["matching"] = Count("pk", filter=matching)
        if near_expiration:
            aggregates["near_expiration"] = Count("pk", filter=self.near_expiration_q(now))
        counts = self.aggregate(**aggregates)
        counts["expired"] = counts["total"] - counts["active"]
        return counts


class Session(models.Model):
    """A conversation context between one user and one agent."""

    session_id = models.UUIDField("session id", primary_key=True, default=uuid.uuid4, editable=False)
    agent_id = models.UUIDField("agent id")
    user_id = models.UUIDField("user id")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField("created at")
    last_activity = models.DateTimeField("last activity")
    expires_at = models.DateTimeField("expires at")
    renewal_count = models.PositiveIntegerField("renewal count", default=0)
    timeout_config = models.ForeignKey(
        TimeoutConfig,
        on_delete=models.PROTECT,
        related_name="sessions",
        verbose_name="timeout configuration",
    )

    objects = SessionQuerySet.as_manager()

    class Meta:
        verbose_name = "session"
        verbose_name_plural = "sessions"
        indexes = [
            # Keyset pagination: each ordering walks one of these, ties by id.
            models.Index(fields=["last_activity", "session_id"], name="session_activity_keyset"),
            models.Index(fields=["created_at", "session_id"], name="session_created_keyset"),
            models.Index(fields=["expires_at", "session_id"], name="session_expires_keyset"),
            # Filters by agent or user, served in the default order.
            models.Index(fields=["agent_id", "last_activity"], name="session_agent_activity"),
            models.Index(fields=["user_id", "last_activity"], name="session_user_activity"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(expires_at__gte=F("created_at")), name="session_expires_after_creation"
            ),
            models.CheckConstraint(
                condition=Q(last_activity__gte=F("created_at")),
                name="session_activity_after_creation",
            ),
        ]

    def __str__(self):
        return f"Session {self.session_id} (agent {self.agent_id}, user {self.user_id})"

    @property
    def timeout(self) -> policy.Timeout:
        return self.timeout_config.as_timeout()

    def time_remaining_ms(self, *, now: datetime) -> int:
        return policy.time_remaining_ms(self.expires_at, now=now)

    def is_near_expiration(self, *, now: datetime) -> bool:
        return policy.is_near_expiration(
            self.expires_at, self.timeout_config.warning_threshold_minutes, now=now
        )

    def status(self, *, now: datetime) -> str:
        return policy.status_of(
            self.expires_at, self.timeout_config.warning_threshold_minutes, now=now
        )
