"""The pure timing rules of SPEC §2 (sessions_admin.policy), without a database."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
import time_machine
from hypothesis import assume, given
from hypothesis import strategies as st

from sessions_admin import policy

T0 = datetime(2026, 11, 27, 10, 0, 0, 123_000, tzinfo=UTC)
MS = timedelta(milliseconds=1)
US = timedelta(microseconds=1)
DEFAULT = policy.Timeout(
    timeout_minutes=30, auto_renew=True, max_duration_minutes=720, warning_threshold_minutes=5
)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


# -- Timeout -------------------------------------------------------------------


def test_timeout_with_changes_replaces_only_the_given_fields():
    changed = DEFAULT.with_changes(timeout_minutes=60, auto_renew=False)

    assert changed == policy.Timeout(60, False, 720, 5)
    assert DEFAULT == policy.Timeout(30, True, 720, 5)


def test_timeout_is_immutable():
    with pytest.raises(AttributeError):
        DEFAULT.timeout_minutes = 10


def test_default_timeout_reads_the_settings(settings):
    assert policy.default_timeout() == policy.Timeout(30, True, 720, 5)

    settings.SESSIONS_TIMEOUTS = {
        **settings.SESSIONS_TIMEOUTS,
        "DEFAULT_TIMEOUT_MINUTES": 45,
        "MAX_DURATION_MINUTES": 90,
        "WARNING_THRESHOLD_MINUTES": 7,
    }
    assert policy.default_timeout() == policy.Timeout(45, True, 90, 7)


def test_clock_reads_the_current_time_once_in_utc():
    with time_machine.travel(T0, tick=False):
        assert policy.clock() == T0
        assert policy.clock().utcoffset() == timedelta(0)


@pytest.mark.parametrize("microseconds", [0, 1, 400, 999])
def test_clock_reads_whole_milliseconds(microseconds):
    """What is stored is what the API shows, so an active session has at least 1 ms left."""
    with time_machine.travel(T0 + microseconds * US, tick=False):
        now = policy.clock()
    assert now == T0
    expires_at = now + minutes(30)
    shown = policy.format_datetime(expires_at)
    assert shown == "2026-11-27T10:30:00.123Z"
    assert datetime.fromisoformat(shown) == expires_at


# -- cap and expiry --------------------------------------------------------------


def test_cap_is_creation_plus_max_duration():
    assert policy.cap_for(T0, DEFAULT) == T0 + minutes(720)


def test_expiry_on_creation_is_now_plus_timeout():
    assert policy.expiry_for(T0, DEFAULT, now=T0) == T0 + minutes(30)


def test_expiry_is_capped_by_max_duration():
    late = T0 + minutes(700)
    assert policy.expiry_for(T0, DEFAULT, now=late) == T0 + minutes(720)


def test_expiry_just_below_the_cap_is_not_capped():
    now = T0 + minutes(690) - MS
    assert policy.expiry_for(T0, DEFAULT, now=now) == now + minutes(30)
    assert policy.expiry_for(T0, DEFAULT, now=now + MS) == T0 + minutes(720)


def test_expiry_when_max_duration_equals_timeout_never_moves():
    timeout = policy.Timeout(45, True, 45, 5)
    for offset in (0, 1, 30, 44, 45):
        assert policy.expiry_for(T0, timeout, now=T0 + minutes(offset)) == T0 + minutes(45)


# -- renewed_expiry ------------------------------------------------------------------


def test_renewal_extends_to_now_plus_timeout():
    expires = T0 + minutes(30)
    now = T0 + minutes(10)
    assert policy.renewed_expiry(T0, expires, DEFAULT, now=now) == T0 + minutes(40)


def test_renewal_by_one_millisecond_counts():
    expires = T0 + minutes(30)
    assert policy.renewed_expiry(T0, expires, DEFAULT, now=T0 + MS) == expires + MS


def test_renewal_that_would_not_extend_returns_none():
    expires = T0 + minutes(30)
    assert policy.renewed_expiry(T0, expires, DEFAULT, now=T0) is None
    # An expiry already later than now + timeout (e.g. after a timeout was shortened).
    assert policy.renewed_expiry(T0, T0 + minutes(100), DEFAULT, now=T0 + minutes(60)) is None


def test_renewal_is_limited_by_the_cap():
    expires = T0 + minutes(700)
    assert policy.renewed_expiry(T0, expires, DEFAULT, now=T0 + minutes(695)) == T0 + minutes(720)


def test_renewal_at_the_cap_fails():
    cap = T0 + minutes(720)
    assert policy.renewed_expiry(T0, cap, DEFAULT, now=T0 + minutes(700)) is None
    assert policy.renewed_expiry(T0, cap, DEFAULT, now=cap - MS) is None


# -- expired / time remaining / near expiration ------------------------------------------


def test_expires_at_now_is_expired():
    assert policy.is_expired(T0, now=T0) is True


def test_one_microsecond_before_expiry_is_not_expired():
    assert policy.is_expired(T0 + US, now=T0) is False


def test_past_expiry_is_expired():
    assert policy.is_expired(T0 - MS, now=T0) is True


@pytest.mark.parametrize(
    ("remaining", "expected_ms"),
    [
        (timedelta(0), 0),
        (-MS, 0),
        (-minutes(5), 0),
        (US, 0),
        (MS - US, 0),
        (MS, 1),
        (MS + US, 1),
        (timedelta(seconds=1, microseconds=999_999), 1999),
        (minutes(30), 1_800_000),
        (timedelta(days=14), 1_209_600_000),
    ],
)
def test_time_remaining_is_floored_to_whole_milliseconds(remaining, expected_ms):
    value = policy.time_remaining_ms(T0 + remaining, now=T0)

    assert value == expected_ms
    assert isinstance(value, int)


def test_time_remaining_is_never_negative_across_days():
    assert policy.time_remaining_ms(T0 - timedelta(days=400), now=T0) == 0


WARN_MS = 5 * 60_000


@pytest.mark.parametrize(
    ("remaining", "near"),
    [
        (timedelta(0), False),  # expired at now
        (-MS, False),
        (MS, True),
        (minutes(1), True),
        (timedelta(milliseconds=WARN_MS - 1), True),
        (timedelta(milliseconds=WARN_MS), True),  # exactly the threshold
        (timedelta(milliseconds=WARN_MS) + US, True),  # still 300000 whole ms
        (timedelta(milliseconds=WARN_MS + 1), False),  # one millisecond above
        (minutes(30), False),
    ],
)
def test_near_expiration_boundaries(remaining, near):
    assert policy.is_near_expiration(T0 + remaining, 5, now=T0) is near


def test_near_expiration_uses_the_given_threshold():
    expires = T0 + minutes(10)
    assert policy.is_near_expiration(expires, 9, now=T0) is False
    assert policy.is_near_expiration(expires, 10, now=T0) is True
    assert policy.is_near_expiration(expires, 30, now=T0) is True


@pytest.mark.parametrize(
    ("remaining", "status"),
    [
        (-minutes(1), policy.STATUS_EXPIRED),
        (timedelta(0), policy.STATUS_EXPIRED),
        (MS, policy.STATUS_NEAR_EXPIRATION),
        (minutes(5), policy.STATUS_NEAR_EXPIRATION),
        (minutes(5) + MS, policy.STATUS_ACTIVE),
        (minutes(29), policy.STATUS_ACTIVE),
    ],
)
def test_status_of(remaining, status):
    assert policy.status_of(T0 + remaining, 5, now=T0) == status


# -- formatting --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2023, 11, 7, 5, 31, 56, 123_456, tzinfo=UTC), "2023-11-07T05:31:56.123Z"),
        (datetime(2023, 11, 7, 5, 31, 56, tzinfo=UTC), "2023-11-07T05:31:56.000Z"),
        (datetime(2023, 11, 7, 5, 31, 56, 999_999, tzinfo=UTC), "2023-11-07T05:31:56.999Z"),
        (datetime(2023, 11, 7, 5, 31, 56, 7_000, tzinfo=UTC), "2023-11-07T05:31:56.007Z"),
        (datetime(2024, 2, 29, 23, 59, 59, 999_000, tzinfo=UTC), "2024-02-29T23:59:59.999Z"),
        # Other offsets are converted to UTC, across a day boundary too.
        (
            datetime(2023, 11, 7, 7, 31, 56, 123_000, tzinfo=timezone(timedelta(hours=2))),
            "2023-11-07T05:31:56.123Z",
        ),
        (
            datetime(
                2023, 11, 6, 21, 1, 56, 500_000, tzinfo=timezone(-timedelta(hours=8, minutes=30))
            ),
            "2023-11-07T05:31:56.500Z",
        ),
    ],
)
def test_format_datetime(value, text):
    assert policy.format_datetime(value) == text


def test_format_datetime_is_what_javascript_produces():
    # new Date(Date.UTC(2023, 10, 7, 5, 31, 56, 123)).toISOString()
    value = datetime(2023, 11, 7, 5, 31, 56, 123_000, tzinfo=UTC)
    assert policy.format_datetime(value) == "2023-11-07T05:31:56.123Z"
    assert datetime.fromisoformat(policy.format_datetime(value)) == value


@pytest.mark.parametrize(
    ("milliseconds", "text"),
    [
        (-5000, "0 s"),
        (0, "0 s"),
        (1, "under 1 s"),
        (999, "under 1 s"),
        (1000, "1 s"),
        (59_999, "59 s"),
        (60_000, "1 min 0 s"),
        (252_000, "4 min 12 s"),
        (3_599_999, "59 min 59 s"),
        (3_600_000, "1 h 0 min"),
        (7_500_000, "2 h 5 min"),
        (86_399_999, "23 h 59 min"),
        (86_400_000, "1 d 0 h"),
        (14 * 86_400_000 + 3 * 3_600_000 + 59_000, "14 d 3 h"),
    ],
)
def test_humanize_ms(milliseconds, text):
    assert policy.humanize_ms(milliseconds) == text


# -- timeout_violations ----------------------------------------------------------------------


def fields_of(timeout):
    return [field for field, _ in policy.timeout_violations(timeout)]


@pytest.mark.parametrize(
    "timeout",
    [
        DEFAULT,
        policy.Timeout(5, True, 5, 1),  # every lower bound
        policy.Timeout(1440, False, 20160, 1440),  # every upper bound
        policy.Timeout(60, False, 60, 60),
    ],
)
def test_valid_timeouts_have_no_violations(timeout):
    assert policy.timeout_violations(timeout) == []


@pytest.mark.parametrize(
    ("timeout", "fields"),
    [
        (policy.Timeout(4, True, 720, 1), ["timeoutMinutes"]),
        (policy.Timeout(0, True, 720, 1), ["timeoutMinutes", "warningThresholdMinutes"]),
        (policy.Timeout(1441, True, 2000, 5), ["timeoutMinutes"]),
        (policy.Timeout(30, True, 29, 5), ["maxDurationMinutes"]),
        (policy.Timeout(30, True, 20161, 5), ["maxDurationMinutes"]),
        (policy.Timeout(30, True, 720, 0), ["warningThresholdMinutes"]),
        (policy.Timeout(30, True, 720, 31), ["warningThresholdMinutes"]),
        (
            policy.Timeout(3, True, 2, 4),
            ["timeoutMinutes", "maxDurationMinutes", "warningThresholdMinutes"],
        ),
    ],
)
def test_invalid_timeouts_name_every_broken_field(timeout, fields):
    assert fields_of(timeout) == fields


def test_violation_messages_state_the_limits():
    messages = dict(policy.timeout_violations(policy.Timeout(3, True, 2, 4)))

    assert messages == {
        "timeoutMinutes": "timeoutMinutes must be between 5 and 1440",
        "maxDurationMinutes": "maxDurationMinutes must be between timeoutMinutes (3) and 20160",
        "warningThresholdMinutes": "warningThresholdMinutes must be between 1 and timeoutMinutes (3)",
    }


def test_violations_follow_the_configured_limits(settings):
    settings.SESSIONS_TIMEOUTS = {
        **settings.SESSIONS_TIMEOUTS,
        "MIN_TIMEOUT_MINUTES": 10,
        "MAX_TIMEOUT_MINUTES": 60,
    }

    assert fields_of(policy.Timeout(5, True, 720, 1)) == ["timeoutMinutes"]
    assert fields_of(policy.Timeout(61, True, 720, 1)) == ["timeoutMinutes"]
    assert fields_of(policy.Timeout(60, True, 720, 1)) == []
    assert dict(policy.timeout_violations(policy.Timeout(5, True, 720, 1))) == {
        "timeoutMinutes": "timeoutMinutes must be between 10 and 60"
    }


# -- properties -------------------------------------------------------------------------------

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30))


@st.composite
def timeouts(draw):
    timeout = draw(st.integers(5, 1440))
    return policy.Timeout(
        timeout_minutes=timeout,
        auto_renew=draw(st.booleans()),
        max_duration_minutes=draw(st.integers(timeout, 20160)),
        warning_threshold_minutes=draw(st.integers(1, timeout)),
    )


@given(timeouts())
def test_generated_timeouts_are_valid(timeout):
    assert policy.timeout_violations(timeout) == []


@given(instants, timeouts(), durations)
def test_expiry_never_passes_the_cap(created, timeout, elapsed):
    now = created + elapsed
    expiry = policy.expiry_for(created, timeout, now=now)

    assert expiry <= policy.cap_for(created, timeout)
    assert expiry <= now + minutes(timeout.timeout_minutes)
    assert expiry == min(now + minutes(timeout.timeout_minutes), policy.cap_for(created, timeout))


@given(instants, timeouts(), durations, durations)
def test_expiry_is_monotonic_in_now(created, timeout, first, extra):
    earlier = policy.expiry_for(created, timeout, now=created + first)
    later = policy.expiry_for(created, timeout, now=created + first + extra)

    assert earlier <= later


@given(instants, timeouts(), st.lists(st.integers(0, 10 * 24 * 3_600_000), max_size=30))
def test_a_life_of_activity_follows_the_rules(created, timeout, gaps_ms):
    """Replay heartbeats against SPEC §2: each extends to min(now + timeout, cap) exactly when that is later."""
    cap = policy.cap_for(created, timeout)
    timeout_delta = minutes(timeout.timeout_minutes)
    now = last_heartbeat = created
    expires = policy.expiry_for(created, timeout, now=created)
    assert expires == min(created + timeout_delta, cap)
    renewals = expected_renewals = 0
    for gap in gaps_ms:
        now = now + timedelta(milliseconds=gap)
        if policy.is_expired(expires, now=now):
            assert policy.time_remaining_ms(expires, now=now) == 0
            break
        last_heartbeat = now
        extended = min(now + timeout_delta, cap)
        expected_renewals += extended > expires
        renewed = policy.renewed_expiry(created, expires, timeout, now=now)
        assert renewed == (extended if extended > expires else None)
        if renewed is not None:
            expires, renewals = renewed, renewals + 1
        assert created < expires <= cap
    assert renewals == expected_renewals
    # The expiry is set by the last heartbeat (or the creation), whether or not it extended it.
    assert expires == min(last_heartbeat + timeout_delta, cap)


@given(instants, timeouts(), durations, durations)
def test_renewed_expiry_extends_or_is_none(created, timeout, age, ahead):
    now = created + age
    expires = min(now + ahead, policy.cap_for(created, timeout))
    assume(expires >= created)
    renewed = policy.renewed_expiry(created, expires, timeout, now=now)

    if renewed is None:
        assert policy.expiry_for(created, timeout, now=now) <= expires
    else:
        assert expires < renewed <= policy.cap_for(created, timeout)
        assert renewed == policy.expiry_for(created, timeout, now=now)


@given(
    instants,
    st.timedeltas(min_value=-timedelta(days=3), max_value=timedelta(days=3)),
    st.integers(1, 1440),
)
def test_derived_fields_agree(now, remaining, warning_minutes):
    expires = now + remaining
    ms = policy.time_remaining_ms(expires, now=now)
    near = policy.is_near_expiration(expires, warning_minutes, now=now)
    expired = policy.is_expired(expires, now=now)

    assert ms >= 0
    assert ms == max(0, (expires - now) // MS)
    assert not (near and expired)
    if expired:
        assert ms == 0
    if near:
        assert 0 < ms <= warning_minutes * 60_000
    if ms > warning_minutes * 60_000:
        assert not near and not expired
    status = policy.status_of(expires, warning_minutes, now=now)
    assert (status == policy.STATUS_EXPIRED) == expired
    assert (status == policy.STATUS_NEAR_EXPIRATION) == near


@given(instants, st.integers(-24 * 60 + 1, 24 * 60 - 1))
def test_format_datetime_round_trips_to_the_millisecond(value, offset_minutes):
    local = value.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = policy.format_datetime(local)

    assert len(text) == 24 and text.endswith("Z") and text[10] == "T"
    parsed = datetime.fromisoformat(text)
    assert parsed == value.replace(microsecond=value.microsecond // 1000 * 1000)


@given(st.integers(-(10**6), 400 * 86_400_000))
def test_humanize_ms_never_fails_and_never_goes_negative(milliseconds):
    text = policy.humanize_ms(milliseconds)

    assert text and "-" not in text
    assert text.endswith((" s", " min", " h"))
