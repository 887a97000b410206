"""An operator's afternoon in a real browser: log in, scan, filter, search, act.

Drives Debian's Chromium through Playwright against the live server; saves
screenshots in test-artifacts/.
"""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission
from django.utils import timezone
from playwright.sync_api import expect

from sessions_admin import admin as sessions_admin_admin
from sessions_admin import policy
from sessions_admin.models import Session
from tests.factories import SessionFactory, TimeoutConfigFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "operator-pass-123"
LIST_PATH = "/admin/sessions_admin/session/"
# How long the store's statuses hold, however slowly a run goes.
STATUS_MARGIN = timedelta(minutes=4)


@pytest.fixture
def operator(django_user_model):
    user = django_user_model.objects.create_user(
        username="operator", password=PASSWORD, is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="sessions_admin",
            codename__in=["view_session", "change_session", "delete_session"],
        )
    )
    return user


def make_session(now, *, idle_minutes: float, config, renewals: int = 0, **fields):
    """A session last active ``idle_minutes`` ago, with the expiry the timing rules give it."""
    last_activity = now - timedelta(minutes=idle_minutes)
    created_at = last_activity - timedelta(minutes=2 + 3 * renewals)
    timeout = config.as_timeout()
    activity = last_activity if timeout.auto_renew else created_at
    return SessionFactory(
        now=now,
        timeout_config=config,
        created_at=created_at,
        last_activity=last_activity,
        expires_at=policy.expiry_for(created_at, timeout, now=activity),
        renewal_count=renewals if timeout.auto_renew else 0,
        **fields,
    )


@pytest.fixture
def store():
    """138 sessions interleaved in time, none less than four minutes from changing status.

    77 active (16 of them near expiration), 61 expired; 10 without auto-renew;
    one user with an active, a near-expiration and an expired session.

    The store is written at the real ``now`` and the live server reads the real
    clock later, so only the boundaries ahead matter: the active sessions are at
    least 5 minutes from their warning threshold, the near-expiration ones at
    least 4.2 minutes from expiring (the standard warning window is 5 minutes
    wide), and the expired ones stay expired.
    """
    now = timezone.now()
    standard = TimeoutConfigFactory()  # 30 min, warn at 5
    long = TimeoutConfigFactory(timeout_minutes=120, max_duration_minutes=720,
                                warning_threshold_minutes=15)
    fixed = TimeoutConfigFactory(auto_renew=False)
    for i in range(40):
        make_session(now, idle_minutes=i * 0.5, config=standard, renewals=i % 4)
    for i in range(10):
        make_session(now, idle_minutes=40 + i * 6, config=long, renewals=1 + i % 3)
    for i in range(10):
        make_session(now, idle_minutes=i * 2, config=fixed)
    near = [make_session(now, idle_minutes=25.1 + i * 0.05, config=standard) for i in range(15)]
    for i in range(60):
        make_session(now, idle_minutes=33 + i * 0.6, config=standard, renewals=i % 3)
    user_id = uuid.uuid4()
    mine = [
        make_session(now, idle_minutes=1, config=standard, user_id=user_id,
                     metadata={"channel": "web", "locale": "en-US"}),
        make_session(now, idle_minutes=25.5, config=standard, user_id=user_id),
        make_session(now, idle_minutes=45, config=standard, user_id=user_id),
    ]
    assert Session.objects.count() == 138
    later = now + STATUS_MARGIN
    for session in Session.objects.select_related("timeout_config"):
        threshold = session.timeout_config.warning_threshold_minutes
        assert policy.status_of(session.expires_at, threshold, now=now) == policy.status_of(
            session.expires_at, threshold, now=later
        ), f"{session} changes status within {STATUS_MARGIN}"
    return {"user_id": user_id, "mine": mine, "near": near}


def log_in(page, live_server, user):
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(user.username)


def summary_value(page, key: str) -> int:
    return int(page.locator(f'[data-count="{key}"]').get_attribute("data-value"))


def row(page, session):
    return page.locator("#result_list tbody tr").filter(
        has=page.locator(f'input.action-select[value="{session.pk}"]')
    )


def run_action(page, action: str, sessions):
    for session in sessions:
        row(page, session).locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_operator_afternoon(page, live_server, operator, store, screenshot):
    log_in(page, live_server, operator)
    page.get_by_role("link", name="Sessions", exact=True).first.click()
    expect(page).to_have_url(re.compile(re.escape(LIST_PATH) + "$"))

    # The summary: whole-store counts and the stacked bar.
    expect(page.locator(".session-summary")).to_be_visible()
    total, active = summary_value(page, "total"), summary_value(page, "active")
    near, expired = summary_value(page, "near_expiration"), summary_value(page, "expired")
    assert (total, active, near, expired) == (138, 77, 16, 61)
    expect(page.locator('[data-count="total"] .session-summary__value')).to_have_text("138")
    expect(page.locator(".session-summary__segment")).to_have_count(3)
    bar_width = page.locator(".session-summary__bar").bounding_box()["width"]
    expired_width = page.locator(".session-summary__segment--expired").bounding_box()["width"]
    assert abs(expired_width / bar_width - 61 / 138) < 0.02
    expect(page.locator("#result_list tbody tr")).to_have_count(100)
    expect(page.locator(".paginator")).to_contain_text("138 sessions")
    # Badges are visibly distinct: each status has its own colour.
    colours = {
        status: page.locator(f"#result_list .session-status--{status}").first.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        for status in ("active", "near-expiration", "expired")
    }
    assert len(set(colours.values())) == 3, colours
    screenshot("01-session-list")

    # Filter to what is about to expire.
    page.locator("#changelist-filter").get_by_role("link", name="Near expiration", exact=True).click()
    expect(page).to_have_url(re.compile(r"\?status=near_expiration$"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(16)
    expect(page.locator("#result_list .session-status--near-expiration")).to_have_count(16)
    expect(page.locator("#result_list .session-status--active")).to_have_count(0)
    expect(page.locator(".paginator")).to_contain_text("16 sessions")
    for remaining in page.locator("#result_list td.field-time_remaining").all_inner_texts():
        assert re.fullmatch(r"[1-5] min \d+ s", remaining), remaining
    screenshot("02-filter-near-expiration")

    # Find one user's sessions by their id (the filter stays applied until cleared).
    page.locator("#changelist-filter").get_by_role("link", name="All").first.click()
    page.fill("#searchbar", str(store["user_id"]))
    page.press("#searchbar", "Enter")
    expect(rows).to_have_count(3)
    expect(page.locator("#changelist-search")).to_contain_text("3 sessions found")
    for session in store["mine"]:
        expect(row(page, session)).to_have_count(1)
    screenshot("03-search-user")

    # Renew two of them: one succeeds, the expired one cannot be renewed.
    renewable, near_one, expired_one = store["mine"]
    run_action(page, "renew_selected", [near_one, expired_one])
    messages = page.locator("ul.messagelist li")
    expect(messages.filter(has_text="Renewed 1 session.")).to_have_count(1)
    expect(messages.filter(has_text="1 session could not be renewed (1 already expired).")).to_have_count(1)
    expect(row(page, near_one).locator(".session-status")).to_have_text("active")
    expect(row(page, near_one).locator("td.field-renewal_count")).to_have_text("1")
    expect(row(page, expired_one).locator(".session-status")).to_have_text("expired")
    screenshot("04-renewed")

    # Expire one now.
    run_action(page, "expire_selected", [renewable])
    expect(messages.filter(has_text="Expired 1 session.")).to_have_count(1)
    expect(row(page, renewable).locator(".session-status")).to_have_text("expired")
    expect(row(page, renewable).locator("td.field-time_remaining")).to_have_text("-")

    # Open a session: everything read-only, the timeout configuration shown.
    row(page, near_one).locator("th.field-session_link a").click()
    expect(page.locator("h1")).to_have_text("View session")
    expect(page.locator("h2", has_text="Timeout configuration")).to_be_visible()
    expect(page.locator(".fieldBox.field-timeout_minutes .readonly")).to_have_text("30 min")
    expect(page.locator(".field-status_badge .session-status")).to_have_text("active")
    expect(page.locator(".field-renewal_count .readonly")).to_have_text("1")
    expect(page.locator("input[name=_save]")).to_have_count(0)
    screenshot("05-session-page", full_page=True)

    # Expire it from its own page.
    page.click("#session-expire")
    expect(page.locator("ul.messagelist li")).to_have_text("Expired 1 session.")
    expect(page.locator(".field-status_badge .session-status")).to_have_text("expired")
    expect(page.locator("#session-renew")).to_have_count(0)
    screenshot("06-session-page-expired")

    # Everything went through the services and into the admin log.
    near_one.refresh_from_db()
    assert near_one.renewal_count == 1 and near_one.expires_at <= timezone.now()
    logged = {}
    for object_id, message in LogEntry.objects.filter(user=operator, action_flag=CHANGE).values_list(
        "object_id", "change_message"
    ):
        logged.setdefault(object_id, []).append(message.split(" (")[0])
    assert {key: sorted(value) for key, value in logged.items()} == {
        str(near_one.pk): ["Expired now", "Renewed from the admin."],
        str(renewable.pk): ["Expired now"],
    }
    page.get_by_role("link", name="History").click()
    expect(page.locator("#change-history tbody tr")).to_have_count(2)


def test_delete_with_confirmation(page, live_server, operator, store, screenshot):
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}{LIST_PATH}?status=expired")
    expect(page.locator("#result_list tbody tr")).to_have_count(61)
    doomed = list(Session.objects.expired(timezone.now()).order_by("-last_activity")[:2])
    run_action(page, "delete_selected", doomed)
    expect(page.locator("h1")).to_have_text("Delete multiple objects")
    expect(page.locator("#content")).to_contain_text("Sessions: 2")
    screenshot("07-delete-confirmation")
    page.get_by_role("button", name=re.compile("Yes, I.m sure")).click()
    expect(page.locator("ul.messagelist li")).to_have_text("Deleted 2 sessions.")
    expect(page.locator("#result_list tbody tr")).to_have_count(59)
    assert summary_value(page, "total") == 136
    assert not Session.objects.filter(pk__in=[s.pk for s in doomed]).exists()
    assert LogEntry.objects.filter(user=operator, action_flag=DELETION).count() == 2


def test_search_for_something_that_is_not_an_id(page, live_server, operator, store):
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}{LIST_PATH}")
    page.fill("#searchbar", "alice@example.com")
    page.press("#searchbar", "Enter")
    expect(page.locator("ul.messagelist li.warning")).to_contain_text(
        "is not a session, agent or user id"
    )
    expect(page.locator("#result_list tbody tr")).to_have_count(0)
    page.get_by_role("link", name="clear search").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(100)


def test_page_two_and_auto_renew_filter(page, live_server, operator, store):
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}{LIST_PATH}?auto_renew=no")
    expect(page.locator("#result_list tbody tr")).to_have_count(10)
    expect(page.locator("#result_list td.field-auto_renew img[alt=False]")).to_have_count(10)
    page.goto(f"{live_server.url}{LIST_PATH}")
    page.locator(".paginator").get_by_role("link", name="2").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(38)
    expect(page.locator(".paginator .this-page")).to_have_text("2")


def test_select_across_pages_up_to_the_action_limit(page, live_server, operator, store, monkeypatch):
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}{LIST_PATH}")
    page.check("#action-toggle")
    question = page.locator(".actions .question")
    expect(question).to_have_text("Select all 138 sessions")
    question.get_by_role("button").click()
    expect(page.locator(".actions .all")).to_have_text("All 138 selected")

    # More than an action may take: no offer to select them, and the reason why.
    monkeypatch.setattr(sessions_admin_admin, "ACTION_LIMIT", 100)
    page.goto(f"{live_server.url}{LIST_PATH}")
    page.check("#action-toggle")
    expect(page.locator(".actions .question")).to_have_text(
        "Actions take at most 100 sessions at a time: filter or search to select across pages."
    )
    expect(page.locator(".actions .question a")).to_have_count(0)


def test_the_list_fits_a_1280_pixel_screen(page, live_server, operator, store):
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server, operator)
    page.goto(f"{live_server.url}{LIST_PATH}")
    table, area = page.evaluate(
        "() => { const t = document.querySelector('#result_list');"
        " return [t.scrollWidth, t.parentElement.clientWidth]; }"
    )
    assert table <= area, f"the table is {table - area} px wider than its area"
    expect(page.locator("#result_list thead th.column-auto_renew")).to_be_in_viewport()


def test_sign_in_pauses_after_repeated_failures(page, live_server, operator, settings, screenshot):
    from django.core.cache import cache

    settings.SESSIONS_AUTH_FAILURE_RATE = "2/min"
    cache.clear()
    page.goto(f"{live_server.url}/admin/")
    for _ in range(2):
        page.fill("#id_username", operator.username)
        page.fill("#id_password", "not-the-password")
        page.click("input[type=submit]")
        expect(page.locator(".errornote")).to_contain_text("correct username and password")

    page.fill("#id_username", operator.username)
    page.fill("#id_password", PASSWORD)  # right, but the address has used its budget
    with page.expect_response(re.compile(r"/admin/login/")) as answer:
        page.click("input[type=submit]")

    assert answer.value.status == 429
    expect(page.locator(".errornote")).to_contain_text("Too many failed sign-ins")
    screenshot("admin-sign-in-paused")
    page.get_by_role("link", name="Back to the sign-in page").click()
    expect(page.locator("#id_username")).to_be_visible()
    cache.clear()
