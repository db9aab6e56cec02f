"""End to end: API upload -> Redis -> a real Celery worker process -> real TorchScript bundle on CPU
-> result in PostgreSQL -> API. Nothing is mocked.

Needs DATABASE_URL on PostgreSQL and CELERY_BROKER_URL on Redis (as .ci/run sets them); skips
with the reason otherwise. The worker uses pytest-django's test database (its name is passed to
the worker in DATABASE_URL) and a queue of its own, so other test runs on the same Redis cannot
take its jobs.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.classifier.factories import UserFactory
from tests.conftest import CIFAR10_CLASSES, make_image_bytes
from tests.e2e.procs import Worker, redis_ping
from worker.celery import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def services_or_skip() -> str:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        pytest.skip("end-to-end tests need DATABASE_URL on PostgreSQL (see .ci/run)")
    if not broker.startswith("redis://"):
        pytest.skip("end-to-end tests need CELERY_BROKER_URL on Redis (see .ci/run)")
    if not redis_ping(broker):
        pytest.skip(f"Redis at {broker} does not answer")
    return broker


def worker_database_url(settings_dict: dict) -> str:
    """DATABASE_URL for the worker: pytest-django's test database, same server and user."""
    user = quote(settings_dict.get("USER") or "postgres", safe="")
    password = f":{quote(settings_dict['PASSWORD'], safe='')}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or "5432"
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def broker() -> str:
    return services_or_skip()


@pytest.fixture
def live_worker(broker, transactional_db, tiny_bundle, media_root, tmp_path, monkeypatch):
    """A real worker on the pytest-django test database, consuming a private queue."""
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    # This test process enqueues for real (not eagerly) onto the private queue.
    monkeypatch.setitem(app.conf, "task_always_eager", False)
    monkeypatch.setitem(app.conf, "task_default_queue", queue)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings.test",
        "DATABASE_URL": worker_database_url(connection.settings_dict),
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "MEDIA_ROOT": str(media_root),
        "MODEL_BUNDLE": str(tiny_bundle),
        "MODEL_DEVICE": "cpu",
        "WORKER_TORCH_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    worker = Worker(env, tmp_path / "worker.log", queue)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()
        _purge(broker, queue)


def _purge(broker: str, queue: str) -> None:
    import redis

    redis.Redis.from_url(broker).delete(queue)


def wait_done(client: APIClient, url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(url, {"wait": 10}).json()
        if body["status"] in ("done", "failed") or time.monotonic() > deadline:
            return body


def test_upload_is_classified_by_a_real_worker(live_worker, media_root):
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = client.post(
        "/api/v1/classifications/",
        {"image": SimpleUploadedFile("cat.jpg", make_image_bytes("jpg", size=(64, 48)))},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"

    body = wait_done(client, response.json()["url"])
    assert body["status"] == "done", f"{body}\n--- worker log ---\n{live_worker.tail()}"
    assert body["model_version"] == "tiny-test-0"
    assert len(body["predictions"]) == 5
    assert {p["label"] for p in body["predictions"]} <= set(CIFAR10_CLASSES)
    probabilities = [p["probability"] for p in body["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert body["queued_at"] <= body["started_at"] <= body["finished_at"]
    assert body["attempts"] == 1
    assert "classify" in live_worker.log.read_text()  # the worker process did the work


def test_corrupt_stored_image_fails_in_the_worker_without_retrying(live_worker, media_root):
    from classifier.models import Classification
    from tests.classifier.factories import ClassificationFactory

    c = ClassificationFactory()
    (media_root / c.image.name).write_bytes(b"this is no longer an image")
    from classifier.services import enqueue_classification

    assert enqueue_classification(c.id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        c.refresh_from_db()
        if c.status in (Classification.Status.DONE, Classification.Status.FAILED):
            break
        time.sleep(0.3)
    assert c.status == Classification.Status.FAILED, live_worker.tail()
    assert "could not be read" in c.error
    assert c.attempts == 1


def test_the_demo_is_answered_by_a_real_worker_through_redis(live_worker, media_root, broker, settings):
    # The demo sends the model input to the worker (classify_frame) and awaits its pushed answer:
    # nothing of the model runs in this (the web) process, and nothing is stored.
    import re

    from django.core.cache import cache
    from django.test import Client

    from classifier.models import Classification
    from tests.conftest import files_under
    from worker.runtime import predictor as predictor_module

    settings.PUSH_REDIS_URL = broker
    predictor_module.clear_cache()
    cache.clear()
    response = Client().post(
        "/demo/", {"image": SimpleUploadedFile("boat.png", make_image_bytes("png", size=(80, 60)), "image/png")}
    )
    html = response.content.decode()
    assert response.status_code == 200, f"{html[-2000:]}\n--- worker log ---\n{live_worker.tail()}"
    labels = re.findall(r'<span class="prediction-label">([^<]+)</span>', html)
    assert len(labels) == 5 and set(labels) <= set(CIFAR10_CLASSES)
    assert "tiny-test-0" in html
    assert "classify_frame" in live_worker.log.read_text()  # the worker process did the work
    assert predictor_module._cache == {}
    assert Classification.objects.count() == 0 and files_under(media_root) == []
