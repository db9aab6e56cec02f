"""The demo on the home page: anyone classifies one image during the request (the worker runs the
model, as for a live camera frame), nothing is stored (no row, no file), refusals use the upload's
messages, and each IP is rate-limited."""

from __future__ import annotations

import io
import re
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image
from rest_framework.throttling import ScopedRateThrottle

from classifier import frames
from classifier.models import Classification
from tests.conftest import CIFAR10_CLASSES, files_under, make_image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def post(client: Client, name: str, data: bytes):
    return client.post("/demo/", {"image": SimpleUploadedFile(name, data, content_type="image/png")})


def test_home_page_offers_the_demo_and_says_the_image_is_discarded(client):
    html = client.get("/").content.decode()
    assert 'action="/demo/"' in html and 'enctype="multipart/form-data"' in html
    assert "discarded as soon as the answer is sent" in html


def test_demo_classifies_and_stores_nothing(client, tiny_bundle, media_root):
    response = post(client, "boat.png", make_image_bytes("png", size=(64, 48), color=(20, 60, 160)))
    assert response.status_code == 200
    html = response.content.decode()
    labels = re.findall(r'<span class="prediction-label">([^<]+)</span>', html)
    values = [float(v) for v in re.findall(r'<progress class="prediction-bar" max="1" value="([0-9.]+)"', html)]
    assert len(labels) == 5 and set(labels) <= set(CIFAR10_CLASSES)
    assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1.0001
    assert "tiny-test-0" in html and "The image has been discarded." in html
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []


def test_demo_refuses_bad_files_with_the_upload_messages(client, tiny_bundle, media_root):
    response = post(client, "notes.png", b"just text, not an image")
    assert response.status_code == 400
    assert "not an image we can read" in response.content.decode()
    response = post(client, "empty.png", b"")
    assert response.status_code == 400 and "The file is empty." in response.content.decode()
    assert client.post("/demo/", {}).status_code == 400
    assert Classification.objects.count() == 0


def test_demo_is_rate_limited_per_ip(tiny_bundle, media_root):
    png = make_image_bytes("png")
    with mock.patch.object(ScopedRateThrottle, "THROTTLE_RATES", {"demo_ip": "2/min"}):
        first, other_ip = Client(REMOTE_ADDR="10.1.1.1"), Client(REMOTE_ADDR="10.1.1.2")
        assert post(first, "a.png", png).status_code == 200
        assert post(first, "a.png", png).status_code == 200
        limited = post(first, "a.png", png)
        assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
        assert "Too many tries from your address." in limited.content.decode()
        assert post(other_ip, "a.png", png).status_code == 200


def test_demo_get_goes_back_to_the_form(client):
    response = client.get("/demo/")
    assert response.status_code == 302 and response["Location"] == "/#demo"


def test_demo_needs_csrf(tiny_bundle):
    client = Client(enforce_csrf_checks=True)
    assert post(client, "a.png", make_image_bytes("png")).status_code == 403


def test_the_worker_gets_the_model_input_and_answers_what_an_upload_would_get(client, tiny_bundle, media_root):
    # The web shrinks the image to the model's input (a lossless 32x32 PNG); the predictions are
    # those of the worker's own decode of the original.
    from worker.runtime.images import decode_for_model
    from worker.runtime.predictor import get_predictor

    data = make_image_bytes("png", size=(640, 480), color=(200, 120, 40))
    sent: list[bytes] = []
    real = frames.frame_classify

    async def spy(*, data, timeout=None):
        sent.append(data)
        return await real(data=data, timeout=timeout)

    with mock.patch.object(frames, "frame_classify", spy):
        html = post(client, "big.png", data).content.decode()
    [model_input] = sent
    assert model_input.startswith(b"\x89PNG") and len(model_input) < 4096
    with Image.open(io.BytesIO(model_input)) as im:
        assert im.size == (32, 32)
    [expected] = get_predictor(str(tiny_bundle)).predict([decode_for_model(data, (32, 32))], top_k=5)
    labels = re.findall(r'<span class="prediction-label">([^<]+)</span>', html)
    assert labels == [label for label, _ in expected]
    assert "640×480 PNG" in html


def test_the_web_process_loads_no_model_for_the_demo(client, tiny_bundle, media_root):
    from worker.runtime import predictor as predictor_module

    predictor_module.clear_cache()
    answer = {"predictions": [{"label": "cat", "probability": 0.9}], "model_version": "v-test"}
    with mock.patch.object(frames, "frame_classify", mock.AsyncMock(return_value=answer)):
        response = post(client, "a.png", make_image_bytes("png"))
    assert response.status_code == 200 and "v-test" in response.content.decode()
    assert predictor_module._cache == {}  # the worker's side ran nowhere in this process


def test_no_answer_from_the_worker_says_so_and_stores_nothing(client, tiny_bundle, media_root):
    with mock.patch.object(frames, "frame_classify", mock.AsyncMock(return_value=None)):
        response = post(client, "a.png", make_image_bytes("png"))
    assert response.status_code == 503
    assert "did not answer in time" in response.content.decode()
    assert Classification.objects.count() == 0 and files_under(media_root) == []


def test_an_image_the_worker_cannot_read_is_refused_with_its_message(client, tiny_bundle, media_root):
    answer = {"error": "The image file is truncated or corrupt."}
    with mock.patch.object(frames, "frame_classify", mock.AsyncMock(return_value=answer)):
        response = post(client, "a.png", make_image_bytes("png"))
    assert response.status_code == 400 and "truncated or corrupt" in response.content.decode()
