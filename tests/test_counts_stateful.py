"""The counts under random sequences of every kind of write and clock moves (both databases).

After each step, every count the API, the admin and health show must be what
the rows say at that instant, counted here in Python with the timing rules of
``policy`` (not with SQL): the list's ``total`` under each mix of filters and its
``stats``, the admin's summary and list count, health's counts.
"""

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.db.models.functions import Greatest
from django.test import Client
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from rest_framework.test import APIClient

from sessions_admin import counts, policy
from sessions_admin.models import Session, SessionCount, TimeoutConfig
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.django_db

BASE = "/api/messaging/sessions"
CHANGELIST = "/admin/sessions_admin/session/"
AGENTS = [
    uuid.UUID("11111111-1111-4111-8111-111111111111"),
    uuid.UUID("22222222-2222-4222-8222-222222222222"),
    uuid.UUID("33333333-3333-4333-8333-333333333333"),
]
USERS = [
    uuid.UUID("44444444-4444-4444-8444-444444444444"),
    uuid.UUID("55555555-5555-4555-8555-555555555555"),
]
CONFIGS = [
    {"timeoutMinutes": 5, "autoRenew": True, "maxDurationMinutes": 60, "warningThresholdMinutes": 1},
    {"timeoutMinutes": 30, "autoRenew": False, "maxDurationMinutes": 45,
     "warningThresholdMinutes": 5},
    {"timeoutMinutes": 60, "autoRenew": True, "maxDurationMinutes": 1440,
     "warningThresholdMinutes": 10},
]
# Half a second before an hour's edge: the first steps cross a second, a minute and an hour.
START = datetime(2026, 11, 27, 9, 59, 59, 500_000, tzinfo=UTC)
CLOCK_STEPS = [
    timedelta(milliseconds=1), timedelta(milliseconds=499), timedelta(seconds=1),
    timedelta(seconds=1, milliseconds=500), timedelta(seconds=59), timedelta(seconds=61),
    timedelta(minutes=4, seconds=30), timedelta(minutes=59), timedelta(minutes=61),
]
STATUSES = ["active", "expired", "all"]
FLAGS = [None, True, False]
SCOPES = [counts.Scope(agent_ids=agents, auto_renew=renew)
          for agents in (None, (AGENTS[0],)) for renew in FLAGS]


def truth(rows, now, *, agent=None, user=None, status="all", near=None, auto_renew=None) -> int:
    """Count ``rows`` matching the list's filters at ``now``, by the rules of ``policy``."""
    total = 0
    for row in rows:
        if agent is not None and row["agent_id"] != agent:
            continue
        if user is not None and row["user_id"] != user:
            continue
        if auto_renew is not None and row["timeout_config__auto_renew"] != auto_renew:
            continue
        expired = policy.is_expired(row["expires_at"], now=now)
        if status == "active" and expired or status == "expired" and not expired:
            continue
        warning = row["timeout_config__warning_threshold_minutes"]
        if near is not None and policy.is_near_expiration(row["expires_at"], warning, now=now) != near:
            continue
        total += 1
    return total


def _timeout(config: dict) -> policy.Timeout:
    return policy.Timeout(
        config["timeoutMinutes"], config["autoRenew"], config["maxDurationMinutes"],
        config["warningThresholdMinutes"],
    )


def raw_instant(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def raw_uuid(value: uuid.UUID):
    return Session._meta.get_field("agent_id").get_db_prep_value(value, connection)


class CountsMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Each example starts from nothing: the triggers empty the counts with the rows.
        Session.objects.all().delete()
        TimeoutConfig.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {SessionCount._meta.db_table}")
        self.now = START
        self.traveller = time_machine.travel(START, tick=False)
        self.clock = self.traveller.start()
        self.api = APIClient()
        self.api.credentials(HTTP_X_API_KEY=ADMIN_KEY)
        self.admin = Client()
        self.admin.force_login(get_user_model().objects.get(username="counts-admin"))
        self.checks = itertools.count()
        self.created: list[uuid.UUID] = []

    def teardown(self):
        self.traveller.stop()

    def _some_sessions(self, data, most=3) -> list[uuid.UUID]:
        # From every session created so far, in creation order (ids are random): a
        # deleted one may be picked again, as a client might.
        if not self.created:
            return []
        return data.draw(
            st.lists(st.sampled_from(self.created), min_size=1, max_size=most, unique=True)
        )

    # -- Writes through the API.

    @rule(agent=st.sampled_from(AGENTS), user=st.sampled_from(USERS), config=st.sampled_from(CONFIGS))
    def create(self, agent, user, config):
        response = self.api.post(
            BASE, {"agentId": str(agent), "userId": str(user), "timeoutConfig": config},
            format="json",
        )
        assert response.status_code == 201, response.content
        self.created.append(uuid.UUID(response.json()["sessionId"]))

    @rule(data=st.data(), action=st.sampled_from(["heartbeat", "renew"]))
    def activity(self, data, action):
        for session_id in self._some_sessions(data, most=1):
            response = self.api.post(f"{BASE}/{session_id}/{action}")
            assert response.status_code in (200, 404, 410, 422), response.content

    @rule(data=st.data(), config=st.sampled_from(CONFIGS))
    def patch_timeout(self, data, config):
        for session_id in self._some_sessions(data, most=1):
            response = self.api.patch(f"{BASE}/{session_id}/timeout", config, format="json")
            assert response.status_code in (200, 404, 410, 422), response.content

    @rule(data=st.data())
    def delete(self, data):
        for session_id in self._some_sessions(data, most=1):
            assert self.api.delete(f"{BASE}/{session_id}").status_code in (200, 404)

    # -- The admin's actions.

    @rule(data=st.data(), action=st.sampled_from(["expire_selected", "renew_selected"]))
    def admin_action(self, data, action):
        selected = self._some_sessions(data)
        if selected:
            response = self.admin.post(
                CHANGELIST, {"action": action, "_selected_action": [str(pk) for pk in selected]}
            )
            assert response.status_code == 302

    # -- Commands.

    @rule(grace=st.sampled_from([0, 1, 90]))
    def prune(self, grace):
        call_command("prune_sessions", "--grace-minutes", str(grace), stdout=StringIO())

    # -- The ORM and raw SQL, as from a shell.

    @rule(data=st.data(), seconds=st.sampled_from([-3600, -61, -1, 1, 59, 3601]))
    def queryset_moves_expiry(self, data, seconds):
        ids = self._some_sessions(data)
        Session.objects.filter(pk__in=ids).update(
            expires_at=Greatest(F("expires_at") + timedelta(seconds=seconds), F("created_at"))
        )

    @rule(data=st.data(), agent=st.sampled_from(AGENTS), config=st.sampled_from(CONFIGS))
    def queryset_moves_agent_and_config(self, data, agent, config):
        ids = self._some_sessions(data)
        Session.objects.filter(pk__in=ids).update(
            agent_id=agent, timeout_config=TimeoutConfig.for_timeout(_timeout(config))
        )

    @rule(agent=st.sampled_from(AGENTS))
    def queryset_delete(self, agent):
        Session.objects.filter(agent_id=agent).delete()

    @rule(data=st.data(), seconds=st.sampled_from([-120, -1, 0, 1, 120]))
    def raw_update_expiry(self, data, seconds):
        for session_id in self._some_sessions(data, most=1):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Session._meta.db_table} SET expires_at = %s "
                    f"WHERE session_id = %s AND created_at <= %s",
                    [raw_instant(self.now + timedelta(seconds=seconds)), raw_uuid(session_id),
                     raw_instant(self.now + timedelta(seconds=seconds))],
                )

    def _some_config(self, data) -> int:
        config = data.draw(st.sampled_from(CONFIGS))
        return TimeoutConfig.for_timeout(_timeout(config)).pk

    @rule(data=st.data(), agent=st.sampled_from(AGENTS))
    def raw_update_agent_and_config(self, data, agent):
        for session_id in self._some_sessions(data, most=1):
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {Session._meta.db_table} SET agent_id = %s, timeout_config_id = %s "
                    f"WHERE session_id = %s",
                    [raw_uuid(agent), self._some_config(data), raw_uuid(session_id)],
                )

    @rule(data=st.data())
    def raw_delete(self, data):
        ids = self._some_sessions(data)
        if ids:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {Session._meta.db_table} WHERE session_id IN "
                    f"({', '.join(['%s'] * len(ids))})",
                    [raw_uuid(pk) for pk in ids],
                )

    @rule(data=st.data(), agent=st.sampled_from(AGENTS), minutes=st.sampled_from([-2, 1, 3, 90]))
    def raw_insert(self, data, agent, minutes):
        # Written without warns_at and auto_renew: the database fills them in.
        config = self._some_config(data)
        session_id = uuid.UUID(int=len(self.created) + 1, version=4)
        self.created.append(session_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Session._meta.db_table} (session_id, agent_id, user_id, metadata, "
                f"created_at, last_activity, expires_at, renewal_count, timeout_config_id) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s)",
                [raw_uuid(session_id), raw_uuid(agent), raw_uuid(USERS[0]), "{}",
                 raw_instant(self.now - timedelta(minutes=5)),
                 raw_instant(self.now - timedelta(minutes=5)),
                 raw_instant(self.now + timedelta(minutes=minutes)), config],
            )

    # -- Time.

    @rule(step=st.sampled_from(CLOCK_STEPS))
    def clock_moves(self, step):
        self.now += step
        self.clock.move_to(self.now)

    # -- What every reader shows.

    @invariant()
    def every_count_is_what_the_rows_say(self):
        now = policy.clock()
        assert now == self.now
        rows = list(
            Session.objects.values(
                "agent_id", "user_id", "expires_at", "timeout_config__auto_renew",
                "timeout_config__warning_threshold_minutes",
            )
        )
        check = next(self.checks)
        # Every scope's counts, and from them every mix of the list's filters.
        tallies, _ = counts.session_tallies(now=now, scopes=SCOPES, near_expiration=True)
        for scope, by_agent in zip(SCOPES, tallies, strict=True):
            agent = scope.agent_ids[0] if scope.agent_ids else None
            tally = by_agent.get(agent or counts.EVERY_AGENT, counts.Tally(0, 0, 0))
            for status, near in itertools.product(STATUSES, FLAGS):
                expected = truth(rows, now, agent=agent, status=status, near=near,
                                 auto_renew=scope.auto_renew)
                assert tally.matching(status=status, near_expiration=near) == expected, (
                    scope, status, near)
        # One mix through the API each step (a user's sessions are counted from their rows).
        mixes = list(itertools.product(STATUSES, FLAGS, FLAGS, [None, AGENTS[0]], [None, USERS[0]]))
        status, near, renew, agent, user = mixes[check % len(mixes)]
        params = {"status": status, "limit": 1}
        for name, value in (("nearExpiration", near), ("autoRenew", renew), ("agentId", agent),
                            ("userId", user)):
            if value is not None:
                params[name] = str(value).lower() if isinstance(value, bool) else str(value)
        body = self.api.get(BASE, params).json()
        assert body["total"] == truth(rows, now, agent=agent, user=user, status=status,
                                      near=near, auto_renew=renew), params
        assert body["stats"] == {
            "totalSessions": len(rows),
            "activeSessions": truth(rows, now, status="active"),
            "expiredSessions": truth(rows, now, status="expired"),
        }
        # The admin's summary and its list's count, under one of its filters.
        admin_status = [None, "active", "near_expiration", "expired"][check % 4]
        admin_renew = [None, "yes", "no"][check % 3]
        admin_params = {key: value for key, value in
                        (("status", admin_status), ("auto_renew", admin_renew)) if value}
        if check % 5 == 0:
            admin_params["q"] = str(AGENTS[0])
        page = self.admin.get(CHANGELIST, admin_params)
        summary = page.context["session_summary"]
        assert (summary.total, summary.active, summary.near_expiration, summary.expired) == (
            len(rows), truth(rows, now, status="active"), truth(rows, now, near=True),
            truth(rows, now, status="expired"),
        )
        renew_filter = {"yes": True, "no": False}.get(admin_renew)
        by_status = {None: {"status": "all"}, "active": {"status": "active"},
                     "near_expiration": {"near": True}, "expired": {"status": "expired"}}
        agent_filter = AGENTS[0] if "q" in admin_params else None
        expected_listed = truth(rows, now, agent=agent_filter, auto_renew=renew_filter,
                                **by_status[admin_status])
        assert page.context["cl"].paginator.count == expected_listed, admin_params
        # Health.
        health = self.api.get(f"{BASE}/health").json()
        assert (health["activeSessions"], health["expiringSoon"]) == (
            truth(rows, now, status="active"), truth(rows, now, near=True),
        )


def test_every_count_matches_the_rows_under_random_writes(django_user_model, settings_for_counts):
    django_user_model.objects.create_superuser("counts-admin", password="x")
    run_state_machine_as_test(
        CountsMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture
def settings_for_counts(settings):
    settings.SESSIONS_ADMIN_API_KEY = ADMIN_KEY
    settings.SESSIONS_HEALTH_CACHE_MS = 0
    return settings
