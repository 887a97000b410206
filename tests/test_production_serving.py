"""Production mode over HTTP: gunicorn, the production settings, collected static files.

The rest of the suite runs with ``settings_test``'s plain static storage. Here
``collectstatic`` writes the hashed files and their manifest, gunicorn serves
the production settings on a scratch SQLite file, an operator signs in through
the admin's login form, opens the session list and loads the CSS the page
names from whitenoise. Then the database file is checked to run in WAL mode.

So that the test writes nothing into the repository, ``DJANGO_STATIC_ROOT``
points ``collectstatic`` and the server at a temporary directory.
"""

import http.cookiejar
import re
import shutil
import sqlite3
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from tests import server

pytestmark = pytest.mark.server

STATIC_ROOT_VARIABLE = "DJANGO_STATIC_ROOT"
USERNAME = "night-operator"
PASSWORD = "night-operator-pass-123"
CHANGELIST = "/admin/sessions_admin/session/"
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """Cookies kept between requests, redirects left for the test to read."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect
        )

    def open(self, path: str, form: dict | None = None) -> tuple[int, dict, bytes]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base_url + path, data=data, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def cookie(self, name: str) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == name)


@pytest.fixture
def deployment():
    """A migrated scratch SQLite file, collected static files and a superuser, all temporary."""
    database_url = server.scratch_sqlite()
    static_root = tempfile.mkdtemp(prefix="sa_static_")
    env = {"DATABASE_URL": database_url, STATIC_ROOT_VARIABLE: static_root}
    collected = server.manage("collectstatic", "--noinput", "--verbosity", "0", env=env)
    assert collected.returncode == 0, collected.stderr
    created = server.manage(
        "createsuperuser", "--noinput", "--username", USERNAME, "--email", "ops@example.com",
        env={
            "DATABASE_URL": database_url,
            "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        },
    )
    assert created.returncode == 0, created.stderr
    yield env
    shutil.rmtree(static_root, ignore_errors=True)
    shutil.rmtree(Path(database_url.removeprefix("sqlite:///")).parent, ignore_errors=True)


def test_admin_signs_in_lists_sessions_and_loads_hashed_css_in_production(deployment):
    database = deployment["DATABASE_URL"].removeprefix("sqlite:///")
    manifest = Path(deployment[STATIC_ROOT_VARIABLE]) / "staticfiles.json"
    assert manifest.is_file(), "collectstatic wrote no manifest"
    running = server.GunicornServer(env=deployment, workers=2).start()
    try:
        browser = Browser(running.base_url)
        status, _, page = browser.open(f"/admin/login/?next={CHANGELIST}")
        assert status == 200, running.output()
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1].decode()
        status, headers, _ = browser.open(
            f"/admin/login/?next={CHANGELIST}",
            {"csrfmiddlewaretoken": token, "username": USERNAME, "password": PASSWORD,
             "next": CHANGELIST},
        )
        assert (status, headers.get("Location")) == (302, CHANGELIST), running.output()
        session_key = browser.cookie("sessionid")

        status, _, page = browser.open(CHANGELIST)
        assert status == 200, running.output()
        html = page.decode()
        assert "<title>Sessions | Sessions admin</title>" in html
        assert 'data-count="total" data-value="0"' in html

        # The manifest storage names every file by its content hash.
        stylesheets = re.findall(r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', html)
        assert len(stylesheets) == 1, re.findall(r'href="([^"]+\.css)"', html)
        status, headers, css = browser.open(stylesheets[0])
        assert status == 200
        assert headers["Content-Type"].startswith("text/css")
        # whitenoise: hashed names never change content, so they are cached for ten years.
        assert headers["Cache-Control"] == "max-age=315360000, public, immutable"
        assert css.startswith(b"/*") and len(css) > 1000
        # The unhashed name is served too, but must be revalidated.
        status, headers, _ = browser.open("/static/admin/css/base.css")
        assert status == 200
        assert "immutable" not in headers["Cache-Control"]
    finally:
        running.stop()

    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # The server wrote to this file: the sign-in stored its session there.
        stored = connection.execute(
            "SELECT count(*) FROM django_session WHERE session_key = ?", (session_key,)
        ).fetchone()
        assert stored == (1,)
