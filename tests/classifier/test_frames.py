"""POST /api/v1/frames/: a live frame is classified (by the task, answered by push) and nothing is stored."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier import frames
from classifier.models import Classification, Explanation
from tests.classifier.factories import UserFactory
from tests.conftest import CIFAR10_CLASSES, files_under, make_image_bytes

pytestmark = pytest.mark.django_db

URL = "/api/v1/frames/"


@pytest.fixture(params=["in-process", "redis"])
def transport(request, settings):
    from tests.e2e.procs import redis_ping

    url = "redis://127.0.0.1:6379/0"
    if request.param == "redis" and not redis_ping(url):
        pytest.skip(f"Redis at {url} does not answer")
    settings.PUSH_REDIS_URL = url if request.param == "redis" else ""
    return request.param


@pytest.fixture
def api() -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=UserFactory())
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def frame(data: bytes | None = None) -> dict:
    return {"image": SimpleUploadedFile("frame.jpg", make_image_bytes("jpg", (96, 96)) if data is None else data)}


def test_a_frame_is_classified_and_not_stored(transport, api, tiny_bundle, media_root):
    response = api.post(URL, frame(), format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_version"] == "tiny-test-0"
    assert len(body["predictions"]) == 5
    assert {p["label"] for p in body["predictions"]} <= set(CIFAR10_CLASSES)
    assert sum(p["probability"] for p in body["predictions"]) <= 1.0 + 1e-6
    assert body["prediction_set"] is None  # the tiny bundle has no answer sets
    assert Classification.objects.count() == 0 and Explanation.objects.count() == 0
    assert files_under(media_root) == []


def test_a_frame_comes_with_its_answer_set(api, tiny_bundle, media_root, settings, tmp_path):
    import json
    import shutil

    bundle = tmp_path / "with-sets"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["prediction_set"] = {"threshold": 0.0, "thresholds": [0.0] * 10, "coverage": 0.9}  # every class
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    settings.MODEL_BUNDLE = str(bundle)
    body = api.post(URL, frame(), format="multipart").json()
    answer_set = body["prediction_set"]
    assert answer_set["size"] == 10 and answer_set["coverage"] == 0.9
    assert answer_set["labels"][:5] == [p["label"] for p in body["predictions"]]
    assert answer_set["text"].startswith("At 90% coverage it could be")
    assert Explanation.objects.count() == 0  # still nothing stored


def test_a_frame_that_is_not_an_image_is_400(api, tiny_bundle, media_root, settings):
    settings.PUSH_REDIS_URL = ""
    response = api.post(URL, frame(b"this is not an image" * 10), format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_image"
    assert api.post(URL, frame(b""), format="multipart").json()["error"]["code"] == "empty_file"


def test_a_frame_over_the_limit_is_refused_before_the_queue(api, settings, monkeypatch):
    settings.FRAME_MAX_BYTES = 100
    monkeypatch.setattr(frames, "_enqueue", lambda *a: pytest.fail("enqueued"))
    response = api.post(URL, frame(b"x" * 101), format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_too_large"


def test_no_answer_in_time_is_503(api, settings, monkeypatch):
    settings.PUSH_REDIS_URL = ""
    settings.FRAME_TIMEOUT_SECONDS = 0.2
    monkeypatch.setattr(frames, "_enqueue", lambda frame_id, data: None)  # no worker ever answers
    response = api.post(URL, frame(), format="multipart")
    assert response.status_code == 503
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_anonymous_is_401():
    response = APIClient().post(URL, frame(), format="multipart")
    assert response.status_code == 401


def test_the_live_page_needs_login(client):
    response = client.get("/live/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(UserFactory())
    page = client.get("/live/")
    assert page.status_code == 200 and b'id="live-video"' in page.content
