"""The production settings, loaded for real in a subprocess with production-like environment
variables: `manage.py check --deploy` is clean, the app refuses to start without a SECRET_KEY, and
real responses carry HSTS and the other security headers."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST = "classifier.example.com"


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # Nothing from the test run's own configuration leaks into the "production" process.
        if not key.startswith(("DJANGO_", "SECURE_", "DATABASE_", "CELERY_", "API_")) and key != "DEBUG"
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "webapp.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": HOST,
            "DEBUG": "0",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "STATIC_ROOT": str(tmp_path / "static"),
            "MEDIA_ROOT": str(tmp_path / "media"),
        }
    )
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_check_deploy_is_clean(tmp_path):
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues (0 silenced)" in result.stdout


def test_check_deploy_catches_a_weakened_setting(tmp_path):
    """The check above is live: turning HSTS off or using a short key makes it fail."""
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        production_env(tmp_path, SECURE_HSTS_SECONDS="0", SECRET_KEY="short"),
    )
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout
    assert "security.W009" in result.stderr + result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    result = run(["manage.py", "check"], env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


PROBE = r"""
import json
import django
django.setup()
from django.core.management import call_command
from django.test import Client

call_command("collectstatic", "--noinput", verbosity=0)
client = Client()
HOST = "%s"

def show(response):
    cookies = {name: {"secure": bool(c["secure"]), "httponly": bool(c["httponly"]), "samesite": c["samesite"]}
               for name, c in response.cookies.items()}
    return {"status": response.status_code, "headers": dict(response.items()), "cookies": cookies}

print(json.dumps({
    "https_home": show(client.get("/", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https")),
    "https_login": show(client.get("/accounts/login/", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https")),
    "http_home": show(client.get("/", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="http")),
    "http_schema": show(client.get("/api/v1/schema/", HTTP_HOST=HOST)),
    "https_media": show(client.get("/media/uploads/x.png", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https")),
    "https_css": show(client.get("/static/css/app.css", HTTP_HOST=HOST, HTTP_X_FORWARDED_PROTO="https")),
    "other_host": show(client.get("/", HTTP_HOST="evil.example", HTTP_X_FORWARDED_PROTO="https")),
}))
"""


@pytest.fixture(scope="module")
def production_responses(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("production")
    result = run(["-c", PROBE % HOST], production_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_sends_hsts_and_security_headers(production_responses):
    for name in ("https_home", "https_login"):
        response = production_responses[name]
        assert response["status"] == 200, name
        headers = response["headers"]
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "same-origin"
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp


def test_production_cookies_are_secure(production_responses):
    # The log-in form sets the CSRF cookie; in production it is Secure (and the session cookie too,
    # which the probe cannot see without logging in: SESSION_COOKIE_SECURE is checked by --deploy).
    csrf = production_responses["https_login"]["cookies"]["csrftoken"]
    assert csrf["secure"] is True
    assert csrf["samesite"] == "Lax"


def test_production_redirects_plain_http_to_https(production_responses):
    response = production_responses["http_home"]
    assert response["status"] == 301
    assert response["headers"]["Location"] == f"https://{HOST}/"
    # The container health check reads the schema over plain HTTP inside the compose network.
    assert production_responses["http_schema"]["status"] == 200


def test_production_serves_static_files_but_never_media(production_responses):
    assert production_responses["https_css"]["status"] == 200
    assert production_responses["https_media"]["status"] == 404


def test_production_refuses_unknown_hosts(production_responses):
    assert production_responses["other_host"]["status"] == 400
