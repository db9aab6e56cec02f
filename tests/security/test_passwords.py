"""Passwords are validated at sign-up (Django's validators) and stored hashed."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "username, password, message",
    [
        ("carol", "Xy1!", "too short"),
        ("carol", "password123", "too common"),
        ("carol", "83920174651", "entirely numeric"),
        ("carolinexyz", "carolinexyz1", "too similar"),
    ],
)
def test_weak_passwords_are_refused_at_sign_up(client, username, password, message):
    response = client.post(
        reverse("classifier:signup"), {"username": username, "password1": password, "password2": password}
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not get_user_model().objects.filter(username=username).exists()


def test_a_strong_password_is_accepted_and_stored_hashed(client):
    password = "violet-tundra-lamp-7731"
    response = client.post(
        reverse("classifier:signup"), {"username": "carol", "password1": password, "password2": password}
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(username="carol")
    assert user.password != password and password not in user.password
    assert user.check_password(password)


def test_validators_are_configured(settings):
    names = {v["NAME"].rsplit(".", 1)[-1] for v in settings.AUTH_PASSWORD_VALIDATORS}
    assert names >= {
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    }
