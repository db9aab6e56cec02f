"""POST /api/v1/classifications/batch/ (classifier.batch_api): several images in one request, one
job each, every file judged on its own; ?wait= by push; nothing dropped without a word."""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from classifier import services
from classifier.models import Classification
from tests.classifier.test_api import assert_error
from tests.classifier.test_push import finish_later
from tests.conftest import bad_uploads, files_under, make_image_bytes

pytestmark = pytest.mark.django_db

BATCH_URL = "/api/v1/classifications/batch/"


def image(name: str, data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, make_image_bytes(name.rsplit(".", 1)[-1]) if data is None else data)


def test_each_image_gets_its_job_and_a_bad_file_only_its_own_error(
    api, user, media_root, django_capture_on_commit_callbacks
):
    files = [image("a.png"), image("b.jpg"), image("broken.jpg", bad_uploads()["truncated"]), image("c.webp")]
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = api.post(BATCH_URL, {"images": files}, format="multipart")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["refused"]) == (3, 1)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["filename"] for r in results] == ["a.png", "b.jpg", "broken.jpg", "c.webp"]
    bad = results[2]
    assert bad["classification"] is None and bad["error"]["code"] == "invalid_image" and bad["error"]["message"]
    good = [r["classification"] for r in results if r["classification"]]
    assert all(r["error"] is None for r in results if r["classification"])
    assert [g["original_filename"] for g in good] == ["a.png", "b.jpg", "c.webp"]
    assert all(g["status"] == "queued" and g["url"].endswith(f"/api/v1/classifications/{g['id']}/") for g in good)
    rows = Classification.objects.filter(owner=user)
    assert {str(c.id) for c in rows} == {g["id"] for g in good}
    assert len(callbacks) == 3  # queued after one commit, one task per accepted image
    assert sorted(call.args[1] for call in send.call_args_list) == sorted(g["id"] for g in good)
    assert len(files_under(media_root)) == 6  # image and thumbnail of each accepted file, nothing of the bad one


@pytest.mark.django_db(transaction=True)  # real commits: the eager tasks run on commit, inside the request
def test_in_process_the_answer_holds_the_finished_jobs(api, tiny_bundle, media_root):
    response = api.post(BATCH_URL, {"images": [image("a.png"), image("b.jpg")]}, format="multipart")
    assert response.status_code == 202
    jobs = [r["classification"] for r in response.json()["results"]]
    assert [j["status"] for j in jobs] == ["done", "done"]
    assert all(len(j["predictions"]) == 5 and j["model_version"] == "tiny-test-0" for j in jobs)
    assert jobs[0] == api.get(jobs[0]["url"]).json()


def test_when_no_image_is_accepted_it_is_400_with_each_reason_and_nothing_stored(
    api, media_root, django_capture_on_commit_callbacks
):
    files = [image("empty.png", b""), image("notes.png", b"not an image at all")]
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(BATCH_URL, {"images": files}, format="multipart")
    err = assert_error(response, 400, "no_image_accepted")
    assert err["message"].startswith("None of the 2 images was accepted.")
    results = err["details"]["results"]
    assert [r["error"]["code"] for r in results] == ["empty_file", "invalid_image"]
    assert [r["filename"] for r in results] == ["empty.png", "notes.png"]
    assert Classification.objects.count() == 0 and files_under(media_root) == [] and callbacks == []


@pytest.mark.parametrize(
    "data,code",
    [
        ({}, "invalid"),  # no file at all
        ({"images": [image("a.png")], "photo": [image("b.png")]}, "unexpected_file_field"),
        ({"images": [image(f"{i}.png") for i in range(25)]}, "too_many_files"),  # past DATA_UPLOAD_MAX_NUMBER_FILES
    ],
    ids=["no-file", "a-file-under-another-field", "25-images"],
)
def test_a_malformed_batch_is_400_with_a_message_and_nothing_stored(
    data, code, api, media_root, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(BATCH_URL, data, format="multipart")
    err = assert_error(response, 400, code)
    assert err["message"]
    if code == "too_many_files":
        assert err["details"] == {"max_files": 20} and "at most 20 images" in err["message"]
    if code == "unexpected_file_field":
        assert err["details"] == {"fields": ["photo"]} and "'images'" in err["message"]
    assert Classification.objects.count() == 0 and files_under(media_root) == [] and callbacks == []


def test_a_storage_failure_stores_nothing_of_the_batch(api, media_root, monkeypatch):
    real = services.classification_create
    calls = []

    def create(**kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(**kwargs)

    monkeypatch.setattr(services, "classification_create", create)
    api.raise_request_exception = False
    response = api.post(BATCH_URL, {"images": [image(f"{i}.png") for i in range(4)]}, format="multipart")
    assert_error(response, 500)
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []  # the first two images' files went with their rows


def test_anonymous_is_401():
    assert_error(APIClient().post(BATCH_URL, {"images": [image("a.png")]}, format="multipart"), 401)


def test_the_single_upload_refusal_points_to_the_batch_endpoint(api, media_root):
    response = api.post("/api/v1/classifications/", {"image": [image("a.png"), image("b.png")]}, format="multipart")
    err = assert_error(response, 400, "one_image_per_request")
    assert BATCH_URL in err["message"]


@pytest.mark.django_db(transaction=True)
def test_wait_answers_once_every_job_has_finished(api, user, media_root, settings, monkeypatch):
    settings.PUSH_REDIS_URL = ""  # in-process push: the test's threads play the worker
    settings.API_WAIT_POLL_SECONDS = 60.0  # only a push may end the wait in time
    settings.CELERY_TASK_ALWAYS_EAGER = False
    threads: list[threading.Thread] = []
    delays = iter([0.2, 0.6, 0.4])
    monkeypatch.setattr(
        services, "enqueue_classification", lambda job_id: threads.append(finish_later(job_id, next(delays))) or True
    )
    files = [image("a.png"), image("b.png"), image("c.png")]
    response = api.post(f"{BATCH_URL}?wait=30", {"images": files}, format="multipart")
    for thread in threads:
        thread.join()
    assert response.status_code == 202
    jobs = [r["classification"] for r in response.json()["results"]]
    assert [j["status"] for j in jobs] == ["done"] * 3
    assert all(j["predictions"][0] == {"label": "cat", "probability": 0.9} for j in jobs)


def test_too_many_files_read_by_a_sessions_csrf_check_get_the_batch_message(user, media_root):
    # A browser session's CSRF check reads the body before the view: the refusal still names the batch's limit.
    from django.middleware.csrf import get_token
    from django.test import RequestFactory

    session = APIClient(enforce_csrf_checks=True)
    session.force_login(user)
    request = RequestFactory().get("/")
    get_token(request)  # a CSRF cookie but no header token: the check reads the form's csrfmiddlewaretoken
    session.cookies["csrftoken"] = request.META["CSRF_COOKIE"]
    response = session.post(BATCH_URL, {"images": [image(f"{i}.png") for i in range(25)]}, format="multipart")
    err = assert_error(response, 400, "too_many_files")
    assert "at most 20 images" in err["message"]
    assert Classification.objects.count() == 0
