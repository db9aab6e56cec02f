"""Fixtures for the access-control and hardening tests: two ordinary users and a staff user,
each job with real image and thumbnail files in a fresh MEDIA_ROOT."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from tests.classifier.factories import PASSWORD, ClassificationFactory, UserFactory


@pytest.fixture(autouse=True)
def _media(media_root):
    return media_root


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def staff(db):
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def alice_job(alice):
    return ClassificationFactory(owner=alice, done=True, original_filename="alice-secret-holiday.png")


@pytest.fixture
def bob_token(bob) -> str:
    return Token.objects.create(user=bob).key


@pytest.fixture
def password() -> str:
    return PASSWORD
