"""The challenger: runs on the same uploads only after the champion's result is committed, on its
own queue, stores its predictions for staff only, and can never break or delay the champion."""

from __future__ import annotations

import shutil
from unittest import mock

import pytest

from classifier import services as job_services
from classifier.evaluation import challenger as challenger_services
from classifier.evaluation.models import ModelVersion, ShadowPrediction
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory

pytestmark = pytest.mark.django_db
Status = Classification.Status


@pytest.fixture
def bundles(tiny_bundle, reported_bundle, settings, media_root):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    settings.MODEL_BUNDLE_CHALLENGER = str(reported_bundle)
    return tiny_bundle, reported_bundle


def test_challenger_runs_only_after_the_champions_result_is_committed(bundles, django_capture_on_commit_callbacks):
    job = ClassificationFactory()
    order: list[str] = []
    real = challenger_services.challenger_process

    def spy(*, classification_id):
        row = Classification.objects.get(id=classification_id)
        order.append(f"challenger saw {row.status} with {len(row.predictions)} predictions")
        return real(classification_id=classification_id)

    with mock.patch.object(challenger_services, "challenger_process", side_effect=spy):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            done = job_services.classification_process(classification_id=job.id)
            # The user's answer is complete and saved; the challenger has not run at all yet.
            assert done.status == Status.DONE and done.model_version == "tiny-test-0"
            assert Classification.objects.get(id=job.id).status == Status.DONE
            assert order == [] and not ShadowPrediction.objects.exists()
        # the challenger's enqueue waits for the commit (beside the push notifications of issue 13)
        challenger = [c for c in callbacks if "challenger_schedule" in c.__qualname__]
        assert len(challenger) == 1
        challenger[0]()
    assert order == ["challenger saw done with 5 predictions"]
    shadow = ShadowPrediction.objects.get()
    assert shadow.classification_id == job.id
    assert shadow.model_version.version == "reported-1" and shadow.model_version.alias == ModelVersion.Alias.CHALLENGER
    assert len(shadow.predictions) == 5 and shadow.top_label == shadow.predictions[0]["label"]
    assert shadow.inference_seconds > 0
    champion = ModelVersion.objects.get(alias=ModelVersion.Alias.CHAMPION)
    assert Classification.objects.get(id=job.id).bundle_version == champion  # the user's answer is the champion's


def test_challenger_goes_to_its_own_queue(bundles, django_capture_on_commit_callbacks, settings):
    settings.CHALLENGER_QUEUE = "shadow-q"
    job = ClassificationFactory()
    with mock.patch("worker.tasks.challenge.apply_async") as apply_async:
        with django_capture_on_commit_callbacks(execute=True):
            job_services.classification_process(classification_id=job.id)
    apply_async.assert_called_once_with(args=[str(job.id)], queue="shadow-q")


def test_no_challenger_configured_schedules_nothing(bundles, settings, django_capture_on_commit_callbacks):
    settings.MODEL_BUNDLE_CHALLENGER = ""
    job = ClassificationFactory()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job_services.classification_process(classification_id=job.id)
    assert [c for c in callbacks if "challenger_schedule" in c.__qualname__] == []  # push notifications only
    assert callbacks and all("notify" in c.__qualname__ for c in callbacks)
    assert not ShadowPrediction.objects.exists()


def test_a_broken_challenger_never_touches_the_champions_result(
    bundles, tmp_path, settings, django_capture_on_commit_callbacks
):
    broken = tmp_path / "broken"
    shutil.copytree(bundles[1], broken)
    (broken / "model.pt").write_bytes(b"not a model")  # checksum mismatch: load_bundle raises
    settings.MODEL_BUNDLE_CHALLENGER = str(broken)
    job = ClassificationFactory()
    with django_capture_on_commit_callbacks(execute=True):  # eager: the task runs (and fails) inline
        done = job_services.classification_process(classification_id=job.id)
    done.refresh_from_db()
    assert done.status == Status.DONE and len(done.predictions) == 5 and done.error == ""
    assert not ShadowPrediction.objects.exists()


def test_challenger_is_idempotent_and_skips_unfinished_jobs(bundles, django_capture_on_commit_callbacks):
    job = ClassificationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        job_services.classification_process(classification_id=job.id)
    first = ShadowPrediction.objects.get()
    assert challenger_services.challenger_process(classification_id=job.id) == first  # a redelivered task
    assert ShadowPrediction.objects.count() == 1
    queued = ClassificationFactory()
    assert challenger_services.challenger_process(classification_id=queued.id) is None
    assert ShadowPrediction.objects.count() == 1


def test_challenger_equal_to_the_champion_does_nothing(bundles, settings, django_capture_on_commit_callbacks):
    settings.MODEL_BUNDLE_CHALLENGER = settings.MODEL_BUNDLE
    job = ClassificationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        job_services.classification_process(classification_id=job.id)
    assert not ShadowPrediction.objects.exists()


def test_the_celery_task_runs_the_challenger(bundles, django_capture_on_commit_callbacks):
    from worker.tasks import challenge, classify

    job = ClassificationFactory()
    with django_capture_on_commit_callbacks(execute=True):
        assert classify.delay(str(job.id)).get() == Status.DONE
    assert ShadowPrediction.objects.filter(classification=job).count() == 1
    assert challenge.delay(str(job.id)).get() == ShadowPrediction.objects.get().top_label
