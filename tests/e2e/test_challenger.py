"""End to end: the challenger runs in its own worker on its own queue. With only the champion's
worker running, users get their answers and the challenger's jobs wait in their queue; once a
challenger worker starts, it stores its predictions for the same uploads. Real Redis, PostgreSQL,
Celery worker processes and TorchScript bundles; nothing is mocked."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.classifier.factories import UserFactory
from tests.conftest import make_image_bytes
from tests.e2e.procs import Worker
from tests.e2e.test_pipeline import _purge, services_or_skip, wait_done, worker_database_url
from worker.celery import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_challenger_worker_shadows_the_champion_without_delaying_it(
    transactional_db, tiny_bundle, reported_bundle, media_root, tmp_path, monkeypatch
):
    from classifier.evaluation.models import ModelVersion, ShadowPrediction
    from classifier.models import Classification

    broker = services_or_skip()
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    challenger_queue = f"{queue}-challenger"
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
        "MODEL_BUNDLE_CHALLENGER": str(reported_bundle),
        "CHALLENGER_QUEUE": challenger_queue,
        "MODEL_DEVICE": "cpu",
        "WORKER_TORCH_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    champion_worker = Worker(env, tmp_path / "champion.log", queue)
    challenger_worker = Worker(env, tmp_path / "challenger.log", challenger_queue)
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    try:
        champion_worker.start()
        urls = []
        for i in range(3):
            image = SimpleUploadedFile(f"img{i}.png", make_image_bytes("png", size=(40 + i, 30)))
            response = client.post("/api/v1/classifications/", {"image": image}, format="multipart")
            assert response.status_code == 202, response.content
            urls.append(response.json()["url"])
        for url in urls:
            body = wait_done(client, url)
            assert body["status"] == "done", champion_worker.tail()
            assert body["model_version"] == "tiny-test-0"
        # Every user has an answer while no challenger worker runs: the champion never waited for it.
        assert not ShadowPrediction.objects.exists()
        assert ModelVersion.objects.get(alias="champion").version == "tiny-test-0"

        challenger_worker.start()
        deadline = time.monotonic() + 120
        while ShadowPrediction.objects.count() < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert ShadowPrediction.objects.count() == 3, challenger_worker.tail()
        challenger = ModelVersion.objects.get(alias="challenger")
        assert challenger.version == "reported-1"
        assert set(ShadowPrediction.objects.values_list("model_version", flat=True)) == {challenger.pk}
        assert set(ShadowPrediction.objects.values_list("classification", flat=True)) == set(
            Classification.objects.values_list("id", flat=True)
        )
        for url in urls:  # still not shown to the user
            assert "reported-1" not in client.get(url).content.decode()
    finally:
        champion_worker.stop()
        challenger_worker.stop()
        _purge(broker, queue)
        _purge(broker, challenger_queue)
