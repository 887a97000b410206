"""Production settings: ``check --deploy`` is clean with the documented configuration.

``PRODUCTION_ENV`` is the configuration README.md's "Production" section
documents; a test below keeps the two in step.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import server

README = Path(__file__).resolve().parent.parent / "README.md"

PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": "kB3vT9q2Zx7LmN4pR8sW1yC6fH0jD5gA-uE2iO7kQ9tV3nM8bX4zS1wY6rP0cL5h",
    "DJANGO_ALLOWED_HOSTS": "sessions.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://sessions.example.com",
    "DJANGO_HTTPS": "true",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SESSIONS_API_KEY": "client-key-from-your-secret-store-0123456789",
    "SESSIONS_ADMIN_API_KEY": "admin-key-from-your-secret-store-0123456789",
}


def check_deploy(env: dict) -> tuple[int, str]:
    result = server.manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    return result.returncode, result.stdout + result.stderr


def test_documented_production_configuration_passes_check_deploy():
    returncode, output = check_deploy(PRODUCTION_ENV)
    assert returncode == 0, output
    assert "System check identified no issues" in output


def test_development_defaults_fail_check_deploy_naming_each_gap():
    env = {"DJANGO_SECRET_KEY": PRODUCTION_ENV["DJANGO_SECRET_KEY"]}
    returncode, output = check_deploy(env)
    assert returncode != 0
    for check_id in (
        "security.W004",
        "security.W008",
        "security.W012",
        "security.W016",
    ):
        assert check_id in output, output


def test_open_client_routes_are_reported():
    returncode, output = check_deploy(
        {**PRODUCTION_ENV, "SESSIONS_API_KEY": "", "SESSIONS_OPEN_CLIENT_ROUTES": "true"}
    )
    assert returncode != 0
    assert "sessions_admin.W001" in output


def test_a_short_secret_key_is_reported():
    returncode, output = check_deploy({**PRODUCTION_ENV, "DJANGO_SECRET_KEY": "too-short"})
    assert returncode != 0
    assert "security.W009" in output


def test_no_secret_key_stops_start_up_unless_debugging():
    env = {**PRODUCTION_ENV}
    del env["DJANGO_SECRET_KEY"]
    result = server.manage("check", env={**env, "DJANGO_SECRET_KEY": ""})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_debug_in_production_is_reported():
    returncode, output = check_deploy({**PRODUCTION_ENV, "DJANGO_DEBUG": "true"})
    assert returncode != 0
    assert "security.W018" in output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_HTTPS", "maybe"),
        ("DJANGO_SECURE_HSTS_SECONDS", "a year"),
        ("DJANGO_SECURE_HSTS_SECONDS", "-1"),
        ("DJANGO_SECURE_PROXY_SSL_HEADER", "X Forwarded Proto"),
    ],
)
def test_malformed_security_settings_stop_start_up(variable, value):
    result = server.manage("check", env={**PRODUCTION_ENV, variable: value})
    assert result.returncode != 0
    assert variable in result.stderr


def test_each_https_switch_can_be_set_on_its_own():
    script = (
        "from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
        "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER)"
    )
    result = server.manage(
        "shell",
        "-c",
        script,
        env={
            **PRODUCTION_ENV,
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DJANGO_SECURE_HSTS_SECONDS": "60",
        },
    )
    assert result.stdout.strip().splitlines()[-1] == (
        "False 60 True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    ), result.stderr


def test_readme_documents_the_tested_production_configuration():
    text = README.read_text() if README.exists() else ""
    match = re.search(r"^## Production\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        pytest.skip("README.md has no Production section yet")
    for variable in PRODUCTION_ENV:
        assert variable in match.group(1), (
            f"README's Production section does not mention {variable}"
        )


# --- headers, in process ------------------------------------------------------------

HEALTH = "/api/messaging/sessions/health"


@pytest.mark.django_db
def test_security_headers_on_api_responses(api_client):
    response = api_client.get(HEALTH)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response  # plain HTTP, development defaults


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("get", "/api/no/such/route", None, 404),  # Django's HTML 404, replaced by the envelope
        ("post", "/api/messaging/sessions", b"x" * (1024 * 1024 + 1), 413),  # refused before the view
    ],
    ids=["unknown route", "body too large"],
)
def test_security_headers_on_errors_answered_before_or_around_the_views(
    api_client, method, path, body, status
):
    response = getattr(api_client, method)(path, body, content_type="application/json")
    assert response.status_code == status
    assert response.json()["success"] is False
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_security_headers_on_admin_pages(client):
    response = client.get("/admin/")  # the redirect to the login page
    assert response.status_code == 302
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.fixture
def https_settings(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    return settings


@pytest.mark.django_db
def test_https_mode_redirects_plain_http_and_sends_hsts(api_client, https_settings, admin_key):
    plain = api_client.get("/api/messaging/sessions", HTTP_X_API_KEY=admin_key)
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    secure = api_client.get(
        "/api/messaging/sessions", HTTP_X_API_KEY=admin_key, HTTP_X_FORWARDED_PROTO="https"
    )
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_https_mode_leaves_health_probes_on_plain_http(api_client, https_settings):
    assert api_client.get(HEALTH).status_code == 200


def test_statement_timeout_is_set_for_the_web_server_only():
    script = "from django.db import connection; print(connection.settings_dict['OPTIONS'].get('options'))"
    database = {"DATABASE_URL": "postgres://user@db.invalid:5432/sessions"}
    command = server.manage("shell", "-c", script, env=database)
    assert command.stdout.strip().splitlines()[-1] == "None", command.stderr
    web = server.manage(
        "shell", "-c", script, env={**database, "DATABASE_STATEMENT_TIMEOUT_MS": "10000"}
    )
    assert web.stdout.strip().splitlines()[-1] == "-c statement_timeout=10000", web.stderr
    # gunicorn.conf.py gives the web server its 10 s default before Django loads.
    config = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, os; runpy.run_path('gunicorn.conf.py'); "
            "print(os.environ['DATABASE_STATEMENT_TIMEOUT_MS'])",
        ],
        cwd=server.ROOT,
        env=server.base_env(),
        capture_output=True,
        text=True,
    )
    assert config.stdout.strip() == "10000", config.stderr
