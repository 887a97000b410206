"""Persistent sessions and their timeout configurations (SPEC §1)."""

import uuid
from datetime import datetime

from django.db import models
from django.db.models import Count, F, Q

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
        # least 1 ms left, and at most the threshold (below threshold + 1 ms),
        # that is, the warning window began before now + 1 ms.
        soon = now + policy.ONE_MS
        return Q(expires_at__gte=soon) & Q(warns_at__lt=soon)

    def active(self, now: datetime):
        return self.filter(self.active_q(now))

    def expired(self, now: datetime):
        return self.filter(self.expired_q(now))

    def near_expiration(self, now: datetime):
        return self.filter(self.near_expiration_q(now))

    def stats(self, now: datetime, *, matching: Q | None = None, near_expiration: bool = False) -> dict:
        """Count the sessions by reading every row, in one aggregate query (``COUNT(*) FILTER (...)``).

        What ``sessions_admin.counts`` answers without reading the rows; used
        where a clock is behind the counts' horizon, and as the truth in tests.

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


_COPY_SOURCES = frozenset({"expires_at", "timeout_config", "timeout_config_id"})


class Session(models.Model):
    """A conversation context between one user and one agent."""

    session_id = models.UUIDField("session id", primary_key=True, default=uuid.uuid4, editable=False)
    agent_id = models.UUIDField("agent id")
    user_id = models.UUIDField("user id")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField("created at")
    last_activity = models.DateTimeField("last activity")
    expires_at = models.DateTimeField("expires at")
    # Copies of what the counts need from the timeout configuration, kept right
    # by the database whatever writes the row (migration 0002); null only inside
    # a statement that writes the row on SQLite. warns_at is expires_at minus the
    # warning threshold: near expiration is "expires_at >= now + 1 ms and
    # warns_at < now + 1 ms".
    warns_at = models.DateTimeField("warning starts at", null=True, editable=False)
    auto_renew = models.BooleanField("auto-renew", null=True, editable=False)
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
            # auto_renew last: the counts' range count inside a second reads it from the index.
            models.Index(
                fields=["expires_at", "session_id", "auto_renew"], name="session_expires_keyset"
            ),
            # Filters by agent or user, served in the default order.
            models.Index(fields=["agent_id", "last_activity"], name="session_agent_activity"),
            models.Index(fields=["user_id", "last_activity"], name="session_user_activity"),
            # The counts' range counts inside the current second (sessions_admin.counts),
            # read from the index alone.
            models.Index(fields=["warns_at", "auto_renew"], name="session_warns"),
            models.Index(
                fields=["agent_id", "expires_at", "auto_renew"], name="session_agent_expires"
            ),
            models.Index(fields=["agent_id", "warns_at", "auto_renew"], name="session_agent_warns"),
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

    def save(self, *args, **kwargs):
        """Save, writing ``warns_at`` and ``auto_renew`` with the expiry or the configuration.

        PostgreSQL sets them again in a trigger; SQLite cannot change a row in
        a trigger before it is written, so the values written here are kept
        (a trigger there corrects wrong ones afterwards).
        """
        update_fields = kwargs.get("update_fields")
        if update_fields is None or not _COPY_SOURCES.isdisjoint(update_fields):
            config = self.timeout_config
            self.warns_at = policy.warning_starts_at(
                self.expires_at, config.warning_threshold_minutes
            )
            self.auto_renew = config.auto_renew
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "warns_at", "auto_renew"}
        super().save(*args, **kwargs)

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


class SessionCount(models.Model):
    """One counter of the session counts (``sessions_admin.counts``; docs/COUNTS.md).

    Written only by the database's triggers on the session table, read by the
    counting queries. The table is created by the migrations rather than by
    Django (``managed = False``): ``manage.py flush`` must leave it to the
    triggers, which empty it with the sessions, instead of emptying it on its
    own in between.
    """

    KIND_TOTAL, KIND_EXPIRY, KIND_WARNING, KIND_HORIZON = 0, 1, 2, 3

    pk = models.CompositePrimaryKey("kind", "agent_id", "auto_renew", "level", "bucket", "stripe")
    kind = models.SmallIntegerField()
    # The nil UUID stands for "every agent".
    agent_id = models.UUIDField()
    auto_renew = models.BooleanField()
    # 0: one second, 1: one minute, 2: one hour; 0 for totals.
    level = models.SmallIntegerField()
    # The bucket's start in epoch seconds divided by its width; 0 for totals.
    bucket = models.BigIntegerField()
    stripe = models.SmallIntegerField()
    n = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "sessions_admin_sessioncount"
        verbose_name = "session count"
        verbose_name_plural = "session counts"

    def __str__(self):
        return f"{self.pk}: {self.n}"
