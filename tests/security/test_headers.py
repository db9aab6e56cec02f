"""Security headers on every kind of response: CSP (strict on our pages, no inline code needed),
nosniff, frame denial, referrer policy; user files get a sandboxing policy of their own."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.classifier.factories import ClassificationFactory

pytestmark = pytest.mark.django_db

STRICT = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in (p.strip() for p in header.split(";")) if part}


def common_headers(response) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


@pytest.fixture
def pages(alice, client):
    job = ClassificationFactory(owner=alice, done=True)
    anonymous = ["/", reverse("login"), reverse("classifier:signup"), "/no-such-page/"]
    signed_in = [
        reverse("classifier:upload"),
        reverse("classifier:history"),
        reverse("classifier:result", kwargs={"id": job.id}),
        reverse("classifier:delete", kwargs={"id": job.id}),
    ]
    return anonymous, signed_in


def test_our_pages_have_a_strict_policy_and_no_inline_code(client, alice, pages):
    anonymous, signed_in = pages
    responses = [client.get(url) for url in anonymous]
    client.force_login(alice)
    responses += [client.get(url) for url in signed_in]
    for response in responses:
        assert response.status_code in (200, 404)
        assert {k: policy(response)[k] for k in STRICT} == STRICT
        common_headers(response)
        html = response.content.decode()
        # What the policy would block must not be in the markup: inline scripts, handlers, styles.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), response.request["PATH_INFO"]
        assert not re.search(r"\son[a-z]+=", html)
        assert not re.search(r"\sstyle=", html)
        assert "<style" not in html


def test_api_responses_have_the_headers(client, alice):
    client.force_login(alice)
    response = client.get(reverse("api:classification-list"))
    assert response.status_code == 200
    assert policy(response)["default-src"] == "'self'"
    common_headers(response)


def test_admin_and_swagger_get_inline_styles_but_never_inline_scripts(client, staff):
    client.force_login(staff)
    for url in (reverse("admin:index"), reverse("api:docs")):
        response = client.get(url)
        assert response.status_code == 200
        directives = policy(response)
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self' 'unsafe-inline'"
        assert directives["frame-ancestors"] == "'none'"
        html = response.content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", html), url
        common_headers(response)


def test_user_files_are_sandboxed(client, alice):
    job = ClassificationFactory(owner=alice)
    client.force_login(alice)
    for name in ("classifier:image", "classifier:thumbnail"):
        response = client.get(reverse(name, kwargs={"id": job.id}))
        assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Content-Type"].startswith("image/")
        assert "private" in response["Cache-Control"]


def test_session_and_csrf_cookies(client, alice, password):
    response = client.post(reverse("login"), {"username": "alice", "password": password})
    assert response.cookies["sessionid"]["httponly"]
    assert response.cookies["sessionid"]["samesite"] == "Lax"
