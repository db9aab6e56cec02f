"""Issue 5, part 2: every hostile or odd file of tests/hostile.py posted through the REST API.

Each upload either gets 202 and its job ends ``done`` with five predictions from the real tiny
TorchScript bundle (tasks run eagerly on commit), or gets a 4xx whose JSON message says why, with
no row, no file and no task left behind. No job is ever left queued or running.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.models import Classification
from tests.classifier.factories import UserFactory
from tests.conftest import files_under
from tests.hostile import CASE_NAMES, REASON_FRAGMENTS, Case, shared_corpus

pytestmark = pytest.mark.django_db

LIST_URL = "/api/v1/classifications/"
UNFINISHED = (Classification.Status.QUEUED, Classification.Status.RUNNING)


@pytest.fixture(scope="session")
def hostile_corpus() -> dict[str, Case]:
    return shared_corpus()


@pytest.fixture
def api_client() -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=UserFactory())
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def post(client: APIClient, case: Case):
    upload = SimpleUploadedFile(case.filename, case.read(), content_type="image/jpeg")  # the client's claim is ignored
    return client.post(LIST_URL, {"image": upload}, format="multipart")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_upload_is_classified_or_refused_cleanly(
    name: str,
    hostile_corpus: dict[str, Case],
    api_client: APIClient,
    tiny_bundle: Path,
    media_root: Path,
    django_capture_on_commit_callbacks,
) -> None:
    case = hostile_corpus[name]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(api_client, case)

    if case.expected == "reject":
        assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
        error = response.json()["error"]
        assert REASON_FRAGMENTS[case.reason] in error["message"].lower(), error
        assert Classification.objects.count() == 0
        assert files_under(media_root) == []
        assert callbacks == []  # nothing was queued
        return

    assert response.status_code == 202, response.content[:300]
    body = api_client.get(response.json()["url"]).json()
    assert body["status"] == "done", body["error"]
    assert body["model_version"] == "tiny-test-0"
    probabilities = [p["probability"] for p in body["predictions"]]
    assert len(probabilities) == 5
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
    assert body["top_label"] == body["predictions"][0]["label"]
    assert body["image_format"] == case.format
    assert (body["image_width"], body["image_height"]) == case.size

    job = Classification.objects.get()
    # What the user sent never becomes part of a storage path; the extension is the sniffed format.
    for stored in (job.image.name, job.thumbnail.name):
        assert ".." not in Path(stored).parts
        assert "passwd" not in stored and Path(case.filename).stem not in stored
    assert job.image.name.endswith(f".{case.format}")
    assert job.original_filename == Path(case.filename).name  # Django drops directories from upload names
    # The thumbnail is re-encoded from pixels: a polyglot's payload does not survive into it.
    with job.thumbnail.open("rb") as f:
        thumbnail = f.read()
    assert b"PK\x03\x04" not in thumbnail and b"<script" not in thumbnail
    with Image.open(io.BytesIO(thumbnail)) as im:
        assert im.format == "JPEG" and max(im.size) <= 128
    assert not Classification.objects.filter(status__in=UNFINISHED).exists()


def test_a_stored_image_damaged_before_the_worker_reads_it_fails_the_job_once(
    hostile_corpus: dict[str, Case],
    api_client: APIClient,
    tiny_bundle: Path,
    media_root: Path,
    django_capture_on_commit_callbacks,
) -> None:
    # The upload check passed, but the bytes the worker reads are corrupt (a storage fault): the
    # job must end failed with a message a person can read, and running it again changes nothing.
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(api_client, hostile_corpus["jpeg"])
    assert response.status_code == 202
    job = Classification.objects.get()
    truncated = hostile_corpus["truncated_jpeg"].read()
    Path(job.image.path).write_bytes(truncated)
    for callback in callbacks:
        callback()  # the eager task runs now
    job.refresh_from_db()
    assert job.status == Classification.Status.FAILED
    assert "truncated or corrupt" in job.error
    assert job.attempts == 1

    from worker.tasks import classify

    classify.delay(str(job.id))  # redelivered: a finished job is left alone
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Classification.Status.FAILED, 1)
