"""Upload throttling per user and per client IP, on the API and the HTML form, which share budgets.

The test settings raise the rates out of the way of functional tests; here they are set low by
patching DRF's rate table (read at import, so overriding settings would not reach it).
"""

from __future__ import annotations

from unittest import mock

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from classifier.models import Classification
from tests.classifier.factories import UserFactory
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

API_URL = "/api/v1/classifications/"


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def rates(per_user: str, per_ip: str):
    return mock.patch.object(
        ScopedRateThrottle,
        "THROTTLE_RATES",
        {"classification_create": per_user, "classification_create_ip": per_ip},
    )


def image() -> SimpleUploadedFile:
    return SimpleUploadedFile("a.png", make_image_bytes("png"), content_type="image/png")


def api_for(user, ip: str = "10.0.0.1", **extra) -> APIClient:
    api = APIClient(REMOTE_ADDR=ip, **extra)
    api.force_login(user)
    return api


def web_for(user, ip: str = "10.0.0.1") -> Client:
    web = Client(REMOTE_ADDR=ip)
    web.force_login(user)
    return web


def api_upload(api: APIClient):
    return api.post(API_URL, {"image": image()}, format="multipart")


def web_upload(web: Client):
    return web.post(reverse("classifier:upload"), {"images": image()})


def test_api_per_user_limit(alice):
    with rates("2/min", "100/min"):
        api = api_for(alice)
        assert [api_upload(api).status_code for _ in range(3)] == [202, 202, 429]
        # Another address does not help: the budget is the user's.
        assert api_upload(api_for(alice, ip="10.9.9.9")).status_code == 429
    assert Classification.objects.filter(owner=alice).count() == 2


def test_api_per_ip_limit_across_accounts(alice, bob):
    with rates("100/min", "3/min"):
        users = [alice, bob, UserFactory(), UserFactory()]
        codes = [api_upload(api_for(user, ip="10.0.0.7")).status_code for user in users]
        assert codes == [202, 202, 202, 429]
        # Someone at another address is not affected.
        assert api_upload(api_for(UserFactory(), ip="10.0.0.8")).status_code == 202


def test_throttled_api_answer_says_when_to_retry(alice):
    with rates("1/min", "100/min"):
        api = api_for(alice)
        api_upload(api)
        response = api_upload(api)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "throttled"


def test_forged_forwarded_for_does_not_reset_the_ip_budget(alice, bob):
    with rates("100/min", "2/min"):
        codes = [
            api_upload(api_for(user, ip="10.0.0.7", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}")).status_code
            for i, user in enumerate([alice, bob, UserFactory()])
        ]
    assert codes == [202, 202, 429]


def test_html_form_per_user_limit(alice):
    with rates("2/min", "100/min"):
        web = web_for(alice)
        codes = [web_upload(web).status_code for _ in range(3)]
        assert codes == [302, 302, 429]
        response = web_upload(web)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many uploads" in response.content.decode()
    assert Classification.objects.filter(owner=alice).count() == 2


def test_html_form_per_ip_limit(alice, bob):
    with rates("100/min", "2/min"):
        codes = [web_upload(web_for(user, ip="10.0.0.9")).status_code for user in (alice, bob, UserFactory())]
    assert codes == [302, 302, 429]


def test_api_and_form_share_the_budgets(alice):
    with rates("3/min", "100/min"):
        web, api = web_for(alice), api_for(alice)
        assert web_upload(web).status_code == 302
        assert api_upload(api).status_code == 202
        assert web_upload(web).status_code == 302
        assert api_upload(api).status_code == 429
        assert web_upload(web).status_code == 429


def test_reading_is_not_throttled_by_the_upload_budget(alice):
    with rates("1/min", "1/min"):
        api, web = api_for(alice), web_for(alice)
        api_upload(api)
        assert api_upload(api).status_code == 429
        assert api.get(API_URL).status_code == 200
        assert web.get(reverse("classifier:upload")).status_code == 200
        assert web.get(reverse("classifier:history")).status_code == 200


def api_batch(api: APIClient, n: int):
    return api.post(f"{API_URL}batch/", {"images": [image() for _ in range(n)]}, format="multipart")


def test_a_batch_spends_one_unit_per_image_on_both_budgets(alice):
    with rates("5/min", "100/min"):
        api = api_for(alice)
        assert api_batch(api, 4).status_code == 202
        assert api_batch(api, 2).status_code == 429  # 4 + 2 > 5: refused whole, nothing stored
        assert api_upload(api).status_code == 202  # the fifth
        assert api_upload(api).status_code == 429
    assert Classification.objects.filter(owner=alice).count() == 5
    cache.clear()
    with rates("100/min", "3/min"):
        assert api_batch(api_for(UserFactory(), ip="10.0.0.5"), 3).status_code == 202
        assert api_upload(api_for(UserFactory(), ip="10.0.0.5")).status_code == 429


def test_the_html_form_spends_one_unit_per_image_too(alice):
    with rates("3/min", "100/min"):
        web = web_for(alice)
        assert web.post(reverse("classifier:upload"), {"images": [image(), image()]}).status_code == 302
        assert web.post(reverse("classifier:upload"), {"images": [image(), image()]}).status_code == 429
        assert api_upload(api_for(alice)).status_code == 202
    assert Classification.objects.filter(owner=alice).count() == 3
