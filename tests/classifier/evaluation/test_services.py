"""Model version registry and feedback rules, against the real database."""

from __future__ import annotations

import json
import shutil
from unittest import mock

import pytest

from classifier import services as job_services
from classifier.errors import ApplicationError, NotFoundError
from classifier.evaluation import feedback as feedback_services
from classifier.evaluation import services
from classifier.evaluation.models import Feedback, ModelVersion
from classifier.models import Classification
from tests.classifier.evaluation.factories import ModelVersionFactory, done_job
from tests.classifier.factories import ClassificationFactory, UserFactory
from tests.conftest import CIFAR10_CLASSES

pytestmark = pytest.mark.django_db
Alias = ModelVersion.Alias


# ----------------------------------------------------------------------------- registry
def test_register_reads_manifest_and_offline_report(reported_bundle):
    version = services.model_version_register(bundle_dir=reported_bundle, alias=Alias.CHAMPION)
    manifest = json.loads((reported_bundle / "manifest.json").read_text())
    report = json.loads((reported_bundle / "report" / "report.json").read_text())
    assert (version.name, version.version, version.checksum) == ("reported", "reported-1", manifest["sha256"])
    assert version.classes == CIFAR10_CLASSES
    assert version.metrics == manifest["metrics"]
    assert version.alias == Alias.CHAMPION
    assert version.offline["accuracy"] == report["accuracy"]
    assert [row["class"] for row in version.offline["per_class"]] == CIFAR10_CLASSES
    columns = [sum(row[j] for row in report["confusion_matrix"]) for j in range(10)]
    assert version.offline["predicted_distribution"] == pytest.approx([c / sum(columns) for c in columns])
    bins = [b for b in report["calibration_bins"] if b["count"]]
    expected_mean = sum(b["count"] * b["confidence"] for b in bins) / sum(b["count"] for b in bins)
    assert version.offline["mean_confidence"] == pytest.approx(expected_mean)
    assert sum(b["count"] for b in version.offline["confidence_bins"]) == report["n"]


def test_register_twice_updates_one_row_and_aliases_move(reported_bundle, tiny_bundle):
    first = services.model_version_register(bundle_dir=reported_bundle, alias=Alias.CHAMPION)
    again = services.model_version_register(bundle_dir=reported_bundle, alias=Alias.CHAMPION)
    assert first.pk == again.pk and ModelVersion.objects.count() == 1
    other = services.model_version_register(bundle_dir=tiny_bundle, alias=Alias.CHAMPION)
    assert other.offline == {}  # no report/ in the tiny bundle
    first.refresh_from_db()
    assert (first.alias, other.alias) == ("", Alias.CHAMPION)  # one champion at a time
    services.model_version_register(bundle_dir=reported_bundle, alias=Alias.CHALLENGER)
    assert dict(ModelVersion.objects.values_list("version", "alias")) == {
        "reported-1": Alias.CHALLENGER,
        "tiny-test-0": Alias.CHAMPION,
    }


def test_register_refuses_an_unreadable_bundle(tmp_path):
    with pytest.raises(ApplicationError) as info:
        services.model_version_register(bundle_dir=tmp_path)
    assert "manifest.json" in info.value.message


def test_first_worker_completion_registers_and_links_the_champion(tiny_bundle, settings):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    job = ClassificationFactory(status=Classification.Status.RUNNING, attempts=1)
    done = job_services.classification_complete(
        classification_id=job.id, predictions=[("cat", 0.9), ("dog", 0.1)], model_version="tiny-test-0"
    )
    version = ModelVersion.objects.get()
    assert (version.version, version.alias) == ("tiny-test-0", Alias.CHAMPION)
    assert done.bundle_version_id == version.pk
    assert version.first_used_at is not None and version.first_used_at == version.last_used_at
    # A second job links to the same row: no new registration.
    job2 = ClassificationFactory(status=Classification.Status.RUNNING, attempts=1)
    job_services.classification_complete(
        classification_id=job2.id, predictions=[("cat", 1.0)], model_version="tiny-test-0"
    )
    assert ModelVersion.objects.count() == 1
    assert Classification.objects.filter(bundle_version=version).count() == 2


def test_a_version_not_in_the_bundle_stays_unlinked(tiny_bundle, settings):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    job = ClassificationFactory(status=Classification.Status.RUNNING, attempts=1)
    done = job_services.classification_complete(
        classification_id=job.id, predictions=[("cat", 1.0)], model_version="someone-elses-bundle"
    )
    assert done.bundle_version is None
    assert not ModelVersion.objects.exists()


def test_last_used_is_refreshed_at_most_once_a_minute(tiny_bundle):
    services.model_version_register(bundle_dir=tiny_bundle)
    with mock.patch("classifier.evaluation.services.time.monotonic", return_value=1000.0):
        services.model_version_seen(version="tiny-test-0")
    first = ModelVersion.objects.get().last_used_at
    with mock.patch("classifier.evaluation.services.time.monotonic", return_value=1030.0):
        services.model_version_seen(version="tiny-test-0")
    assert ModelVersion.objects.get().last_used_at == first
    with mock.patch("classifier.evaluation.services.time.monotonic", return_value=1061.0):
        services.model_version_seen(version="tiny-test-0")
    assert ModelVersion.objects.get().last_used_at > first
    assert ModelVersion.objects.get().first_used_at == first


def test_sync_configured_registers_champion_and_challenger(reported_bundle, tiny_bundle, settings, tmp_path):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    settings.MODEL_BUNDLE_CHALLENGER = str(reported_bundle)
    services.model_versions_sync_configured()
    assert dict(ModelVersion.objects.values_list("version", "alias")) == {
        "tiny-test-0": Alias.CHAMPION,
        "reported-1": Alias.CHALLENGER,
    }
    # Swap them: the aliases follow the settings.
    settings.MODEL_BUNDLE, settings.MODEL_BUNDLE_CHALLENGER = str(reported_bundle), ""
    services.model_versions_sync_configured()
    assert dict(ModelVersion.objects.values_list("version", "alias")) == {
        "tiny-test-0": "",
        "reported-1": Alias.CHAMPION,
    }
    settings.MODEL_BUNDLE = str(tmp_path)  # unreadable: logged, skipped
    assert services.model_versions_sync_configured() == []


def test_offline_reference_falls_back_to_an_imported_report(reported_bundle, tmp_path):
    from classifier.reports.services import evaluation_report_import

    evaluation_report_import(bundle_dir=reported_bundle)
    copy = tmp_path / "copy"
    shutil.copytree(reported_bundle, copy)
    shutil.rmtree(copy / "report")
    version = services.model_version_register(bundle_dir=copy)
    assert (
        version.offline["accuracy"] == json.loads((reported_bundle / "report" / "report.json").read_text())["accuracy"]
    )


# ----------------------------------------------------------------------------- feedback
@pytest.fixture
def version():
    return ModelVersionFactory()


def test_feedback_correct_records_the_top_class(version):
    job = done_job(version, top="cat")
    feedback, created = feedback_services.feedback_set(user=job.owner, classification=job, correct=True)
    assert created and (feedback.correct, feedback.label) == (True, "cat")


def test_feedback_label_sets_correct_from_the_top_class(version):
    job = done_job(version, top="cat")
    feedback, _ = feedback_services.feedback_set(user=job.owner, classification=job, label="dog")
    assert (feedback.correct, feedback.label) == (False, "dog")
    feedback, created = feedback_services.feedback_set(user=job.owner, classification=job, label="cat")
    assert not created and (feedback.correct, feedback.label) == (True, "cat")


def test_feedback_wrong_without_a_label(version):
    job = done_job(version, top="cat")
    feedback, _ = feedback_services.feedback_set(user=job.owner, classification=job, correct=False)
    assert (feedback.correct, feedback.label) == (False, "")


def test_one_feedback_per_user_and_classification_changeable(version):
    job = done_job(version)
    feedback_services.feedback_set(user=job.owner, classification=job, correct=True)
    first = Feedback.objects.get()
    feedback_services.feedback_set(user=job.owner, classification=job, label="frog")
    feedback_services.feedback_set(user=job.owner, classification=job, label="ship")
    feedback = Feedback.objects.get()  # still one row
    assert feedback.pk == first.pk and feedback.label == "ship" and not feedback.correct
    assert feedback.updated_at >= feedback.created_at
    # The database refuses a second row too.
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        Feedback.objects.create(classification=job, user=job.owner, correct=True, label="cat")


def test_label_must_be_one_of_the_versions_classes(version):
    job = done_job(version)
    with pytest.raises(ApplicationError) as info:
        feedback_services.feedback_set(user=job.owner, classification=job, label="zebra")
    assert info.value.code == "invalid_label" and info.value.status_code == 400
    assert "zebra" in info.value.message and "airplane" in info.value.message
    assert info.value.extra["classes"] == CIFAR10_CLASSES
    with pytest.raises(ApplicationError):
        feedback_services.feedback_set(user=job.owner, classification=job, label="Cat")  # classes are exact
    assert not Feedback.objects.exists()


def test_label_uses_the_classes_of_the_version_that_answered():
    coarse = ModelVersionFactory(classes=["animal", "vehicle"])
    job = done_job(coarse, top="animal")
    assert feedback_services.feedback_set(user=job.owner, classification=job, label="vehicle")[0].label == "vehicle"
    with pytest.raises(ApplicationError):
        feedback_services.feedback_set(user=job.owner, classification=job, label="dog")


def test_unregistered_version_allows_right_or_wrong_but_no_label():
    job = done_job(None)
    assert feedback_services.feedback_set(user=job.owner, classification=job, correct=True)[0].correct
    with pytest.raises(ApplicationError) as info:
        feedback_services.feedback_set(user=job.owner, classification=job, label="dog")
    assert info.value.code == "unknown_classes"


def test_contradictory_or_empty_feedback_is_refused(version):
    job = done_job(version, top="cat")
    for kwargs in ({"correct": True, "label": "dog"}, {"correct": False, "label": "cat"}, {}, {"label": "  "}):
        with pytest.raises(ApplicationError):
            feedback_services.feedback_set(user=job.owner, classification=job, **kwargs)
    assert feedback_services.feedback_set(user=job.owner, classification=job, correct=True, label="cat")[0].correct


def test_only_the_owner_gives_feedback(version):
    job = done_job(version)
    with pytest.raises(NotFoundError):
        feedback_services.feedback_set(user=UserFactory(), classification=job, correct=True)
    assert not Feedback.objects.exists()


def test_failed_and_unfinished_jobs_refuse_feedback_with_a_message(version):
    failed = ClassificationFactory(failed=True)
    with pytest.raises(ApplicationError) as info:
        feedback_services.feedback_set(user=failed.owner, classification=failed, correct=True)
    assert info.value.code == "classification_failed" and "failed" in info.value.message
    for status in (Classification.Status.QUEUED, Classification.Status.RUNNING):
        job = ClassificationFactory(status=status)
        with pytest.raises(ApplicationError) as info:
            feedback_services.feedback_set(user=job.owner, classification=job, correct=True)
        assert info.value.code == "not_finished"
    assert not Feedback.objects.exists()


def test_feedback_delete(version):
    job = done_job(version)
    feedback_services.feedback_set(user=job.owner, classification=job, correct=True)
    feedback_services.feedback_delete(user=job.owner, classification=job)
    assert not Feedback.objects.exists()
    with pytest.raises(NotFoundError):
        feedback_services.feedback_delete(user=job.owner, classification=job)


def test_registering_links_earlier_jobs_of_that_version(tiny_bundle):
    earlier = ClassificationFactory(done=True, model_version="tiny-test-0")
    other = ClassificationFactory(done=True, model_version="something-else")
    version = services.model_version_register(bundle_dir=tiny_bundle)
    earlier.refresh_from_db()
    other.refresh_from_db()
    assert earlier.bundle_version == version and other.bundle_version is None


def test_a_malformed_report_is_left_out_not_an_error(reported_bundle, tmp_path):
    copy = tmp_path / "bad-report"
    shutil.copytree(reported_bundle, copy)
    report = json.loads((copy / "report" / "report.json").read_text())
    report["confusion_matrix"][0][0] = "many"
    report["calibration_bins"][-1]["count"] = None
    (copy / "report" / "report.json").write_text(json.dumps(report))
    version = services.model_version_register(bundle_dir=copy)
    assert version.offline["accuracy"] == report["accuracy"]
    assert "predicted_distribution" not in version.offline and "confidence_bins" not in version.offline


def test_a_failing_registration_never_costs_the_user_the_answer(tiny_bundle, settings):
    settings.MODEL_BUNDLE = str(tiny_bundle)
    job = ClassificationFactory(status=Classification.Status.RUNNING, attempts=1)
    with mock.patch.object(services, "offline_reference", side_effect=RuntimeError("disk on fire")):
        done = job_services.classification_complete(
            classification_id=job.id, predictions=[("cat", 1.0)], model_version="tiny-test-0"
        )
    assert done.status == Classification.Status.DONE and done.bundle_version is None
    assert not ModelVersion.objects.exists()
