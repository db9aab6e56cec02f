"""classifier.batches: a batch of jobs, one forward pass, one transaction of updates; a bad job fails alone."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.files.base import ContentFile

from classifier import batches, lifecycle, push
from classifier.evaluation import services as evaluation
from classifier.models import Classification
from tests.classifier.factories import ClassificationFactory
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

Status = Classification.Status


@pytest.fixture
def forward_passes(monkeypatch) -> list[int]:
    """The sizes of the batches the worker ran through the bundle (its explaining prediction)."""
    from classifier import explanations

    calls: list[int] = []
    real = explanations.predict

    def counting(predictor, images, top_k=5, **kwargs):
        calls.append(len(images))
        return real(predictor, images, top_k=top_k, **kwargs)

    monkeypatch.setattr(explanations, "predict", counting)
    return calls


def corrupt_job() -> Classification:
    c = ClassificationFactory()
    data = make_image_bytes("jpg", size=(60, 50))
    c.image.save("image.jpg", ContentFile(data[: len(data) // 2]))
    return c


def test_a_batch_runs_one_forward_pass_and_a_corrupt_image_fails_only_its_job(
    tiny_bundle, media_root, forward_passes, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    good = [ClassificationFactory() for _ in range(3)]
    bad = corrupt_job()
    ids = [good[0].id, bad.id, good[1].id, good[2].id]
    # the bundle's registry row exists after a process's first job (classifier.evaluation)
    evaluation.model_version_seen(
        version="tiny-test-0", bundle_dir=settings.MODEL_BUNDLE, alias=evaluation.Alias.CHAMPION
    )
    with django_capture_on_commit_callbacks(execute=False):
        # start: select + one UPDATE for the jobs that change alike; finish: one guarded UPDATE
        # per job and the explanations' upsert (the version's row is a subquery in those UPDATEs:
        # it was seen just now); then the maps: select + bulk update (+ savepoints)
        with django_assert_max_num_queries(13 + len(ids)):
            finished = batches.classification_process_batch(classification_ids=ids)
    assert forward_passes == [3]
    assert set(finished) == {str(i) for i in ids}
    for c in good:
        c.refresh_from_db()
        assert c.status == Status.DONE and len(c.predictions) == 5 and c.model_version == "tiny-test-0"
        assert c.attempts == 1 and c.error == ""
        assert c.explanation.heatmaps_status == "ready"  # one explain pass for the batch, after the answers
    bad.refresh_from_db()
    assert bad.status == Status.FAILED
    assert bad.error.startswith("The image could not be read:") and "corrupt" in bad.error


def test_a_batch_starts_with_one_update_for_the_jobs_that_change_alike():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fresh = [ClassificationFactory() for _ in range(4)]
    # found running with no reason: its previous attempt never reported back, so it gets one
    taken_over = ClassificationFactory(status=Status.RUNNING, attempts=1)
    with CaptureQueriesContext(connection) as queries:
        started = lifecycle.classifications_start(classification_ids=[c.id for c in [*fresh, taken_over]])
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(started) == 5 and len(updates) == 2  # the four fresh jobs in one statement, the other alone
    for c in fresh:
        c.refresh_from_db()
        assert (c.status, c.attempts, c.error) == (Status.RUNNING, 1, "") and c.started_at is not None
    taken_over.refresh_from_db()
    assert (taken_over.status, taken_over.attempts) == (Status.RUNNING, 2)
    assert taken_over.error == lifecycle.WORKER_STOPPED


def test_finished_and_unknown_jobs_are_left_alone(tiny_bundle, media_root, forward_passes):
    done = ClassificationFactory(status=Status.DONE, predictions=[{"label": "cat", "probability": 1.0}])
    queued = ClassificationFactory()
    finished = batches.classification_process_batch(
        classification_ids=[done.id, queued.id, "6d9f0c3e-0000-4000-8000-000000000000"]
    )
    assert set(finished) == {str(queued.id)}
    done.refresh_from_db()
    assert done.status == Status.DONE and done.attempts == 0
    assert forward_passes == [1]


def test_a_job_out_of_attempts_fails_and_the_rest_run(tiny_bundle, media_root, settings, forward_passes):
    settings.CLASSIFICATION_MAX_ATTEMPTS = 2
    tired = ClassificationFactory(status=Status.RUNNING, attempts=2, error="")
    fresh = ClassificationFactory()
    batches.classification_process_batch(classification_ids=[tired.id, fresh.id])
    tired.refresh_from_db()
    fresh.refresh_from_db()
    assert tired.status == Status.FAILED and "Gave up after 2 attempts" in tired.error
    assert fresh.status == Status.DONE
    assert forward_passes == [1]


def test_a_missing_image_fails_alone(tiny_bundle, media_root):
    gone, fine = ClassificationFactory(), ClassificationFactory()
    gone.image.storage.delete(gone.image.name)
    batches.classification_process_batch(classification_ids=[gone.id, fine.id])
    gone.refresh_from_db()
    fine.refresh_from_db()
    assert gone.status == Status.FAILED and gone.error == batches.MISSING_IMAGE
    assert fine.status == Status.DONE


def test_every_change_is_pushed_on_commit(tiny_bundle, media_root, monkeypatch, django_capture_on_commit_callbacks):
    published: list[tuple[str, str]] = []
    monkeypatch.setattr(push, "publish", lambda job_id, status: published.append((str(job_id), status)))
    a, b = ClassificationFactory(), corrupt_job()
    with django_capture_on_commit_callbacks(execute=True):
        batches.classification_process_batch(classification_ids=[a.id, b.id])
    assert sorted(published) == sorted(
        [
            (str(a.id), "running"),
            (str(b.id), "running"),
            (str(a.id), "done"),  # the answer
            (str(a.id), "done"),  # its heatmaps, after it
            (str(b.id), "failed"),
        ]
    )


def test_a_job_given_up_while_the_model_ran_is_left_as_the_sweeper_left_it(tiny_bundle, media_root):
    a, b = ClassificationFactory(), ClassificationFactory()
    started = lifecycle.classifications_start(classification_ids=[a.id, b.id])
    # meanwhile the sweeper ended b (out of attempts); the batch's results arrive after that
    Classification.objects.filter(id=b.id).update(status=Status.FAILED, error="Gave up after 3 attempts.")
    results = {str(a.id): [("cat", 0.9), ("dog", 0.1)], str(b.id): [("cat", 0.8), ("dog", 0.2)]}
    finished = batches.classifications_finish_many(rows=started, results=results, model_version="tiny-test-0")
    assert [str(c.id) for c in finished] == [str(a.id)]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.top_label, a.top_probability) == (Status.DONE, "cat", 0.9)
    assert (b.status, b.error, b.predictions) == (Status.FAILED, "Gave up after 3 attempts.", [])


def test_jobs_link_to_the_version_row_without_querying_it_and_relink_after_it_was_deleted(
    tiny_bundle, media_root, settings
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from classifier.evaluation.models import ModelVersion

    first = ClassificationFactory()
    batches.classification_process_batch(classification_ids=[first.id])  # registers the bundle
    version = ModelVersion.objects.get(version="tiny-test-0")
    second = ClassificationFactory()
    with CaptureQueriesContext(connection) as queries:
        finished = batches.classification_process_batch(classification_ids=[second.id])
    assert not [q for q in queries.captured_queries if q["sql"].startswith('SELECT "classifier_modelversion"')]
    assert finished[str(second.id)].bundle_version_id == version.pk  # read back when asked
    for job in (first, second):
        job.refresh_from_db()
        assert job.bundle_version_id == version.pk
    # staff delete the row: the next job in the same minute stays unlinked, as the older ones now are
    version.delete()
    third = ClassificationFactory()
    batches.classification_process_batch(classification_ids=[third.id])
    third.refresh_from_db()
    assert third.status == Status.DONE and third.bundle_version_id is None
    # the next due bookkeeping registers the version again and links every job it answered
    evaluation.clear_seen_cache()
    fourth = ClassificationFactory()
    batches.classification_process_batch(classification_ids=[fourth.id])
    again = ModelVersion.objects.get(version="tiny-test-0")
    assert set(Classification.objects.filter(bundle_version=again).values_list("id", flat=True)) == {
        first.id,
        second.id,
        third.id,
        fourth.id,
    }
