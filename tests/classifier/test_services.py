"""Services against the real database (SQLite locally, PostgreSQL in CI) and a real media folder."""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from classifier import dispatch, lifecycle, services
from classifier.errors import ApplicationError
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import bad_uploads, files_under, make_image_bytes
from tests.hostile import tiff_samples_per_pixel
from worker.runtime.images import MSG_CORRUPT

pytestmark = pytest.mark.django_db

Status = Classification.Status


def upload(data: bytes, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


# ----------------------------------------------------------------------------- create
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "gif", "bmp", "tiff"])
def test_create_stores_image_and_thumbnail_under_uuid_and_enqueues_on_commit(
    fmt, media_root, django_capture_on_commit_callbacks
):
    user = UserFactory()
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            c = services.classification_create(owner=user, upload=upload(make_image_bytes(fmt), f"cat.{fmt}"))
    assert len(callbacks) == 1
    send.assert_called_once_with(dispatch.CLASSIFY, str(c.id))
    c.refresh_from_db()
    assert c.status == Status.QUEUED
    assert c.owner == user
    assert (c.image_format, c.image_width, c.image_height) == (fmt, 40, 30)
    assert c.original_filename == f"cat.{fmt}"
    day = c.created_at.strftime("%Y/%m/%d")
    assert c.image.name == f"uploads/{day}/{c.id}.{fmt}"
    assert c.thumbnail.name == f"thumbnails/{day}/{c.id}.jpg"
    assert files_under(media_root) == sorted([c.image.name, c.thumbnail.name])
    assert (media_root / c.image.name).read_bytes() == make_image_bytes(fmt)
    assert (media_root / c.thumbnail.name).read_bytes()[:2] == b"\xff\xd8"  # a JPEG


def test_create_never_uses_the_client_file_name_in_paths(media_root, django_capture_on_commit_callbacks):
    user = UserFactory()
    evil = "../../../etc/passwd%00<script>.png"
    with django_capture_on_commit_callbacks():
        c = services.classification_create(owner=user, upload=upload(make_image_bytes("png"), evil))
    assert c.original_filename == "passwd%00<script>.png"  # Django keeps only the base name; shown, never used in paths
    for name in files_under(media_root):
        assert "passwd" not in name and "script" not in name and ".." not in name
    assert all(str(c.id) in name for name in files_under(media_root))


@pytest.mark.parametrize("case", sorted(bad_uploads()))
def test_create_refuses_bad_input_and_stores_and_queues_nothing(case, media_root, django_capture_on_commit_callbacks):
    user = UserFactory()
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(ApplicationError) as info:
            services.classification_create(owner=user, upload=upload(bad_uploads()[case]))
    assert info.value.message  # a sentence for the user
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []
    assert callbacks == []


def test_create_refuses_files_over_the_size_limit(settings, media_root, django_capture_on_commit_callbacks):
    settings.MAX_UPLOAD_BYTES = 1000
    data = make_image_bytes("bmp")  # 40 x 30 BMP: 3654 bytes
    assert len(data) > 1000
    with django_capture_on_commit_callbacks() as callbacks:
        with pytest.raises(ApplicationError) as info:
            services.classification_create(owner=UserFactory(), upload=upload(data, "big.bmp"))
    assert info.value.code == "file_too_large"
    assert "limit" in info.value.message
    assert Classification.objects.count() == 0
    assert files_under(media_root) == []
    assert callbacks == []


def test_create_messages_say_what_is_wrong(media_root):
    user = UserFactory()
    messages = {}
    for case, data in bad_uploads().items():
        with pytest.raises(ApplicationError) as info:
            services.classification_create(owner=user, upload=upload(data))
        messages[case] = info.value.message.lower()
    assert "empty" in messages["empty"]
    assert "not an image" in messages["not_an_image"]
    assert "truncated" in messages["truncated"] or "corrupt" in messages["truncated"]
    assert "pixel" in messages["bomb"] or "large" in messages["bomb"]


def test_broker_down_at_enqueue_keeps_the_job_queued(media_root, django_capture_on_commit_callbacks, caplog):
    from kombu.exceptions import OperationalError

    with mock.patch("classifier.dispatch.send", side_effect=OperationalError("Connection refused")):
        with django_capture_on_commit_callbacks(execute=True):
            c = services.classification_create(owner=UserFactory(), upload=upload(make_image_bytes("png")))
    c.refresh_from_db()
    assert c.status == Status.QUEUED
    assert "could not enqueue" in caplog.text


# ----------------------------------------------------------------------------- delete
def test_delete_removes_row_and_files_after_commit(media_root, django_capture_on_commit_callbacks):
    c = ClassificationFactory()
    assert len(files_under(media_root)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        services.classification_delete(classification=c)
    assert not Classification.objects.filter(id=c.id).exists()
    assert files_under(media_root) == []


# ----------------------------------------------------------------------------- worker side
def test_start_complete_records_predictions_and_times(media_root):
    c = ClassificationFactory()
    started = services.classification_start(classification_id=c.id)
    assert started.status == Status.RUNNING and started.attempts == 1 and started.started_at is not None
    done = services.classification_complete(
        classification_id=c.id, predictions=[("cat", 0.6), ("dog", 0.3)], model_version="v9"
    )
    c.refresh_from_db()
    assert done is not None
    assert c.status == Status.DONE
    assert c.predictions == [{"label": "cat", "probability": 0.6}, {"label": "dog", "probability": 0.3}]
    assert (c.top_label, c.top_probability, c.model_version) == ("cat", 0.6, "v9")
    assert c.created_at <= c.started_at <= c.finished_at


def test_finished_jobs_are_never_changed(media_root):
    c = ClassificationFactory(done=True)
    before = Classification.objects.filter(id=c.id).values().get()
    assert services.classification_start(classification_id=c.id) is None
    assert (
        services.classification_complete(classification_id=c.id, predictions=[("dog", 1.0)], model_version="x") is None
    )
    assert services.classification_fail(classification_id=c.id, message="nope") is None
    assert Classification.objects.filter(id=c.id).values().get() == before


def test_start_past_the_attempt_limit_fails_with_the_reason(settings, media_root):
    settings.CLASSIFICATION_MAX_ATTEMPTS = 2
    c = ClassificationFactory(status=Status.RUNNING, attempts=2, error="the worker stopped")
    assert services.classification_start(classification_id=c.id) is None
    c.refresh_from_db()
    assert c.status == Status.FAILED
    assert "2 attempts" in c.error and "the worker stopped" in c.error


def test_process_runs_the_real_bundle(tiny_bundle, media_root):
    c = ClassificationFactory()
    result = services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    assert result is not None and c.status == Status.DONE
    assert c.model_version == "tiny-test-0"
    probs = [p["probability"] for p in c.predictions]
    assert len(probs) == 5
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1.0 + 1e-6
    assert c.top_label == c.predictions[0]["label"]
    assert {p["label"] for p in c.predictions} <= set(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )


def test_process_ends_corrupt_stored_image_as_failed_with_a_message(tiny_bundle, media_root):
    c = ClassificationFactory()
    (media_root / c.image.name).write_bytes(b"garbage, not the image that was checked at upload")
    services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    assert c.status == Status.FAILED
    assert c.error.startswith("The image could not be read")


def pil_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "PIL" or r.name.startswith("PIL.")]


def test_a_refused_upload_is_logged_as_a_refusal_not_as_an_image_library_error(media_root, caplog):
    # Pillow's TIFF plugin logs "More samples per pixel than can be decoded" at ERROR for this file.
    owner = UserFactory()
    with caplog.at_level(logging.DEBUG), pytest.raises(ApplicationError):
        services.classification_create(owner=owner, upload=upload(tiff_samples_per_pixel(1000), "scan.tif"))
    assert any("More samples per pixel" in r.getMessage() for r in pil_records(caplog))
    assert [(r.name, r.levelname) for r in pil_records(caplog) if r.levelno > logging.WARNING] == []
    [ours] = [r for r in caplog.records if r.name == "classifier.services"]
    assert ours.levelno == logging.INFO
    message = ours.getMessage()
    assert "upload refused (invalid_image)" in message
    assert f"user {owner.pk}" in message and "'scan.tif'" in message and MSG_CORRUPT in message


def test_a_stored_image_the_worker_refuses_is_logged_with_the_job(tiny_bundle, media_root, caplog):
    c = ClassificationFactory()
    (media_root / c.image.name).write_bytes(tiff_samples_per_pixel(1000))
    with caplog.at_level(logging.DEBUG):
        services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    assert c.status == Status.FAILED
    assert [(r.name, r.levelname) for r in pil_records(caplog) if r.levelno > logging.WARNING] == []
    [ours] = [r for r in caplog.records if r.name == "classifier.batches"]  # the worker's (batch) path
    assert ours.levelno == logging.WARNING
    assert str(c.id) in ours.getMessage() and MSG_CORRUPT in ours.getMessage()


def test_process_missing_file_fails_with_a_message(tiny_bundle, media_root):
    c = ClassificationFactory()
    (media_root / c.image.name).unlink()
    services.classification_process(classification_id=c.id)
    c.refresh_from_db()
    assert c.status == Status.FAILED
    assert "missing" in c.error


def test_process_of_a_deleted_job_does_nothing(tiny_bundle):
    import uuid

    assert services.classification_process(classification_id=uuid.uuid4()) is None


# ----------------------------------------------------------------------------- sweeper
def test_requeue_stuck(settings, media_root, django_capture_on_commit_callbacks):
    settings.CLASSIFICATION_MAX_ATTEMPTS = 3
    old = timezone.now() - timedelta(hours=1)
    queued_old = ClassificationFactory(last_enqueued_at=old)
    running_old = ClassificationFactory(status=Status.RUNNING, started_at=old, attempts=1)
    exhausted = ClassificationFactory(status=Status.RUNNING, started_at=old, attempts=3, error="Out of memory")
    fresh = ClassificationFactory()
    done = ClassificationFactory(done=True, last_enqueued_at=old)
    with mock.patch("classifier.dispatch.send") as send:
        with django_capture_on_commit_callbacks(execute=True):
            counts = services.classifications_requeue_stuck(older_than=timedelta(minutes=10))
    assert counts == {"requeued": 2, "failed": 1}
    assert sorted(call.args[1] for call in send.call_args_list) == sorted([str(queued_old.id), str(running_old.id)])
    for row in (queued_old, running_old, exhausted, fresh, done):
        row.refresh_from_db()
    assert queued_old.status == Status.QUEUED and queued_old.last_enqueued_at > old
    assert running_old.status == Status.QUEUED and "stopped" in running_old.error
    assert exhausted.status == Status.FAILED and "3 attempts" in exhausted.error and "Out of memory" in exhausted.error
    assert fresh.status == Status.QUEUED
    assert done.status == Status.DONE


def test_taking_over_a_running_job_records_that_the_last_attempt_stopped(media_root):
    c = ClassificationFactory(status=Status.RUNNING, attempts=1)
    again = services.classification_start(classification_id=c.id)
    assert again.attempts == 2 and again.status == Status.RUNNING
    assert again.error == lifecycle.WORKER_STOPPED
