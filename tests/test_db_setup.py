"""Per-connection set-up on PostgreSQL: timestamps read by psycopg's own loader, still UTC-aware."""

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import psycopg
import pytest
from django.db import connection
from psycopg.pq import Format

from sessions_admin import db
from sessions_admin.models import Session
from tests.factories import SessionFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

TIMESTAMPTZ = psycopg.adapters.types["timestamptz"].oid


def cursor_loader():
    with connection.cursor() as cursor:
        return cursor.cursor.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)


def test_every_cursor_uses_the_native_loader():
    # Django keeps it: the loader's zone matches the connection's.
    assert cursor_loader() is db.UtcTimestamptzLoader
    assert cursor_loader() is db.UtcTimestamptzLoader


@pytest.mark.parametrize(
    "literal, expected",
    [
        ("2026-03-01 10:00:00.123456+02", datetime(2026, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-01 10:00:00-05:30", datetime(2026, 3, 1, 15, 30, tzinfo=UTC)),
        ("0001-01-01 00:00:00+00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31 23:59:59.999999+00", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_values_are_utc_aware_and_exact(literal, expected):
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [literal])
        (value,) = cursor.fetchone()

    assert value == expected
    assert value.tzinfo is UTC


def test_model_round_trip_keeps_microseconds():
    moment = datetime(2026, 5, 4, 3, 2, 1, 987654, tzinfo=UTC)
    session = SessionFactory(
        created_at=moment, last_activity=moment, expires_at=moment + timedelta(minutes=30)
    )

    stored = Session.objects.values_list("created_at", "expires_at").get(pk=session.pk)

    assert stored == (moment, moment + timedelta(minutes=30))
    assert all(value.tzinfo is UTC for value in stored)


def test_a_connection_in_another_zone_keeps_djangos_loader():
    # A wrapper whose server connection does not speak UTC (a TIME_ZONE
    # setting, say) is left alone: the native loader would give local times.
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        dbname=settings["NAME"],
        options="-c TimeZone=Europe/Paris",
    ) as raw:
        before = raw.adapters.get_loader(TIMESTAMPTZ, Format.TEXT)
        wrapper = SimpleNamespace(vendor="postgresql", timezone=UTC, connection=raw)

        db.use_native_timestamptz_loader(sender=None, connection=wrapper)

        assert raw.adapters.get_loader(TIMESTAMPTZ, Format.TEXT) is before

        wrapper.timezone = timezone(timedelta(hours=1))
        raw.execute("SET TIME ZONE 'UTC'")
        db.use_native_timestamptz_loader(sender=None, connection=wrapper)

        assert raw.adapters.get_loader(TIMESTAMPTZ, Format.TEXT) is before
