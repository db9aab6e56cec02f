"""CSRF on every form: with Django's checks enforced (as a browser sees them), a POST without the
token is refused with 403 and changes nothing; the same POST with the token from the page works."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

STRONG = "correct-horse-battery-staple-42"


def token_from(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, f"no CSRF token in the form at {url}"
    return match.group(1)


@pytest.fixture
def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def test_every_post_form_in_the_pages_carries_a_token(csrf_client, alice):
    ClassificationFactory(owner=alice, done=True)
    job = Classification.objects.get(owner=alice)
    pages = [reverse("login"), reverse("classifier:signup")]
    anonymous_forms = sum(
        len(re.findall(r'<form[^>]*method="post"', csrf_client.get(p).content.decode())) for p in pages
    )
    csrf_client.force_login(alice)
    pages = [
        reverse("classifier:upload"),
        reverse("classifier:history"),
        reverse("classifier:result", kwargs={"id": job.id}),
        reverse("classifier:delete", kwargs={"id": job.id}),
    ]
    for page in pages:
        html = csrf_client.get(page).content.decode()
        forms = re.findall(r'<form[^>]*method="post".*?</form>', html, re.S)
        assert forms, page
        for form in forms:
            assert 'name="csrfmiddlewaretoken"' in form, (page, form[:120])
    assert anonymous_forms == 2


def test_sign_up_needs_the_token(csrf_client):
    data = {"username": "carol", "password1": STRONG, "password2": STRONG}
    assert csrf_client.post(reverse("classifier:signup"), data).status_code == 403
    assert not get_user_model().objects.filter(username="carol").exists()
    data["csrfmiddlewaretoken"] = token_from(csrf_client, reverse("classifier:signup"))
    assert csrf_client.post(reverse("classifier:signup"), data).status_code == 302
    assert get_user_model().objects.filter(username="carol").exists()


def test_log_in_needs_the_token(csrf_client, alice, password):
    data = {"username": "alice", "password": password}
    assert csrf_client.post(reverse("login"), data).status_code == 403
    assert "_auth_user_id" not in csrf_client.session
    data["csrfmiddlewaretoken"] = token_from(csrf_client, reverse("login"))
    assert csrf_client.post(reverse("login"), data).status_code == 302
    assert csrf_client.session["_auth_user_id"] == str(alice.pk)


def test_log_out_needs_the_token(csrf_client, alice):
    csrf_client.force_login(alice)
    assert csrf_client.post(reverse("logout")).status_code == 403
    assert csrf_client.session.get("_auth_user_id") == str(alice.pk)
    token = token_from(csrf_client, reverse("classifier:upload"))  # the nav's log-out form
    assert csrf_client.post(reverse("logout"), {"csrfmiddlewaretoken": token}).status_code in (200, 302)
    assert "_auth_user_id" not in csrf_client.session


def test_upload_needs_the_token(csrf_client, alice):
    csrf_client.force_login(alice)

    def image():
        return SimpleUploadedFile("a.png", make_image_bytes("png"), content_type="image/png")

    assert csrf_client.post(reverse("classifier:upload"), {"images": image()}).status_code == 403
    assert not Classification.objects.exists()
    token = token_from(csrf_client, reverse("classifier:upload"))
    response = csrf_client.post(reverse("classifier:upload"), {"images": image(), "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert Classification.objects.filter(owner=alice).count() == 1


def test_delete_needs_the_token(csrf_client, alice):
    job = ClassificationFactory(owner=alice)
    csrf_client.force_login(alice)
    url = reverse("classifier:delete", kwargs={"id": job.id})
    assert csrf_client.post(url).status_code == 403
    assert Classification.objects.filter(pk=job.pk).exists()
    token = token_from(csrf_client, url)
    assert csrf_client.post(url, {"csrfmiddlewaretoken": token}).status_code == 302
    assert not Classification.objects.filter(pk=job.pk).exists()


def test_csrf_failure_page_explains_itself(csrf_client, alice):
    csrf_client.force_login(alice)
    response = csrf_client.post(reverse("classifier:upload"))
    assert response.status_code == 403
    assert b"This form has expired" in response.content


def test_api_with_session_cookie_needs_the_token(alice):
    """A session-authenticated API write is a browser request: DRF enforces CSRF on it."""
    job = ClassificationFactory(owner=alice)
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(alice)
    url = reverse("api:classification-detail", kwargs={"classification_id": job.id})
    response = api.delete(url)
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert Classification.objects.filter(pk=job.pk).exists()
    image = SimpleUploadedFile("a.png", make_image_bytes("png"), content_type="image/png")
    assert api.post(reverse("api:classification-list"), {"image": image}, format="multipart").status_code == 403
    assert Classification.objects.count() == 1


def test_api_with_token_needs_no_csrf_token(alice):
    """Token clients are not browsers; no cookie, so no CSRF exposure."""
    from rest_framework.authtoken.models import Token

    job = ClassificationFactory(owner=alice)
    api = APIClient(enforce_csrf_checks=True)
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert api.delete(reverse("api:classification-detail", kwargs={"classification_id": job.id})).status_code == 204
